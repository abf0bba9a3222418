"""A sweep's progress as a user watches it: jobs done / running / failed / to start, and an ETA.

After each job, the process that ran it prints one line to the console (and the job's log)::

    Sweep outputs/multirun/x: 3/8 jobs done, 1 failed, 2 running, 2 to start | elapsed 4m 10s | ETA 6m 40s

Everything is read from disk (``multirun.yaml`` and each job's ``result.json``), so the line is
right whichever launcher ran the job (basic, joblib, SLURM) and whichever order jobs finish in.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ttexp.record.job import MULTIRUN_NAME, read_multirun
from ttexp.sweeps.sweep import job_dirs, read_result
from ttexp.train.progress import hms

FAILED = ("failed", "diverged", "interrupted", "lost")
"""Statuses of a job that ended without completing."""


def planned_jobs(multirun: dict) -> Optional[int]:
    """How many jobs the sweep launches: the product of the sweep overrides' choice counts
    (``a=1,2 b=x,y,z`` -> 6), or an Optuna sweeper's ``n_trials``; None when unknown."""
    hydra_node = multirun.get("hydra") or {}
    sweeper = hydra_node.get("sweeper") or {}
    if "n_trials" in sweeper:
        return int(sweeper["n_trials"])
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = [str(x) for x in (hydra_node.get("overrides") or {}).get("task") or []]
    try:
        overrides = OverridesParser.create().parse_overrides(task)
    except Exception:  # noqa: BLE001 - an override only a plugin understands: no total
        return None
    total = 1
    for o in overrides:
        if o.is_sweep_override():
            total *= len(list(o.sweep_string_iterator()))
    for value in (sweeper.get("params") or {}).values():  # a sweeper's own grid (basic sweeper)
        total *= len(str(value).split(","))
    return total


@dataclass
class SweepProgress:
    """Counts and times of a sweep at one moment (seconds)."""

    total: Optional[int]
    done: int
    failed: int
    running: int
    elapsed_s: float
    eta_s: Optional[float]

    @property
    def to_start(self) -> Optional[int]:
        if self.total is None:
            return None
        return max(0, self.total - self.done - self.failed - self.running)

    def line(self, sweep_dir: Path) -> str:
        """The console line (see the module docstring)."""
        total = "?" if self.total is None else str(self.total)
        parts = [f"{self.done}/{total} jobs done", f"{self.failed} failed", f"{self.running} running"]
        if self.to_start is not None:
            parts.append(f"{self.to_start} to start")
        eta = "?" if self.eta_s is None else hms(self.eta_s)
        return f"Sweep {sweep_dir}: {', '.join(parts)} | elapsed {hms(self.elapsed_s)} | ETA {eta}"


def sweep_progress(sweep_dir: Path, now: Optional[float] = None) -> SweepProgress:
    """Read the sweep's state from disk.

    ETA = jobs not yet finished x the mean wall time of the finished jobs / the launcher's
    parallelism (``hydra.launcher.n_jobs``, 1 for the basic launcher); None before any job ends.
    Elapsed counts from when ``multirun.yaml`` was written (the sweep's start).
    """
    now = time.time() if now is None else now
    multirun = read_multirun(sweep_dir)
    counts = {"done": 0, "failed": 0, "running": 0}
    walls = []
    for job in job_dirs(sweep_dir):
        result = read_result(job)
        status = result.status if result else "running"
        key = "done" if status == "completed" else "failed" if status in FAILED else "running"
        counts[key] += 1
        if key != "running" and result and result.wall_s:
            walls.append(float(result.wall_s))
    total = planned_jobs(multirun)
    try:
        started = (sweep_dir / MULTIRUN_NAME).stat().st_mtime
    except OSError:
        started = now
    eta = None
    if walls and total is not None:
        parallel = int(((multirun.get("hydra") or {}).get("launcher") or {}).get("n_jobs") or 1)
        unfinished = max(0, total - counts["done"] - counts["failed"])
        eta = math.ceil(unfinished / max(1, parallel)) * sum(walls) / len(walls)
    return SweepProgress(total, counts["done"], counts["failed"], counts["running"],
                         max(0.0, now - started), eta)
