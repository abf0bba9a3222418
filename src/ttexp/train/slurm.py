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
import signal
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


def hand_over(handler: Any, signum: int) -> str:
    """Call the preemption handler that was installed before the loop's (submitit's: it pickles
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
