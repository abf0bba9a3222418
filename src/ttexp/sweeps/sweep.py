"""A sweep as it lies on disk: its job directories, their overrides as parsed values, the swept keys,
and the resume check.

Everything here reads files (``multirun.yaml``, ``<job>/.hydra/overrides.yaml``, ``result.json``)
rather than in-memory Hydra state, because launchers run jobs in other processes (joblib, SLURM)
and a sweep may be summarised long after it ran.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Optional, Sequence

import yaml
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf, open_dict

from ttexp.record.job import MULTIRUN_NAME, _bookkeeping, override_key, read_multirun
from ttexp.record.result import RESULT_NAME, RunResult
from ttexp.train.plan import choose_backend

log = logging.getLogger("ttexp")

OVERRIDES_PATH = Path(".hydra") / "overrides.yaml"


def _natural(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def is_sweep_dir(path: Path) -> bool:
    """A Hydra multirun directory: the sweeper wrote ``multirun.yaml`` into it."""
    return (path / MULTIRUN_NAME).is_file()


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a sweep, in job order: every folder below ``sweep_dir`` holding
    ``.hydra/overrides.yaml`` (a job that started) or ``result.json``."""
    found = {p.parent.parent for p in sweep_dir.rglob("overrides.yaml") if p.parent.name == ".hydra"}
    found |= {p.parent for p in sweep_dir.rglob(RESULT_NAME)}
    found.discard(sweep_dir)
    nested = {d for d in found if any(d != o and o in d.parents for o in found)}
    return sorted(found - nested, key=_natural)


def job_overrides(job_dir: Path) -> list[str]:
    """The job's overrides: ``.hydra/overrides.yaml``, else the ``overrides`` in result.json."""
    path = job_dir / OVERRIDES_PATH
    if path.is_file():
        return [str(x) for x in (yaml.safe_load(path.read_text()) or [])]
    result = read_result(job_dir)
    return list(result.overrides) if result else []


def expected_jobs(sweep_dir: Path) -> Optional[int]:
    """How many jobs the sweep launches: the product of its sweep overrides' lengths (the basic
    grid sweeper), or ``hydra.sweeper.n_trials`` (Optuna); None when it cannot be told."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_node = read_multirun(sweep_dir).get("hydra") or {}
    trials = (hydra_node.get("sweeper") or {}).get("n_trials")
    if isinstance(trials, int):
        return trials
    task = [str(x) for x in (hydra_node.get("overrides") or {}).get("task") or []]
    if not task:
        return None
    try:
        parsed = OverridesParser.create().parse_overrides(task)
        n = 1
        for o in parsed:
            n *= len(list(o.sweep_iterator())) if o.is_sweep_override() else 1
    except Exception:  # noqa: BLE001 - an odd override: the count is only informative
        return None
    return n


def read_result(run_dir: Path) -> Optional[RunResult]:
    """``run_dir/result.json``; None when missing or unreadable (a job still starting)."""
    return RunResult.read(run_dir)


def objective(result: RunResult) -> float:
    """What a sweep job returns to Hydra's sweeper (an Optuna sweeper minimises it): its best
    validation loss; +inf (the worst) for a job that did not complete or never validated (Optuna 2
    rejects NaN)."""
    best = result.best_val_loss
    return float(best) if result.status == "completed" and best is not None else float("inf")


RESUME = "sweep.resume=true"
"""The override that re-runs a sweep into its directory: completed jobs are skipped, the others
continue from their last checkpoint (:mod:`ttexp.__main__`)."""


def with_resume(overrides: Sequence[str], *then: str) -> list[str]:
    """``overrides`` without any ``sweep.resume`` override, then ``then``, then :data:`RESUME`."""
    return [o for o in overrides if override_key(o) != "sweep.resume"] + [*then, RESUME]


def sweep_command(sweep_dir: Path, resume: bool = False) -> Optional[str]:
    """The command line that launched the sweep (from ``multirun.yaml``); with ``resume``, the one
    that re-runs it into the same directory, skipping completed jobs. None without multirun.yaml."""
    import shlex

    hydra_node = read_multirun(sweep_dir).get("hydra") or {}
    overrides = hydra_node.get("overrides") or {}
    if not overrides:
        return None
    task = [str(x) for x in overrides.get("task") or []]
    extra = [str(x) for x in overrides.get("hydra") or []
             if not str(x).startswith(("hydra.mode=", "hydra.sweep.dir="))]
    args = extra + task
    if resume:
        args = extra + with_resume(task, f"hydra.sweep.dir={sweep_dir}")
    return "python -m ttexp -m " + " ".join(shlex.quote(a) for a in args)


def _identity(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides if not _bookkeeping(override_key(o)))


def completed_result(run_dir: Path, overrides: list[str]) -> Optional[RunResult]:
    """The result of a completed earlier run of this same job in ``run_dir``, or None.

    Used by ``sweep.resume=true``: a job whose directory holds a ``completed`` result.json made by
    the same overrides (``sweep.*`` keys aside) is skipped. A different job in that directory (the
    grid changed) is reported and then replaced.
    """
    result = read_result(run_dir)
    if not result or result.status != "completed":
        return None
    if _identity(list(result.overrides)) != _identity(overrides):
        log.warning("sweep.resume: %s held a different job (%s); it is run again and replaced.",
                    run_dir, " ".join(result.overrides))
        return None
    return result


LEASES_DIR = ".device-leases"
LEASE_POLL_S = 0.5


def lease_device(pool_dir: Path, n: int, poll_s: float = LEASE_POLL_S) -> tuple[int, FileLock]:
    """Take a free device K in 0..n-1 from the lock-file pool in ``pool_dir`` (one
    ``device-K.lock`` each, an OS lock via ``filelock``); waits while all ``n`` are taken.

    The lease lasts until the returned lock is released or its process dies (the kernel drops the
    lock then), so no two live jobs ever share a device, whatever order they finish in.
    """
    pool_dir.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for k in range(n):
            lock = FileLock(str(pool_dir / f"device-{k}.lock"), timeout=0)
            try:
                lock.acquire()
            except Timeout:
                continue
            return k, lock
        if not waited:
            log.info("sweep.pin_devices: all %d devices are taken; waiting for one to free.", n)
            waited = True
        time.sleep(poll_s)


def pin_job_device(cfg: DictConfig, sweep_dir: Path) -> tuple[Optional[str], Optional[FileLock]]:
    """Apply ``sweep.pin_devices`` to one sweep job (mutates ``cfg``): lease a free device from
    the sweep's pool (:func:`lease_device`). Returns (what was pinned, for the log; the lease, to
    release when the job ends), or (None, None) when pinning is off or the user chose a device.

    torch: ``device=cuda:K``. ttml: ``hardware.device_ids=[K]``. A mesh of more than one device is
    left alone here; :func:`ttexp.config.validate.validate_config` rejects that combination with a
    message when the job runs.
    """
    n = cfg.sweep.pin_devices
    mesh = [int(x) for x in cfg.hardware.mesh_shape]
    if not n or n < 1 or mesh[0] * mesh[1] != 1:
        return None, None
    backend = cfg.backend.value
    if backend == "auto":  # what auto will pick on this machine
        backend, _ = choose_backend("auto", mesh)
    key = "hardware.device_ids" if backend == "ttml" else "device"
    if OmegaConf.select(cfg, key) is not None and OmegaConf.select(cfg, key) != "":
        return None, None
    k, lease = lease_device(Path(sweep_dir) / LEASES_DIR, int(n))
    with open_dict(cfg):
        if backend == "ttml":
            cfg.hardware.device_ids = [k]
            return f"hardware.device_ids=[{k}]", lease
        cfg.device = f"cuda:{k}"
        return f"device=cuda:{k}", lease
