"""Successive halving over exact resume (``sweep.halving``).

    python -m ttexp -m experiment=cpu_quick training.learning_rate=1e-3,2e-3,4e-3 \
        training.batch_size=8,12,16 sweep.halving.rungs=[100,300] sweep.halving.keep=0.34

Every job of the grid trains to the first rung (``training.stop_at_step``: the learning-rate
schedule is the one of ``training.max_steps``, only the loop stops early, validates and saves a
checkpoint). The sweep then keeps the best ``keep`` fraction by the validation loss at that rung
and continues those jobs from their own checkpoints (``resume=auto``) to the next rung, and so on;
the survivors of the last rung train to ``max_steps``. Because the schedule never changes and
resume is exact, a survivor's curve is the curve of an uninterrupted run.

The first rung runs through Hydra's launcher like any sweep; the later rungs run one after another
in the sweep's own process (:class:`ttexp.callbacks.ExperimentsCallback`), each in its own job
directory.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable, Optional

from ttexp.record.result import RunResult
from ttexp.sweeps.sweep import job_dirs, read_result

log = logging.getLogger("ttexp")


def survivors(at_rung: list[tuple[Path, Optional[RunResult]]], keep: float) -> list[Path]:
    """The jobs that go on from a rung: the best ``ceil(keep * len(at_rung))`` (at least one) by
    the validation loss measured at the rung (``final_val_loss``), among those that completed it.

    Args:
        at_rung: (job directory, its result) for every job that was run to this rung.
        keep: the fraction kept, in (0, 1).
    Returns:
        Job directories, best first. A job that failed at the rung is never kept.
    """
    ranked = sorted((r.final_val_loss, str(d), d) for d, r in at_rung
                    if r is not None and r.status == "completed" and r.final_val_loss is not None)
    n = max(1, math.ceil(keep * len(at_rung) - 1e-9))
    return [d for _, _, d in ranked[:n]]


def run_halving(sweep_dir: Path, rungs: list[int], keep: float,
                continue_job: Callable[[Path, Optional[int]], None]) -> list[list[Path]]:
    """Promote jobs rung by rung after the grid has reached ``rungs[0]``.

    Args:
        sweep_dir: the sweep directory; its jobs have run to ``rungs[0]`` (or further, when a
            re-run finds them there).
        rungs: the cut points in optimizer steps (increasing, below ``training.max_steps``).
        keep: the fraction kept at each cut.
        continue_job: ``continue_job(job_dir, stop_at)`` resumes one job from its newest
            checkpoint up to step ``stop_at`` (None = ``training.max_steps``).
    Returns:
        The jobs promoted at each cut, in order (one list per rung).
    """
    current = job_dirs(Path(sweep_dir))
    promoted: list[list[Path]] = []
    for i, rung in enumerate(rungs):
        at_rung = [(d, read_result(d)) for d in current]
        kept = survivors(at_rung, keep)
        target = rungs[i + 1] if i + 1 < len(rungs) else None
        log.info("Successive halving: rung %d (step %d): %d of %d jobs go on to %s: %s", i + 1, rung,
                 len(kept), len(at_rung), f"step {target}" if target else "training.max_steps",
                 ", ".join(d.name for d in kept))
        for d in kept:
            result = read_result(d)
            if result is not None and result.steps_done is not None and target is not None \
                    and result.steps_done >= target:
                continue  # already there (a re-run of the sweep)
            if result is not None and target is None and result.steps_done == result.max_steps:
                continue
            continue_job(d, target)
        promoted.append(kept)
        current = kept
    return promoted


def rung_label(result: Optional[RunResult], rungs: list[int]) -> str:
    """The table cell for how far a job got: ``300/800 (rung 2 of 3)``; ``–`` without a result."""
    if result is None or result.steps_done is None:
        return "–"
    total = result.max_steps
    reached = sum(1 for r in rungs if r <= result.steps_done) + \
        (1 if total is not None and result.steps_done >= total else 0)
    return f"{result.steps_done}/{total if total is not None else '?'} (rung {reached} of {len(rungs) + 1})"


def total_steps(results: list[Optional[RunResult]]) -> int:
    """Optimizer steps trained over a sweep's jobs (the cost halving saves)."""
    return sum(r.steps_done or 0 for r in results if r is not None)
