"""Rich progress for the CLI: one bar per task, with a rate (examples/s while extracting) or training
fields (loss, CE, regulariser, hold-out metric), elapsed time and ETA. The API takes any object with
the same four methods, so notebooks can pass their own or none."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RichProgress:
    def __init__(self, quiet: bool = False, unit: str = "ex") -> None:
        self.console = Console(stderr=True)
        self.quiet = quiet
        self.unit = unit
        self._bar: Progress | None = None
        self._task = None

    def log(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False, soft_wrap=True)  # grep-able: never wrapped

    def start(self, label: str, total: int, done: int) -> None:
        if self.quiet:
            return
        self._bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} " + self.unit + "/s"), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
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
