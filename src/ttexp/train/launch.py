"""Start the ranks of a multi-process torch run on this machine and wait for them.

The controller (the one process that ran Hydra) has written ``resolved.yaml`` into the run
directory; it starts N ranks with torchrun's elastic launcher (``torch.distributed.launcher``, the
engine of ``torchrun --standalone``). Each rank runs ``python -m ttexp.worker RUN_DIR``, which reads
that file (never Hydra), joins the process group (:class:`ttexp.train.ranks.Ranks`) and runs the
task; only rank 0 writes the record. If one rank dies, the launcher stops the others.

Multi-machine runs: start ``python -m ttexp.worker RUN_DIR`` under ``torchrun --nnodes ...`` on each
machine yourself (README, "Several processes and machines"); that path is not tested here.
"""

from __future__ import annotations

import logging
import signal
import sys
import uuid
from pathlib import Path
from typing import Any, Optional

from ttexp.errors import Interrupted


def signal_name(signum: Any) -> str:
    """``SIGINT`` for 2, the text itself for anything that is not a signal number."""
    try:
        return signal.Signals(int(signum)).name
    except (ValueError, TypeError):
        return str(signum)


def launch(run_dir: Path, nprocs: int) -> Optional[str]:
    """Start ``nprocs`` ranks of ``python -m ttexp.worker run_dir`` on this machine and wait.

    Returns None when every rank exited 0, else a one-line description of the first failure
    (which rank, its exit code or signal). The launcher stops the surviving ranks when one fails.

    Raises:
        Interrupted: this process was sent SIGINT or SIGTERM, which the launcher passed on to the
            ranks (they save a checkpoint and stop within its grace period); names the signal.
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
        raise Interrupted(f"Stopped by {signal_name(exc.sigval)}") from None
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        how = (f"was killed by signal {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with code {failure.exitcode}")
        return f"rank {rank} (pid {failure.pid}) {how}; the other ranks were stopped"
    return None
