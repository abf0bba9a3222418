"""Multi-process data parallelism for the torch backend, on ``torch.distributed``.

The controller (the one process that ran Hydra) writes ``resolved.yaml`` into the run directory
and starts N ranks with torchrun's elastic launcher (``torch.distributed.launcher``, the engine of
``torchrun --standalone``). Each rank runs ``python -m ttexp.worker RUN_DIR``: it reads that file
(never Hydra), joins the process group (gloo on CPU, NCCL on CUDA), takes its rows of every global
batch, and averages gradients and loss figures with the others. Only rank 0 writes the record.
If one rank dies, the launcher stops the others and the controller reports the failure.

Multi-machine runs: start ``python -m ttexp.worker RUN_DIR`` under ``torchrun --nnodes ...`` on each
machine yourself (README, "Several processes and machines"); that path is not tested here.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger("ttexp")

COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)
"""Upper bound on a collective; a rank that stops answering fails the run instead of hanging it."""


@dataclass(frozen=True)
class DistContext:
    """Where this process sits among the ranks of one run.

    Attributes:
        rank: 0 .. world_size - 1; rank 0 writes the record.
        world_size: processes taking part (1 = no torch.distributed at all).
        local_rank: index on this machine (picks the CUDA device).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


_CURRENT = DistContext()


def current() -> DistContext:
    """The context of this process (single-process unless :func:`init_worker` ran)."""
    return _CURRENT


def init_worker(device_type: str) -> DistContext:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, ...).

    Args:
        device_type: 'cpu' (gloo) or 'cuda' (NCCL).

    Raises:
        RuntimeError: the environment has no rank information (not started by the launcher).
    """
    import torch
    import torch.distributed as dist

    global _CURRENT
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RuntimeError("ttexp.worker must be started by the launcher (RANK/WORLD_SIZE unset).")
    ctx = DistContext(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                      int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    _CURRENT = ctx
    return ctx


def shutdown() -> None:
    """Leave the process group (a no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def signal_name(signum: Any) -> str:
    import signal

    try:
        return signal.Signals(int(signum)).name
    except (ValueError, TypeError):
        return str(signum)


def barrier() -> None:
    """Wait for every rank (a no-op in one process); a dead rank makes it fail, not hang long."""
    import torch.distributed as dist

    if current().enabled and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: Any) -> Any:
    """Sum a tensor over all ranks in place (identity in a single process)."""
    import torch.distributed as dist

    if current().enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


class LaunchInterrupted(Exception):
    """The controller got SIGINT/SIGTERM; the launcher passed it on to the ranks, which saved a
    checkpoint and stopped (within the launcher's grace period)."""


def launch(run_dir: Path, nprocs: int) -> Optional[str]:
    """Start ``nprocs`` ranks of ``python -m ttexp.worker run_dir`` on this machine and wait.

    Returns None when every rank exited 0, else a one-line description of the first failure
    (which rank, its exit code or signal). The launcher stops the surviving ranks when one fails.

    Raises:
        LaunchInterrupted: this process was sent SIGINT or SIGTERM (names the signal).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nprocs, run_id=f"ttexp-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
        start_method="spawn",
    )
    try:
        elastic_launch(config, sys.executable)("-u", "-m", "ttexp.worker", str(run_dir))
    except SignalException as exc:
        raise LaunchInterrupted(signal_name(exc.sigval)) from None
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        how = (f"was killed by signal {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with code {failure.exitcode}")
        return f"rank {rank} (pid {failure.pid}) {how}; the other ranks were stopped"
    return None
