"""The ranks of one run, behind one object: who this process is, its share of each batch, and the
few collectives a run needs. In one process every method is a no-op.

    ranks = Ranks.single()                  # one process (the default everywhere)
    ranks = Ranks.join("cpu")               # a rank started by the launcher (ttexp.train.launch)

The loop asks ``ranks.shard(batch)``, ``ranks.any(flag)`` and ``ranks.is_main``; the torch backend
asks ``ranks.sum_(tensor)`` to average gradients and sum validation figures. Nothing else in ttexp
reads a rank from global state or imports ``torch.distributed``.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

from ttexp.data.batch import Batch
from ttexp.train.slurm import export_torch_env

COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)
"""Upper bound on a collective; a rank that stops answering fails the run instead of hanging it."""


@dataclass(frozen=True)
class Ranks:
    """Where this process sits among the ranks of one run.

    Attributes:
        rank: 0 .. world_size - 1; rank 0 writes the record.
        world_size: processes taking part (1 = no torch.distributed at all).
        local_rank: index on this machine (picks the CUDA device).
        device: where collective tensors live ('cpu' for gloo, 'cuda:K' for NCCL, which reduces
            CUDA tensors only).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @classmethod
    def single(cls) -> "Ranks":
        """One process: no process group, every collective is the identity."""
        return cls()

    @classmethod
    def join(cls, device_type: str) -> "Ranks":
        """Join the process group described by the launcher's environment (RANK, WORLD_SIZE,
        LOCAL_RANK, as torchrun sets them; under a multi-task ``srun`` without torchrun they are
        taken from SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID, see
        :func:`ttexp.train.slurm.export_torch_env`): gloo for 'cpu', NCCL for 'cuda' (and select
        this rank's GPU).

        Raises:
            RuntimeError: the environment has no rank information (not started by a launcher).
        """
        import torch
        import torch.distributed as dist

        export_torch_env()
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise RuntimeError("ttexp.worker must be started by a launcher (torchrun, or srun with several "
                               "tasks): RANK/WORLD_SIZE and SLURM_PROCID/SLURM_NTASKS are unset.")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}" if device_type == "cuda" else "cpu"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
        return cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), local, device)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the record, samples and checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process takes part."""
        return self.world_size > 1

    def shard(self, batch: Batch) -> Batch:
        """This rank's contiguous block of rows of a global ``batch`` (the whole batch in one
        process); see :meth:`ttexp.data.batch.Batch.rows`."""
        return batch.rows(self.rank, self.world_size) if self.enabled else batch

    def sum_(self, values: Any) -> Any:
        """Sum a tensor over all ranks, in place, and return it (identity in one process).
        The tensor must live on :attr:`device`."""
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def any(self, flag: bool) -> bool:
        """True when ``flag`` is true on at least one rank (a stop request: all ranks must stop at
        the same step). One small all-reduce; no communication in one process."""
        if not self.enabled:
            return flag
        import torch

        return float(self.sum_(torch.tensor([1.0 if flag else 0.0], device=self.device)).item()) > 0

    def barrier(self) -> None:
        """Wait for every rank (a no-op in one process); a dead rank makes it fail, not hang long."""
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()

    def close(self) -> None:
        """Leave the process group (a no-op in one process)."""
        if self.enabled:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
