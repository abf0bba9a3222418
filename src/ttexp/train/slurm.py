"""What a run needs to know about SLURM: whether SLURM restarted it, and the preemption warning.

    python -m ttexp -m hydra/launcher=submitit_slurm ...   # README, "Sweeps on a SLURM cluster"

A SLURM job that is preempted, requeued (``scontrol requeue``) or hits its time limit under
submitit is started again with the same command in the same run directory, and SLURM sets
``SLURM_RESTART_COUNT`` (unset on the first start, 1 after the first restart). ttexp then
continues the run with ``resume=auto`` (:func:`restart_resume`), so its losses are those of an
uninterrupted job (exact resume). Before that, the loop (:mod:`ttexp.train.loop`) turns the stop
signals into a checkpoint at the end of the current step:

- SIGTERM: ``scontrol requeue``, ``scancel`` and the time limit (SLURM's KillWait, 30 s by default,
  before SIGKILL).
- submitit's preemption/time-out warning (SIGUSR2, or ``SUBMITIT_PREEMPT_SIGNAL``, sent
  ``signal_delay_s`` before the limit): when submitit's handler is installed, the loop saves the
  checkpoint first, then hands over to that handler, which resubmits the same job and requeues it.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from typing import Any, Optional

RESTART_ENV = "SLURM_RESTART_COUNT"
"""Set by SLURM on a restarted job: 1 after the first requeue (unset on the first start)."""
PREEMPT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"
"""submitit's name for the preemption signal (default USR2; submitit/core/job_environment.py)."""


def restart_count() -> int:
    """How many times SLURM has restarted this job (0 outside SLURM and on the first start)."""
    value = os.environ.get(RESTART_ENV, "").strip()
    return int(value) if value.isdigit() else 0


def restart_resume(resume: Optional[str]) -> Optional[str]:
    """The ``resume`` a run should use: ``auto`` when SLURM restarted the job and the user gave
    none (the run directory is the same one, so its own checkpoints continue it; with none yet
    ``auto`` starts from step 0), else ``resume`` unchanged."""
    return "auto" if resume is None and restart_count() > 0 else resume


def preempt_signal() -> Optional[signal.Signals]:
    """submitit's preemption signal when submitit has installed a Python handler for it in this
    process (a SLURM job started by submitit), else None; the loop then chains to that handler."""
    name = os.environ.get(PREEMPT_SIGNAL_ENV, "USR2").upper()
    sig = getattr(signal, name if name.startswith("SIG") else f"SIG{name}", None)
    if not isinstance(sig, signal.Signals):
        return None
    return sig if callable(signal.getsignal(sig)) else None


class SpareChildren:
    """Keep the preemption signal from the processes this one starts while it trains.

    SLURM sends the warning to every process of the job step (``--signal`` without ``B:``, and
    ``scancel --signal``), the compiler processes of ``torch.compile`` (Inductor's g++) included;
    SIGUSR2's default action ends them, and the run then fails with a compile error instead of
    checkpointing (seen on the local SLURM: ``benchmarks/bench_slurm_time_limit.py``). A blocked
    signal stays blocked across fork and exec, so: block ``sig`` in the main thread (children it
    starts inherit the mask and never act on it) and keep one daemon thread that does not block
    it, which the kernel delivers it to; Python runs the handler in the main thread as always.
    Children started before this, or from other threads, are not covered.
    """

    def __init__(self, sig: Optional[signal.Signals]):
        self.sig = sig if hasattr(signal, "pthread_sigmask") else None

    def __enter__(self) -> "SpareChildren":
        if self.sig is not None:
            self._done = threading.Event()  # the receiving thread: started before the block
            threading.Thread(target=self._done.wait, name="ttexp-signal-receiver", daemon=True).start()
            self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, {self.sig})
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.sig is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
            self._done.set()


def hand_over(handler: Any, signum: int) -> str:
    """Call the preemption handler that was installed before the loop's (submitit's: it saves
    the job again and runs ``scontrol requeue``, then exits) and say what it did.

    Returns:
        A sentence for the interrupted run's record. submitit ends with ``sys.exit``, which is
        caught here so the record closes as ``interrupted`` instead of losing its status; an
        error it raises (e.g. "timed-out too many times") is returned as text.
    """
    try:
        handler(signum, None)
    except SystemExit:
        return "requeued by submitit; SLURM restarts it and it continues with resume=auto"
    except Exception as exc:  # noqa: BLE001 - submitit's UncompletedJobError and the like
        return f"not requeued: {exc}"
    return "the previous handler returned without requeueing"


def export_torch_env() -> bool:
    """Under ``srun`` with several tasks (``srun --ntasks-per-node=8 python -m ttexp.worker DIR``)
    and no torchrun: set torch.distributed's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
    MASTER_ADDR (the job's first host) and MASTER_PORT (unless set: drawn from the job id in
    20000-60000, as submitit's ``TorchDistributedEnvironment`` does) from SLURM's variables, read
    by submitit's ``SlurmJobEnvironment`` (it expands SLURM_JOB_NODELIST, e.g. ``gpu[07-08]``).
    Returns False (and sets nothing) outside such a step, in a one-task step (a plain sbatch job:
    one process, no process group) or when RANK is set (torchrun).

    Raises:
        RuntimeError: submitit is not installed (``pip install -e ".[sweeps]"``).
    """
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ or "SLURM_NTASKS" not in os.environ:
        return False
    if int(os.environ["SLURM_NTASKS"]) < 2:
        return False
    try:
        from submitit.slurm.slurm import SlurmJobEnvironment
    except ImportError as exc:
        raise RuntimeError('ranks from SLURM need submitit: pip install -e ".[sweeps]"') from exc
    job = SlurmJobEnvironment()  # direct: submitit's own lookup needs SUBMITIT_EXECUTOR=slurm
    port = os.environ.get("MASTER_PORT") or str(random.Random(job.job_id).randint(20000, 60000))
    os.environ.update({
        "RANK": str(job.global_rank), "WORLD_SIZE": str(job.num_tasks), "LOCAL_RANK": str(job.local_rank),
        "LOCAL_WORLD_SIZE": str(job.num_tasks // job.num_nodes), "MASTER_ADDR": job.hostnames[0],
        "MASTER_PORT": port,
    })
    return True
