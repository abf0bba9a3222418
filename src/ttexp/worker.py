"""One rank of a multi-process run: ``python -m ttexp.worker RUN_DIR`` (started by the launcher).

It reads ``RUN_DIR/resolved.yaml`` (written by the controller; no Hydra here), joins the process
group, and runs the task. Rank 0 writes the record into RUN_DIR; the other ranks write nothing
and log only warnings, prefixed with their rank. The exit code follows the run's status.
"""

from __future__ import annotations

import logging
import os
import sys
from functools import partial
from pathlib import Path

from omegaconf import OmegaConf

from ttexp.backends.torch_backend import resolve_device
from ttexp.config.convert import to_run_config
from ttexp.config.schema import RunConfig
from ttexp.errors import exit_code
from ttexp.record.console import console_handler
from ttexp.record.liveness import hold_rank_lock, record_orphaned
from ttexp.record.run_record import RESOLVED_NAME, NullRecord, RunRecord
from ttexp.runner import run_rank
from ttexp.train.launch import die_with_parent
from ttexp.train.ranks import Ranks
from ttexp.train.slurm import export_torch_env


SUPERVISED = "--supervised"
"""Argument :func:`ttexp.train.launch.supervise` adds, followed by its pid: this process is a sweep
job's only one."""


def load_resolved_config(run_dir: Path) -> RunConfig:
    """``resolved.yaml`` merged onto the typed schema (types and choices are checked again) and
    converted to the schema's dataclasses."""
    return to_run_config(OmegaConf.load(run_dir / RESOLVED_NAME))


def _setup_logging(run_dir: Path, rank: int) -> None:
    log = logging.getLogger("ttexp")
    log.handlers.clear()
    log.propagate = False
    console = console_handler()
    if rank == 0:
        log.setLevel(logging.INFO)
        file = logging.FileHandler(run_dir / "training.log", mode="a")
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(file)
    else:
        log.setLevel(logging.WARNING)
        console.setFormatter(logging.Formatter(f"[rank {rank}] %(levelname)s: %(message)s"))
    log.addHandler(console)


def main(argv: list[str] | None = None) -> int:
    """Run this rank; returns the process exit code (0 only when the run completed).

    Started by the launcher (RANK/WORLD_SIZE set: join the process group) or by
    :func:`ttexp.train.launch.supervise` (neither set: one process). Either way it dies with the
    process that started it and holds its rank's lock on the run directory while it lives.
    """
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0])
    # A sweep job's one process (started by supervise()) records its supervisor's death as it
    # stops, so the sweep's launcher knows which job's worker was killed.
    if SUPERVISED in argv[1:]:
        die_with_parent(partial(record_orphaned, run_dir), parent=int(argv[argv.index(SUPERVISED) + 1]))
    else:
        die_with_parent()
    export_torch_env()  # a task of a multi-task srun step: its rank from SLURM's variables
    rank_lock = hold_rank_lock(run_dir, int(os.environ.get("RANK", "0")))  # noqa: F841 - held till exit
    cfg = load_resolved_config(run_dir)
    ranks = Ranks.join(resolve_device(cfg.device).type) if "RANK" in os.environ else Ranks.single()
    _setup_logging(run_dir, ranks.rank)
    try:
        if ranks.is_main:
            overrides_file = run_dir / ".hydra" / "overrides.yaml"
            overrides = (OmegaConf.to_container(OmegaConf.load(overrides_file), resolve=False)  # as typed
                         if overrides_file.exists() else [])
            record: RunRecord | NullRecord = RunRecord(run_dir, cfg, overrides, fresh=not cfg.resume)
        else:
            record = NullRecord(run_dir)
        result = run_rank(cfg, ranks, record)
        try:
            ranks.barrier()  # rank 0 has written the record before any rank exits
        except Exception:
            pass  # a rank died: the launcher reports which
    finally:
        ranks.close()
    if ranks.is_main:
        return exit_code(result.status)
    # An orderly stop (all ranks diverged or were interrupted together) is rank 0's to report; a
    # non-zero exit here would make the launcher kill rank 0 while it writes.
    return 0 if result.status in ("completed", "interrupted", "diverged") else 1


if __name__ == "__main__":
    sys.exit(main())
