"""A 2 x 2 sweep on a real one-node SLURM through hydra-submitit-launcher, with two jobs stopped
while they train, the two ways SLURM stops a job:

- job 3 is requeued (``scontrol requeue``, as a preemption with PreemptMode=REQUEUE does): SIGTERM,
  a checkpoint, and SLURM restarts it;
- job 2 gets submitit's warning signal as SLURM delivers it before the time limit
  (``scancel --signal=USR2 JOB``: without ``--batch``/``--full`` it reaches the job's steps, i.e.
  the Python process that ``srun`` started and where submitit installed its handler, as
  ``--signal=USR2@signal_delay_s`` without ``B:`` does; the batch shell does not get it): the loop
  saves a checkpoint, hands over to submitit, which requeues the job itself
  (``hydra.launcher.max_num_timeout`` >= 1: with a limit under 50 minutes submitit counts every
  warning as a time-out).

Both restart with SLURM_RESTART_COUNT=1 in the same directory, continue with resume=auto from their
checkpoint, and their losses equal an uninterrupted run's; the sweep's experiments.md lists every
job, completed, with its result. A genuine time limit (SLURM itself sending the warning) is not
run: SLURM checks limits every ~30 s, so a job must outlive a minute or more to be sure to get it.

Needs SLURM (sudo .ci/slurm/start.sh; .ci/run does it) and skips with the reason otherwise. It
costs about a minute of wall time, most of it SLURM's restart delay (cred_expire) and Python
start-up; the two stops overlap, so the warning-signal case adds little.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, run_in_process

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

STEPS = 320  # long enough (a few seconds) for each stop to land mid-run on a loaded machine
REQUEUED = 3  # the last two jobs: their restarts wait for SLURM's cred_expire while the others finish
WARNED = 2  # gets submitit's warning signal (USR2) and is requeued by submitit
JOB = ["debug=tiny", f"training.max_steps={STEPS}", "training.checkpoint_frequency=10",
       f"training.validation_frequency={STEPS}", "training.validation_batches=1", "sweep.journal=null"]
LAUNCHER = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug",
            "hydra.launcher.timeout_min=5", "hydra.launcher.signal_delay_s=10",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
            "hydra.launcher.gpus_per_node=0", "hydra.launcher.max_num_timeout=1"]


def _slurm_problem() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch not found: start SLURM with .ci/slurm/start.sh (needs root and apt-get)"
    try:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    states = state.stdout.split()
    if state.returncode != 0 or not {"idle", "mixed"} & set(states):
        return f"no idle SLURM node (sinfo: {state.stdout.strip() or state.stderr.strip()})"
    return None


@pytest.fixture(scope="module")
def slurm() -> None:
    problem = _slurm_problem()
    if problem:
        pytest.skip(problem)


def _wait_for(what: str, check, timeout: float, proc: subprocess.Popen):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    out = proc.stdout.read() if proc.poll() is not None and proc.stdout else ""
    raise AssertionError(f"timed out waiting for {what} (sweep exit {proc.poll()}):\n{out}")


def _losses(run_dir: Path) -> dict[int, float]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {m["step"]: m["train/loss"] for m in lines if "train/loss" in m}


@pytest.fixture(scope="module")
def requeued_sweep(slurm, tmp_path_factory, corpus):
    """Submit the sweep; as soon as job 2 has its first checkpoint send it the warning signal, and
    as soon as job 3 has its first, requeue it; wait for both restarts and the end. Prints SLURM's
    figures."""
    tmp = tmp_path_factory.mktemp("slurm")
    sweep, name = tmp / "sweep", f"ttexp-test-{uuid.uuid4().hex[:8]}"
    args = [sys.executable, "-m", "ttexp", "-m", *JOB, f"data.path={corpus}",
            "training.learning_rate=1e-3,3e-3", "training.batch_size=2,4", *LAUNCHER,
            f"hydra.launcher.name={name}", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = {n: sweep / f"{n}/training.log" for n in (WARNED, REQUEUED)}
    seen = {}  # figures: seconds from the signal / the requeue

    def logged(n: int, text: str):
        return lambda: log[n].is_file() and text in log[n].read_text()

    stop = {WARNED: ["scancel", "--signal=USR2"], REQUEUED: ["scontrol", "requeue"]}
    try:
        # Stop each job the moment its own first checkpoint is on disk: a job runs its STEPS in a
        # second or two, so waiting for the other job's checkpoint first could let it finish.
        signalled = {}

        def stop_jobs_with_a_checkpoint() -> bool:
            for n in stop.keys() - signalled.keys():
                if list((sweep / f"{n}/checkpoints").glob("step_*")):
                    ids = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True,
                                         text=True).stdout.split()
                    job = next((i for i in ids if i.endswith(f"_{n}")), None)  # task N = job N
                    assert job, f"job {n} left the queue before it could be stopped (squeue: {ids})"
                    subprocess.run([*stop[n], job], check=True, timeout=30)
                    signalled[n] = time.monotonic()
            return len(signalled) == len(stop)

        _wait_for("the first checkpoints of jobs 2 and 3", stop_jobs_with_a_checkpoint, 180, proc)
        _wait_for("job 2's checkpoint and requeue", logged(WARNED, "requeued by submitit"), 60, proc)
        seen["signal to checkpoint and requeue"] = time.monotonic() - signalled[WARNED]
        for n in (WARNED, REQUEUED):
            _wait_for(f"job {n}'s restart", logged(n, "SLURM restart 1"), 120, proc)
            seen[f"job {n}: signal to restart"] = time.monotonic() - signalled[n]
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["scancel", "-n", name], check=False)
    print(f"\nSLURM sweep: {time.monotonic() - started:.1f} s in all; "
          + "; ".join(f"{k} {v:.1f} s" for k, v in seen.items()))
    return sweep, proc.returncode, out


def _matches_an_uninterrupted_run(run_dir: Path, reference_dir: Path) -> dict:
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["steps_done"] == STEPS
    assert result["resumed_from"] and "/checkpoints/step_" in result["resumed_from"]
    overrides = [o for o in result["overrides"] if not o.startswith("hydra")]
    reference = run_in_process([*overrides], reference_dir)
    assert reference["status"] == "completed"
    resumed, straight = _losses(run_dir), _losses(reference_dir)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert resumed == straight  # exact: resume restores weights, optimizer, RNG and data position
    assert result["final_val_loss"] == reference["final_val_loss"]
    return result


def test_the_requeued_job_resumes_and_matches_an_uninterrupted_run(requeued_sweep, tmp_path, corpus):
    sweep, code, out = requeued_sweep
    assert code == 0, out
    log = (sweep / f"{REQUEUED}/training.log").read_text()
    # the first start saved a checkpoint on SLURM's SIGTERM; the restart continued from it
    assert "SIGTERM received" in log and "Stopped by SIGTERM after step" in log, log
    assert "SLURM restart 1 of this job: continuing" in log and "Resumed from" in log, log
    _matches_an_uninterrupted_run(sweep / str(REQUEUED), tmp_path / "uninterrupted")


def test_the_warned_job_checkpoints_is_requeued_by_submitit_and_matches(requeued_sweep, tmp_path):
    """SLURM's warning signal (USR2) reached the training process under srun; the loop saved a
    checkpoint at the end of the step, then submitit requeued the job; SLURM restarted it."""
    sweep, code, out = requeued_sweep
    assert code == 0, out
    log = (sweep / f"{WARNED}/training.log").read_text()
    assert "SIGUSR2 received" in log and "Preempted (SIGUSR2) after step" in log, log
    assert "requeued by submitit; SLURM restarts it and it continues with resume=auto" in log, log
    assert "SLURM restart 1 of this job: continuing" in log and "Resumed from" in log, log
    stopped_at = int(log.split("Preempted (SIGUSR2) after step ")[1].split(";")[0])
    result = _matches_an_uninterrupted_run(sweep / str(WARNED), tmp_path / "uninterrupted")
    assert result["resumed_from"].endswith(f"step_{stopped_at}")  # the checkpoint the warning saved
    # submitit's side: it caught the signal and requeued rather than giving up on the job
    submitit_log = "\n".join(p.read_text() for p in (sweep / ".submitit").rglob(f"*_{WARNED}_*.err"))
    assert "Caught signal SIGUSR2" in submitit_log and "Job not requeued" not in submitit_log, submitit_log


def test_the_sweep_table_is_complete_and_exact(requeued_sweep):
    sweep, _, out = requeued_sweep
    table = (sweep / "experiments.md").read_text()
    rows = [[c.strip() for c in x.strip("|").split("|")] for x in table.splitlines()
            if x.startswith("|") and "---" not in x]
    header, body = rows[0], rows[1:]
    assert [(r[2], r[3]) for r in body] == [("0.001", "2"), ("0.001", "4"), ("0.003", "2"), ("0.003", "4")]
    assert all(r[header.index("status")] == "completed" for r in body), table
    for n, row in enumerate(body):
        result = json.loads((sweep / str(n) / "result.json").read_text())
        assert result["status"] == "completed" and result["steps_done"] == STEPS
        assert row[header.index("final val loss")] == f"{result['final_val_loss']:.4f}", table
    assert "sweep.resume=true" not in table  # nothing left to resume


def test_srun_tasks_are_the_ranks_of_one_run(slurm, tmp_path, corpus):
    """README's multi-machine recipe with srun in place of torchrun: each task reads its rank from
    SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID, and the two ranks write one completed record."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    resolved = subprocess.run(
        [sys.executable, "-m", "ttexp", "--cfg", "job", "--resolve", "debug=fast", "hardware=n300",
         "training.max_steps=2", "training.validation_frequency=2", f"data.path={corpus}",
         "sweep.journal=null", f"output_dir={run_dir}"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120)
    (run_dir / "resolved.yaml").write_text(resolved.stdout)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(["srun", "--ntasks=2", "--cpus-per-task=1", "--time=3", sys.executable, "-m",
                           "ttexp.worker", str(run_dir)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["steps_done"] == 2
    assert "rank 0 of 2 torch ranks" in (run_dir / "training.log").read_text()
