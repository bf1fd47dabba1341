"""Rich progress for the CLI: one bar per (source, split) with examples/s and ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RichProgress:
    def __init__(self, quiet: bool = False) -> None:
        self.console = Console(stderr=True)
        self.quiet = quiet
        self._bar: Progress | None = None
        self._task = None
        self._label = ""

    def log(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def start(self, label: str, total: int, done: int) -> None:
        self._label = label
        if self.quiet:
            return
        self._bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} ex/s"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(label, total=total, completed=done, rate="-")
        self._started_at = None

    def advance(self, n: int) -> None:
        if self._bar is None:
            return
        self._bar.advance(self._task, n)
        t = self._bar.tasks[0]
        if t.speed:
            self._bar.update(self._task, rate=f"{t.speed:,.0f}")

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
