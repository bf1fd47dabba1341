"""How long-running API calls report: the `Progress` protocol, a silent default, and the rich bars the CLI
shows (one bar per task, with a rate (examples/s while extracting) or training fields (loss, CE,
regulariser, hold-out metric), elapsed time and ETA). The API takes any object with these four methods,
so notebooks can pass their own."""

from __future__ import annotations

from typing import Any, Protocol


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


class RichProgress:
    def __init__(self, quiet: bool = False, unit: str = "ex") -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.quiet = quiet
        self.unit = unit
        self._bar: Any = None
        self._task = None

    def log(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False, soft_wrap=True)  # grep-able: never wrapped

    def start(self, label: str, total: int, done: int) -> None:
        if self.quiet:
            return
        from rich import progress as rp

        self._bar = rp.Progress(
            rp.TextColumn("[bold]{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
            rp.TextColumn("{task.fields[rate]} " + self.unit + "/s"), rp.TextColumn("{task.fields[info]}"),
            rp.TimeElapsedColumn(), rp.TextColumn("ETA"), rp.TimeRemainingColumn(), console=self.console,
        )
        self._bar.start()
        self._task = self._bar.add_task(label, total=total, completed=done, rate="-", info="")

    def advance(self, n: int, **fields: Any) -> None:
        if self._bar is None:
            return
        speed = self._bar.tasks[0].speed
        info = "  ".join(f"{k} {v}" for k, v in fields.items())
        self._bar.update(self._task, advance=n, rate=f"{speed:,.0f}" if speed else "-",
                         **({"info": info} if fields else {}))

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
