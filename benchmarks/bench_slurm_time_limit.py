"""A genuine SLURM time limit: SLURM itself sends submitit's warning (SIGUSR2, ``signal_delay_s``
before the limit) to a job submitted through hydra-submitit-launcher; the job checkpoints, submitit
requeues it, SLURM restarts it (SLURM_RESTART_COUNT), and it continues with resume=auto, as many
times as it takes to finish. Too slow for CI (a 1-minute limit is SLURM's smallest, and SLURM
checks limits only every ~30 s), so it is measured here by hand:

    sudo .ci/slurm/start.sh && python benchmarks/bench_slurm_time_limit.py [--steps 240]

Prints, for each start of the job: when it started, when the warning arrived (seconds after the
start; nominally ``timeout_min*60 - signal_delay_s``), the step it checkpointed, and the gap to the
next start; then whether the losses equal an uninterrupted run's. Timings on a shared machine are
noisy. Each start trains only until SLURM's next check (~30 s apart) minus the ~17 s restart,
so on a busy machine a long run can use up ``max_num_timeout`` (20 here) and end ``interrupted``
(the sweep's ``sweep.resume=true`` command continues it).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# only the warning's own checkpoint resumes the job; no compile: a 1-minute limit warns every ~30 s
# and each start would spend ~8 s of it compiling again (use --compile to watch that case)
JOB = ["debug=tiny", "training.validation_batches=1", "sweep.journal=null",
       "training.checkpoint_frequency=100000"]
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")


def _at(line: str) -> float:
    return datetime.strptime(STAMP.match(line).group(1), "%Y-%m-%d %H:%M:%S").timestamp()


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compile", default="false", help="training.compile (false, auto, true)")
    parser.add_argument("--steps", type=int, default=600,
                        help="training steps: enough to outlast the first warning (0-30 s after a start)")
    parser.add_argument("--timeout-min", type=int, default=1)
    parser.add_argument("--signal-delay-s", type=int, default=45)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/tinyshakespeare.txt"))
    a = parser.parse_args()
    job = [*JOB, f"training.compile={a.compile}", f"training.max_steps={a.steps}", f"training.validation_frequency={a.steps}", f"data.path={a.data}"]
    tmp = Path(tempfile.mkdtemp(prefix="ttexp-slurm-limit-"))
    sweep = tmp / "sweep"
    launcher = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug",
                f"hydra.launcher.timeout_min={a.timeout_min}", f"hydra.launcher.signal_delay_s={a.signal_delay_s}",
                "hydra.launcher.max_num_timeout=20", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
                "hydra.launcher.gpus_per_node=0", f"hydra.launcher.name=ttexp-limit-{uuid.uuid4().hex[:6]}"]
    t0 = time.time()
    done = subprocess.run([sys.executable, "-m", "ttexp", "-m", *job, *launcher, f"hydra.sweep.dir={sweep}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    wall = time.time() - t0
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:])
        return 1
    run_dir = sweep / "0"
    lines = (run_dir / "training.log").read_text().splitlines()
    starts = [_at(x) for x in lines if " INFO Backend: " in x]  # the first line of each start
    warned = [(_at(x), x) for x in lines if "SIGUSR2 received" in x]
    saved = [(_at(x), int(x.split("after step ")[1].split(";")[0])) for x in lines if "Preempted (SIGUSR2)" in x]
    print(f"sweep of 1 job: {wall:.0f} s wall; limit {a.timeout_min * 60} s, warning nominally at "
          f"{a.timeout_min * 60 - a.signal_delay_s} s after each start; {len(saved)} warning(s), "
          f"{len(starts)} start line(s)")
    for i, (at, step) in enumerate(saved):
        start = max((s for s in starts if s <= at), default=float("nan"))
        nxt = min((s for s in starts if s > at), default=float("nan"))
        warn = max((w for w, _ in warned if w <= at), default=float("nan"))
        print(f"  start {i}: warning {warn - start:.0f} s after its start, checkpoint at step {step} "
              f"{at - warn:.0f} s later, next start {nxt - at:.0f} s after the checkpoint (1-s log stamps)")
    reference = tmp / "uninterrupted"
    subprocess.run([sys.executable, "-m", "ttexp", *job, f"hydra.run.dir={reference}"], cwd=ROOT,
                   check=True, capture_output=True, timeout=1800)
    same = _losses(run_dir) == _losses(reference)
    result = json.loads((run_dir / "result.json").read_text())
    print(f"status {result['status']}, steps {result['steps_done']}/{a.steps}; losses equal an "
          f"uninterrupted run's: {same}; files in {tmp}")
    return 0 if same and result["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
