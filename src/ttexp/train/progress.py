"""The console progress bar (rich): step, loss, learning rate, tokens/s, elapsed and ETA."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ttexp.record.console import CONSOLE


class TrainingProgress:
    """A progress bar over optimizer steps. On a non-terminal (CI, a pipe) it draws nothing; the
    log lines every ``training.log_frequency`` steps carry the same figures there."""

    def __init__(self, total_steps: int, start_step: int = 0, console: Console | None = None):
        self.console = console or CONSOLE
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.console.is_terminal,
            transient=False,
        )
        self._task = self._progress.add_task("train", total=total_steps, completed=start_step, stats="")

    def __enter__(self) -> "TrainingProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()

    def update(self, step: int, loss: float, lr: float, tokens_per_s: float) -> None:
        stats = f"loss {loss:.4f}  lr {lr:.2e}  {tokens_per_s:,.0f} tok/s"
        self._progress.update(self._task, completed=step, stats=stats)
