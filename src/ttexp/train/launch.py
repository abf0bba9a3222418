"""Start the ranks of a multi-process torch run on this machine and wait for them.

The controller (the one process that ran Hydra) has written ``resolved.yaml`` into the run
directory; it starts N ranks with torchrun's elastic launcher (``torch.distributed.launcher``, the
engine of ``torchrun --standalone``). Each rank runs ``python -m ttexp.worker RUN_DIR``, which reads
that file (never Hydra), joins the process group (:class:`ttexp.train.ranks.Ranks`) and runs the
task; only rank 0 writes the record. If one rank dies, the launcher stops the others.

Ranks never outlive their controller: each rank calls :func:`die_with_parent` first (Linux's
``PR_SET_PDEATHSIG``, plus a parent-pid watchdog thread elsewhere or if the parent died first), so
a SIGKILLed controller takes its ranks with it within :data:`WATCHDOG_S` seconds.
:func:`supervise` runs a single-process sweep job the same way, in one child process: a job whose
process is killed (SIGKILL, the out-of-memory killer) ends ``lost`` and the sweep goes on.

Multi-machine runs: start ``python -m ttexp.worker RUN_DIR`` under ``torchrun --nnodes ...`` on each
machine yourself (README, "Several processes and machines"); that path is not tested here.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from ttexp.errors import Interrupted
from ttexp.record.liveness import pid_alive


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


WATCHDOG_S = 0.5
"""Seconds between the watchdog's parent checks (where PR_SET_PDEATHSIG is unavailable)."""
REPARENT_WAIT_S = 2.0
"""Seconds a sweep job's training process waits, after its parent-death signal, to be handed to a
new parent (the dying parent's threads exit one at a time)."""
PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal this process gets when its parent thread dies (linux/prctl.h)."""


def die_with_parent(on_orphaned: Optional[Callable[[int], None]] = None,
                    parent: Optional[int] = None) -> None:
    """Stop this process (SIGKILL) as soon as the process that started it dies.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (the kernel sends it at the parent's death). Then,
    everywhere: if the parent is already gone, exit now; else a daemon thread compares
    ``os.getppid()`` every :data:`WATCHDOG_S` s (a re-parented process gets a new parent pid).
    SIGKILL, not SIGTERM: without the controller a rank cannot finish a collective or a
    checkpoint; the last saved checkpoint is the resume point.

    Args:
        on_orphaned: called with the dead parent's pid before this process stops (a sweep job's
            training process records that its supervisor died: :func:`ttexp.record.liveness.
            record_orphaned`). Then the parent-death signal is SIGHUP, caught here, so the call
            can run; a SIGHUP while the parent lives keeps its default action (the process ends).
            Must be called from the main thread (Python's signal handlers run there).
        parent: the pid of the process that started this one, when it passed it on (a parent
            that died while this process was still starting has already been replaced by then).
    """
    parent = os.getppid() if parent is None else parent
    once = threading.RLock()  # the signal handler and the watchdog may both get here
    recorded = []

    def orphaned() -> None:
        with once:  # a second caller waits for the first to finish recording
            if on_orphaned is not None and not recorded:
                recorded.append(True)
                try:
                    on_orphaned(parent)
                except Exception:  # noqa: BLE001 - stopping matters more than the record
                    pass
        os.kill(os.getpid(), signal.SIGKILL)

    def hang_up(signum: int, frame: Any) -> None:
        # The kernel sends the parent-death signal when the *thread* that started this process
        # exits; a SIGKILLed parent's threads die one by one, so this process may first be handed
        # to a sibling thread (same parent pid) and only then to a new parent. Wait for that.
        deadline = time.monotonic() + REPARENT_WAIT_S
        while os.getppid() == parent and time.monotonic() < deadline:
            time.sleep(0.01)
        if os.getppid() == parent:  # a real hang-up, the parent lives: the default action
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGHUP)
        orphaned()

    death = signal.SIGKILL
    if on_orphaned is not None:
        signal.signal(signal.SIGHUP, hang_up)
        death = signal.SIGHUP
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(death), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still covers it
    if parent == 1 or not pid_alive(parent) or os.getppid() != parent:
        orphaned()

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_S)
            if os.getppid() != parent:
                orphaned()

    threading.Thread(target=watch, name="ttexp-parent-watchdog", daemon=True).start()


def supervise(run_dir: Path) -> Optional[str]:
    """Run ``python -m ttexp.worker run_dir --supervised PID`` (this process's pid) as one child
    process (world size 1) and wait. If this process dies, the child records its job ``lost`` and stops (:func:`die_with_parent`).

    Returns None when it exited 0, else "process (pid N) was killed by signal SIGKILL" or
    "process (pid N) exited with code C".

    Raises:
        Interrupted: this process got Ctrl-C; the child (same process group) got it too, saved a
            checkpoint and stopped.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    child = subprocess.Popen([sys.executable, "-u", "-m", "ttexp.worker", str(run_dir), "--supervised",
                              str(os.getpid())], env=env)
    try:
        code = child.wait()
    except KeyboardInterrupt:
        child.wait()
        raise Interrupted("Stopped by SIGINT") from None
    if code == 0:
        return None
    how = f"was killed by signal {signal_name(-code)}" if code < 0 else f"exited with code {code}"
    return f"process (pid {child.pid}) {how}"
