"""The console progress bar (rich) and the pace it shows: step, loss, learning rate, the current
tokens/s, elapsed wall time and a live ETA (the same figures go into every step line of
training.log)."""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Optional

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
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
            TextColumn("{task.fields[pace]}"),
            console=self.console,
            disable=not self.console.is_terminal,
            transient=False,
        )
        self._task = self._progress.add_task("train", total=total_steps, completed=start_step, stats="",
                                              pace="")

    def __enter__(self) -> "TrainingProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()

    def update(self, step: int, loss: float, lr: float, pace: "Pace") -> None:
        """Show optimizer step ``step`` with its loss, learning rate and ``pace`` figures."""
        stats = f"loss {loss:.4f}  lr {lr:.2e}  {pace.tokens_per_s:,.0f} tok/s"
        self._progress.update(self._task, completed=step, stats=stats,
                              pace=f"{hms(pace.elapsed_s)} elapsed, ETA {pace.eta_text}")


def hms(seconds: float) -> str:
    """``1h 02m 03s`` / ``2m 03s`` for a duration in seconds (rounded to whole seconds)."""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


class Pace:
    """Elapsed time, the current tokens/s and the ETA of a run, over a window of recent steps.

    The current rate and the ETA use the last ``window`` steps only, so they follow the run as it
    goes (the first step's warm-up or compile, a slower machine, a validation) instead of
    averaging from the start. Tokens/s divides by training time (no validation or checkpoints,
    as in result.json); the ETA divides by wall time, since the user waits for all of it.

    Args:
        start_step: optimizer steps already done when this process started (resume).
        last_step: the step the run ends at.
        window: recent steps the rate and the ETA are measured over.
        clock: seconds clock (``time.monotonic``; injectable for tests).
    """

    def __init__(self, start_step: int, last_step: int, window: int = 20,
                 clock: Callable[[], float] = time.monotonic):
        self.last_step, self.clock = last_step, clock
        self.start_s = clock()
        self.step = start_step
        # (step, wall clock, tokens so far, training seconds so far)
        self._marks: deque = deque([(start_step, self.start_s, 0, 0.0)], maxlen=window + 1)

    def update(self, step: int, tokens: int, train_s: float) -> None:
        """Record that optimizer step ``step`` is done, with this process's running totals of
        trained ``tokens`` and training seconds ``train_s``."""
        self.step = step
        self._marks.append((step, self.clock(), tokens, train_s))

    @property
    def elapsed_s(self) -> float:
        """Wall seconds since this process started training."""
        return self.clock() - self.start_s

    @property
    def tokens_per_s(self) -> float:
        """Tokens per training second over the window (0 before the first step)."""
        (_, _, tok0, tr0), (_, _, tok1, tr1) = self._marks[0], self._marks[-1]
        return (tok1 - tok0) / (tr1 - tr0) if tr1 > tr0 else 0.0

    @property
    def eta_s(self) -> Optional[float]:
        """Wall seconds until ``last_step`` at the window's pace; None before the first step."""
        (s0, w0, _, _), (s1, w1, _, _) = self._marks[0], self._marks[-1]
        if s1 <= s0:
            return None
        return (self.last_step - s1) * (w1 - w0) / (s1 - s0)

    @property
    def eta_text(self) -> str:
        """The ETA as ``2m 03s``, or ``?`` before the first step."""
        eta = self.eta_s
        return "?" if eta is None else hms(eta)
