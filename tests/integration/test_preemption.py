"""submitit's preemption warning (SIGUSR2) on a real tiny run: the loop finishes the step and
saves a checkpoint, then hands over to submitit's handler (which requeues the job and exits); the
run ends `interrupted` and resume=auto, what SLURM's restart uses, continues the same losses.
The real SLURM round trip is in test_slurm.py."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from conftest import TINY, compose_cfg, run_cfg
from ttexp.record.run_record import RunRecord
from ttexp.train.slurm import preempt_signal

pytestmark = pytest.mark.slow


def test_submitit_preemption_checkpoints_then_hands_over(tmp_path, corpus, monkeypatch):
    """submitit's USR2 handler runs after the loop saved a checkpoint at the end of the step; the
    run ends `interrupted` (not a lost status) and resume=auto continues the same losses."""
    calls = []

    def submitit_handler(signum, frame):  # what submitit does: requeue, then sys.exit(-1)
        calls.append(sorted(p.name for p in (tmp_path / "run/checkpoints").glob("step_*")))
        raise SystemExit(-1)

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        assert preempt_signal() == signal.SIGUSR2
        original = RunRecord.log_metrics

        def log_metrics(self, step, metrics):
            original(self, step, metrics)
            if step == 1 and "train/loss" in metrics:
                os.kill(os.getpid(), signal.SIGUSR2)  # SLURM's warning, mid-run
                # The loop blocks USR2 in this thread (SpareChildren), so the kernel hands it to
                # another thread whenever that thread is next scheduled; on a busy 2-core machine
                # that can be after step 2. Wait until the loop's handler has run (it puts the
                # previous handler back), as SLURM's warning minutes ahead would.
                deadline = time.monotonic() + 10
                while signal.getsignal(signal.SIGUSR2) is not submitit_handler:
                    assert time.monotonic() < deadline, "the loop's USR2 handler never ran"
                    time.sleep(0.001)

        monkeypatch.setattr(RunRecord, "log_metrics", log_metrics)
        overrides = [TINY, f"data.path={corpus}", "sweep.journal=null"]
        stopped = run_cfg(compose_cfg(overrides, tmp_path / "run"))
        monkeypatch.setattr(RunRecord, "log_metrics", original)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert stopped["status"] == "interrupted"
    assert "Preempted (SIGUSR2) after step 1" in stopped["error"] and "requeued by submitit" in stopped["error"]
    assert calls == [["step_1"]]  # the checkpoint was on disk before submitit took over
    resumed = run_cfg(compose_cfg([*overrides, "resume=auto"], tmp_path / "run"))
    straight = run_cfg(compose_cfg(overrides, tmp_path / "straight"))
    assert resumed["status"] == straight["status"] == "completed"

    def losses(d: str) -> list:
        lines = (Path(d) / "metrics.jsonl").read_text().splitlines()
        return [(m["step"], m["train/loss"]) for m in map(json.loads, lines) if "train/loss" in m]

    assert losses(resumed["output_dir"]) == losses(straight["output_dir"])


def test_a_child_started_while_training_is_spared_the_preemption_signal():
    """SLURM sends its warning to every process of the step: a compiler that torch.compile starts
    must not die of it (SIGUSR2's default action), while this process still gets its handler."""
    import subprocess
    import sys
    import time

    from ttexp.train.slurm import SpareChildren

    got = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: got.append(signum))
    try:
        with SpareChildren(signal.SIGUSR2):
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
            time.sleep(0.3)
            for pid in (child.pid, os.getpid()):  # as slurmstepd does: each process of the step
                os.kill(pid, signal.SIGUSR2)
            deadline = time.monotonic() + 5
            while not got and time.monotonic() < deadline:
                time.sleep(0.01)
            assert child.wait(timeout=10) == 0  # not -12: it did not die of the signal
        assert got == [signal.SIGUSR2]
        unspared = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
        time.sleep(0.3)
        os.kill(unspared.pid, signal.SIGUSR2)
        assert unspared.wait(timeout=10) == -signal.SIGUSR2  # what happened to g++ before
    finally:
        signal.signal(signal.SIGUSR2, previous)
