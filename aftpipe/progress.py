"""How long-running API calls report: the `Progress` protocol and its displays.

- `RichProgress`: live bars on a terminal or in a notebook (one bar per task, with a rate (examples/s while
  extracting) or training fields (loss, CE, regulariser, hold-out metric), elapsed time and ETA).
- `LogProgress`: plain lines for log files, CI and Slurm jobs, where a live bar prints nothing useful: one
  line every `every_s` seconds and one per evaluation (an `advance` whose fields include `holdout`), each
  with the count, rate and ETA.
- `SilentProgress`: the API's default in scripts.

`make_progress()` picks the display that fits where the output goes; `default_progress()` is what the API
uses when the caller passes none (a live display in a notebook, else silent). The API takes any object
with these four methods, so callers can pass their own.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterator
from typing import Any, Protocol, TextIO

EVAL_FIELD = "holdout"  # an advance carrying this field is an evaluation: LogProgress always prints it
# an advance carrying this field (seconds) sets the ETA shown, for callers that know better than the rate: a
# sweep's runs take minutes each, and runs finished earlier count at once
ETA_FIELD = "eta_s"


class Progress(Protocol):
    def start(self, label: str, total: int, done: int) -> None: ...
    def advance(self, n: int, **fields: Any) -> None: ...
    def finish(self) -> None: ...
    def log(self, message: str) -> None: ...


class SilentProgress:
    """Reports nothing: the default when the caller passes no progress."""

    def start(self, label: str, total: int, done: int) -> None: ...
    def advance(self, n: int, **fields: Any) -> None: ...
    def finish(self) -> None: ...
    def log(self, message: str) -> None: ...

    def __enter__(self) -> SilentProgress:
        return self

    def __exit__(self, *exc: Any) -> None: ...


BAR_WIDTH = (10, 40)  # the live bar's narrowest and widest; narrower than that it gives way to the numbers
GAP = 2  # columns between a live line's fields


def fit_fields(fields: list[tuple[str, str]], width: int) -> tuple[list[tuple[str, str]], int]:
    """The fields of a live bar's line that fit in `width` columns, and the bar's width (0: no bar).

    `fields` are (name, text) in display order, GAP columns apart, the bar among them as ("bar", ""); names are
    label, bar, count, rate, info:<key> and elapsed, eta. On a narrow terminal the elapsed time goes first, then
    the training fields (the last first), the rate, the bar, and the label is shortened, then dropped: the
    count and ETA stay, which is what a glance at a progress line is for.
    """
    from rich.cells import cell_len

    fields = list(fields)
    names = [n for n, _ in fields]
    give_way = ["elapsed", *reversed([n for n in names if n.startswith("info:")]), "rate", "bar", "label"]

    def used() -> int:  # the cells taken without the bar itself
        return sum(cell_len(t) for _, t in fields) + GAP * (len(fields) - 1)

    def fits() -> bool:
        return width - used() >= (BAR_WIDTH[0] if any(n == "bar" for n, _ in fields) else 0)

    for name in give_way:
        if fits():
            break
        if name == "label" and (room := width - used() + cell_len(dict(fields).get("label", ""))) >= 8:
            fields = [(n, t if n != "label" else t[:room - 1] + "…") for n, t in fields]
            continue
        fields = [(n, t) for n, t in fields if n != name]
    has_bar = any(n == "bar" for n, _ in fields)
    return fields, min(BAR_WIDTH[1], width - used()) if has_bar else 0


class RichProgress:
    """Live rich bars (stderr); `finish()` (also on leaving a `with` block) stops the bar and restores the cursor.
    Each redraw fits the line to the terminal's width (`fit_fields`)."""

    def __init__(self, quiet: bool = False, unit: str = "ex", console: Any = None, clock: Any = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self.unit = unit
        self.clock = clock  # None: rich's own (the wall clock)
        self._bar: Any = None
        self._task = None

    def log(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False, soft_wrap=True)  # grep-able: never wrapped

    def start(self, label: str, total: int, done: int) -> None:
        if self.quiet:
            return
        from rich import progress as rp

        fitted = self.line

        class Live(rp.Progress):
            def get_renderables(self) -> Any:
                yield from (fitted(task, self.console.width) for task in self.tasks if task.visible)

        self.finish()  # one bar at a time
        self._bar = Live(console=self.console, **({"get_time": self.clock} if self.clock else {}))
        self._bar.start()
        self._task = self._bar.add_task(label, total=total, completed=done, rate="-", info={}, eta=None)

    def fields(self, task: Any) -> list[tuple[str, str]]:
        """The (name, text) fields of `task`'s line, before fitting (see `fit_fields`)."""
        if task.fields["eta"] is not None:  # the caller's, counted down since it was given
            seconds, given_at = task.fields["eta"]
            eta = seconds - (task.get_time() - given_at)
            eta = eta if math.isnan(eta) else max(0.0, eta)
        else:
            eta = task.time_remaining
        info = [(f"info:{k}", f"{k} {v}") for k, v in task.fields["info"].items()]
        return [("label", task.description), ("bar", ""),
                ("count", f"{int(task.completed):,}/{int(task.total):,}"), ("rate", f"{task.fields['rate']} {self.unit}/s"),
                *info, ("elapsed", f"elapsed {duration(task.elapsed or 0.0)}"),
                ("eta", "ETA " + (duration(eta) if eta is not None else "-"))]

    def line(self, task: Any, width: int) -> Any:
        """`task`'s line as drawn on a terminal `width` columns wide."""
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        fields, bar = fit_fields(self.fields(task), width)
        styles = {"label": "bold", "count": "progress.download", "elapsed": "progress.elapsed",
                  "eta": "progress.remaining"}
        row = [ProgressBar(total=task.total, completed=task.completed, width=bar, animation_time=task.get_time())
               if name == "bar" else Text(text, style=styles.get(name, ""), no_wrap=True, overflow="crop")
               for name, text in fields]
        grid = Table.grid(padding=(0, GAP, 0, 0))
        grid.add_row(*row)
        return grid

    def advance(self, n: int, **fields: Any) -> None:
        if self._bar is None:
            return
        eta = fields.pop(ETA_FIELD, None)
        speed = self._bar.tasks[0].speed
        self._bar.update(self._task, advance=n, rate=f"{speed:,.0f}" if speed else "-",
                         **({"info": fields} if fields else {}), **({"eta": (eta, self._bar.get_time())} if eta is not None else {}))

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.finish()


def human_bytes(n: float) -> str:
    """A size in bytes as people read it: `512 B`, `1.5 KiB` ... `2.0 TiB`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def duration(seconds: float) -> str:
    """`seconds` as M:SS or H:MM:SS; `-` when unknown (NaN or infinite)."""
    if seconds != seconds or seconds == float("inf"):
        return "-"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class LogProgress:
    """One plain line per `every_s` seconds and per evaluation, for output that is not a terminal:

        aft · textcnn: 120/300 (40%)  31.5 step/s  elapsed 0:04  ETA 0:06  loss 0.512  ce 0.489  reg 0.023  holdout 0.781

    and a last line when the task finishes. `quiet` keeps the log lines and drops the progress lines."""

    def __init__(self, every_s: float = 30.0, unit: str = "ex", quiet: bool = False, stream: TextIO | None = None,
                 clock: Any = time.monotonic) -> None:
        self.every_s, self.unit, self.quiet = every_s, unit, quiet
        self.stream = stream
        self.clock = clock
        self._task: dict[str, Any] | None = None

    def _print(self, line: str) -> None:
        print(line, file=self.stream or sys.stderr, flush=True)

    def log(self, message: str) -> None:
        self._print(message)

    def start(self, label: str, total: int, done: int) -> None:
        t = self.clock()
        self._task = {"label": label, "total": total, "done": done, "done0": done, "t0": t, "last": t, "fields": {},
                      "printed": None, "eta": None}

    def line(self) -> str:
        """The progress line of the current task as of now."""
        task = self._task
        assert task is not None
        elapsed = self.clock() - task["t0"]
        made = task["done"] - task["done0"]
        rate = made / elapsed if elapsed > 0 else float("nan")
        left = task["total"] - task["done"]
        eta = left / rate if rate and rate == rate else float("nan")
        if task["eta"] is not None:  # the caller's, counted down since it was given
            eta = task["eta"][0] - (self.clock() - task["eta"][1])
            eta = eta if math.isnan(eta) else max(0.0, eta)
        pct = 100 * task["done"] / task["total"] if task["total"] else 100.0
        parts = [f"{task['label']}: {task['done']:,}/{task['total']:,} ({pct:.0f}%)",
                 f"{rate:,.1f} {self.unit}/s" if rate == rate else f"- {self.unit}/s",
                 f"elapsed {duration(elapsed)}", f"ETA {duration(eta) if left else '0:00'}"]
        parts += [f"{k} {v}" for k, v in task["fields"].items()]
        return "  ".join(parts)

    def advance(self, n: int, **fields: Any) -> None:
        task = self._task
        if task is None:
            return
        task["done"] += n
        if ETA_FIELD in fields:
            task["eta"] = (fields.pop(ETA_FIELD), self.clock())
        if fields:
            task["fields"] = fields
        now = self.clock()
        if not self.quiet and (EVAL_FIELD in fields or now - task["last"] >= self.every_s):
            task["last"], task["printed"] = now, task["done"]
            self._print(self.line())

    def finish(self) -> None:
        task = self._task
        if task is not None and not self.quiet and task["done"] > task["done0"] and task["printed"] != task["done"]:
            self._print(self.line())  # the last count, unless the last line already said it
        self._task = None

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._task = None  # an interrupted task gets no final line: the interruption says where it stopped


@contextlib.contextmanager
def counting(progress: Progress, unit: str) -> Iterator[Progress]:
    """`progress` counting in `unit` for a while (a pipeline's display counts steps, its extraction rows), when
    it has a unit to change."""
    old = getattr(progress, "unit", None)
    if old is None:
        yield progress
        return
    progress.unit = unit  # type: ignore[attr-defined]
    try:
        yield progress
    finally:
        progress.unit = old  # type: ignore[attr-defined]


def make_progress(quiet: bool = False, unit: str = "ex", every_s: float = 30.0,
                  console: Any = None) -> RichProgress | LogProgress:
    """Live bars when the console (default: stderr) is a terminal or a notebook, plain periodic lines otherwise
    (log files, CI, Slurm)."""
    from rich.console import Console

    given = console
    console = console or Console(stderr=True)
    if console.is_terminal or console.is_jupyter:
        return RichProgress(quiet=quiet, unit=unit, console=console)
    return LogProgress(every_s=every_s, unit=unit, quiet=quiet, stream=given.file if given else None)


def in_notebook() -> bool:
    """Whether this process is a Jupyter/Colab kernel (rich renders its bars as a notebook widget there)."""
    from rich.console import Console

    return Console().is_jupyter


def default_progress(progress: Progress | None, unit: str = "ex") -> Progress:
    """The caller's progress; if none, a live display when running in a notebook (where a call can run for
    minutes with nothing to show otherwise), else silence, as a library should be in scripts."""
    if progress is not None:
        return progress
    return RichProgress(unit=unit) if in_notebook() else SilentProgress()


__all__ = ["BAR_WIDTH", "ETA_FIELD", "EVAL_FIELD", "LogProgress", "Progress", "RichProgress", "SilentProgress",
           "counting", "default_progress", "duration", "fit_fields", "human_bytes", "in_notebook", "make_progress"]
