"""The fault matrix: SIGKILL of a single run, of a sweep job's process (joblib), of a multi-rank
controller and of one rank; two runs into one directory. For each: what the user sees (exit code,
console), what the record says (result.json, summarize), and that resume reproduces the
uninterrupted losses exactly.

The multi-process cases (marked ``faults``) take minutes on 2 busy cores and run in their own CI
step: ``python -m pytest -m faults``."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TINY, compose_cfg, run_cli, run_in_process, start_cli, wait_for
from ttexp.runner import run

pytestmark = pytest.mark.slow

# debug=tiny made long enough to be killed mid-run: a checkpoint every 3 steps, fp32, dropout on
# (an exact resume needs the weights, AdamW state, RNG and data position all restored).
STEPS = 12
ARGS = [TINY, "training.precision=fp32", "model.dropout=0.1", f"training.max_steps={STEPS}",
        "training.checkpoint_frequency=3", "training.validation_frequency=6"]
RANKS = ["hardware=n300", "hardware.processes=2", "training.batch_size=8",
         "training.gradient_accumulation_steps=2", "model.dropout=0.0"]


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc)."""
    parent_of = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parent_of[int(d.name)] = int(fields[1])
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        out += kids
        frontier += kids
    return out


def cmdline(pid: int) -> bytes:
    """Process ``pid``'s command line, NUL-separated; empty once it has gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def alive(pids: list[int]) -> list[int]:
    out = []
    for p in pids:
        try:
            if Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                out.append(p)
        except OSError:
            pass
    return out


def summarize(*dirs: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ttexp.summarize", "--no-plot", *map(str, dirs)],
                          cwd=ROOT, text=True, capture_output=True, timeout=120)


def summarize_here(run_dir: Path, capsys) -> subprocess.CompletedProcess:
    """`python -m ttexp.summarize --no-plot RUN_DIR`, in this process (saves a start-up)."""
    from ttexp.sweeps.summarize import main

    capsys.readouterr()
    code = main(["--no-plot", str(run_dir)])
    out = capsys.readouterr()
    return subprocess.CompletedProcess([], code, out.out, out.err)


def printed_resume(text: str) -> list[str]:
    """The `continue with: python -m ttexp ...` command the user is shown, as arguments."""
    line = text.rsplit("continue with: ", 1)[1].splitlines()[0]  # the summary's line, not the table's
    args = shlex.split(line)
    assert args[:3] == ["python", "-m", "ttexp"], line
    return args[3:]


@pytest.fixture(scope="module")
def single_uninterrupted(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    assert run_in_process([*ARGS, f"data.path={corpus}"], out)["status"] == "completed"
    return out


def test_sigkill_of_a_single_run_is_lost_then_resumes_exactly(tmp_path, corpus, single_uninterrupted,
                                                              capsys):
    out = tmp_path / "run"
    proc = start_cli([*ARGS, f"data.path={corpus}", f"hydra.run.dir={out}"])
    wait_for(out / "checkpoints" / "step_3" / "manifest.json", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(losses(out)) < STEPS, "the run finished before it was killed"
    # The user sees: summarize exits 1, says lost (not running), why, where it stopped, the resume.
    seen = summarize_here(out, capsys)
    assert seen.returncode == 1
    assert json.loads((out / "result.json").read_text())["status"] == "running"  # as the run left it
    assert f"{out}: lost: its process (pid {proc.pid} on" in seen.stdout
    assert "last checkpoint step_" in seen.stdout and "did not complete" in seen.stderr
    assert "| **lost**" in seen.stdout
    # Half-written files of the killed run are cleaned up by the resume.
    (out / "checkpoints" / ".tmp-step_9-abc").mkdir()
    (out / ".result.json.xyz.tmp").write_text("{")
    args = printed_resume(seen.stdout)
    assert "resume=auto" in args and f"hydra.run.dir={out}" in args
    result = run_in_process([a for a in args if not a.startswith("hydra.run.dir=")], out)
    assert result["status"] == "completed", result["error"]
    assert not list((out / "checkpoints").glob(".tmp-*")) and not list(out.glob(".*.tmp"))
    assert losses(out) == losses(single_uninterrupted)  # exactly


def test_two_runs_into_one_directory_the_second_is_refused_untouched(tmp_path, corpus):
    out = tmp_path / "run"
    first = start_cli([*ARGS, "training.max_steps=100000", f"data.path={corpus}", f"hydra.run.dir={out}"])
    wait_for(out / "checkpoints" / "step_3" / "manifest.json", first)
    first.send_signal(signal.SIGSTOP)  # frozen: its files stay still while we compare them
    try:
        snapshot = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        second = run_cli([*ARGS, f"data.path={corpus}", f"hydra.run.dir={out}"])
        in_process = run(compose_cfg([*ARGS, f"data.path={corpus}", "resume=auto"], out))  # a resume
        after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    finally:
        first.send_signal(signal.SIGCONT)
        first.kill()
        first.wait()
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"is in use by another run (pid {first.pid} on host" in second.stderr
    assert in_process.status == "usage" and f"pid {first.pid} on host" in in_process.error
    assert after == snapshot  # checkpoints, metrics, result.json, .hydra/, log: byte for byte


@pytest.fixture(scope="module")
def ranks_uninterrupted(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("ranks") / "run"
    proc = run_cli([*ARGS, *RANKS, f"data.path={corpus}", f"hydra.run.dir={out}"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _start_ranks(out: Path, corpus: Path, *extra: str) -> tuple[subprocess.Popen, list[int]]:
    """A 2-rank run, once it has saved the checkpoint after the one it started from."""
    done = {int(p.parent.name[5:]) for p in out.glob("checkpoints/step_*/manifest.json")}
    proc = start_cli([*ARGS, *RANKS, f"data.path={corpus}", f"hydra.run.dir={out}", *extra])
    wait_for(out / "checkpoints" / f"step_{max(done, default=0) + 3}" / "manifest.json", proc)
    workers = [p for p in descendants(proc.pid)
               if b"ttexp.worker" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(workers) == 2, workers
    return proc, workers


@pytest.mark.faults
def test_sigkill_of_one_rank_then_of_the_controller_then_resume_matches_exactly(
        tmp_path, corpus, ranks_uninterrupted):
    out = tmp_path / "run"
    # 1. One rank is killed: the launcher stops the other; the run ends failed, saying which.
    proc, ranks = _start_ranks(out, corpus)
    os.kill(ranks[-1], signal.SIGKILL)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "killed by signal SIGKILL" in output
    assert max(losses(out)) < STEPS, "the run finished before it was killed"
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "failed" and "SIGKILL" in result["error"] and not alive(ranks)
    # 2. Its resume's controller is killed: every rank stops within seconds; the record is lost.
    proc, ranks = _start_ranks(out, corpus, "resume=auto")
    killed = time.time()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    while alive(ranks) and time.time() - killed < 10:
        time.sleep(0.02)
    assert not alive(ranks), f"ranks {alive(ranks)} outlived their controller"
    print(f"ranks gone {time.time() - killed:.2f} s after the controller's SIGKILL")
    assert max(losses(out)) < STEPS, "the run finished before it was killed"
    seen = summarize(out)
    assert seen.returncode == 1 and f"lost: its process (pid {proc.pid} on" in seen.stdout
    # 3. The printed resume command completes, with the uninterrupted run's losses exactly.
    again = run_cli(printed_resume(seen.stdout))
    assert again.returncode == 0, again.stdout + again.stderr
    assert losses(out) == losses(ranks_uninterrupted)


@pytest.mark.faults
def test_a_sweep_job_whose_process_is_killed_is_lost_and_the_sweep_goes_on(
        tmp_path, corpus, single_uninterrupted):
    from test_wandb import of_kind, parse_wandb_file, summary_of

    sweep = tmp_path / "sweep"
    # Job 0 is exactly the single uninterrupted run (warmup 1 is debug=tiny's own value).
    proc = start_cli(["-m", *ARGS, f"data.path={corpus}", "hydra/launcher=joblib", "logger=wandb",
                  "logger.wandb.mode=offline", "hydra.launcher.n_jobs=2", "training.warmup_steps=1,2",
                  f"hydra.sweep.dir={sweep}"])
    wait_for(sweep / "0" / "checkpoints" / "step_3" / "manifest.json", proc)
    victim = [p for p in descendants(proc.pid)
              if f"ttexp.worker\0{sweep}/0".encode() in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(victim) == 1, victim
    table = (sweep / "experiments.md").read_text()  # written as the jobs started
    assert "| 0 |" in table and "| 1 |" in table
    os.kill(victim[0], signal.SIGKILL)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, output
    assert "Job 0: lost: The job's process" in output and "killed by signal SIGKILL" in output
    assert json.loads((sweep / "0" / "result.json").read_text())["status"] == "lost"
    assert json.loads((sweep / "1" / "result.json").read_text())["status"] == "completed"
    table = (sweep / "experiments.md").read_text()
    assert "Jobs: 2 (1 completed, 1 lost)" in table and "last checkpoint step_3" in table
    # W&B as well: the sweep's table closed job 0's W&B run as lost, once, with where it stopped
    lost = [summary_of(parse_wandb_file(f)) for f in sorted((sweep / "0").glob("wandb/offline-run-*/*.wandb"))]
    assert [s.get("status") for s in lost] == [None, "lost"], lost
    assert lost[1]["lost/last_checkpoint"].startswith("step_") and "SIGKILL" in lost[1]["lost/reason"]
    command = table.split("re-run them (completed jobs are skipped): `", 1)[1].split("`")[0]
    args = shlex.split(command)
    assert args[:4] == ["python", "-m", "ttexp", "-m"] and "sweep.resume=true" in args
    again = run_cli(args[3:])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Jobs: 2 (2 completed)" in (sweep / "experiments.md").read_text()
    assert losses(sweep / "0") == losses(single_uninterrupted)  # exactly
    run_id = json.loads((sweep / "0" / "result.json").read_text())["wandb"]["id"]
    files = list((sweep / "0").glob("wandb/offline-run-*/*.wandb"))
    ends = [parse_wandb_file(f) for f in files]
    # the killed start's file may end before its run record (wandb-core buffers; SIGKILL)
    assert len(files) == 3 and {r.run.run_id for e in ends for r in of_kind(e, "run")} == {run_id}
    assert sorted(summary_of(r).get("status") for r in ends if of_kind(r, "exit")) == ["completed", "lost"]


@pytest.fixture(scope="module")
def warmup2_uninterrupted(tmp_path_factory, corpus) -> Path:
    """Job 1 of the joblib sweeps below, run alone without interruption."""
    out = tmp_path_factory.mktemp("warmup2") / "run"
    assert run_in_process([*ARGS, f"data.path={corpus}", "training.warmup_steps=2"], out)["status"] == \
        "completed"
    return out


@pytest.mark.faults
def test_a_killed_joblib_worker_loses_only_its_job_and_the_printed_command_finishes_it(
        tmp_path, corpus, single_uninterrupted, warmup2_uninterrupted):
    """SIGKILL of the loky worker process itself (not the job's training child) breaks joblib's
    pool, and loky kills the other workers. ttexp's launcher keeps the killed worker's job lost,
    re-dispatches the other job in a fresh pool from its checkpoint, and exits 1 with the
    sweep.resume=true command, which then completes the lost job. Both jobs' losses equal their
    uninterrupted runs exactly."""
    sweep = tmp_path / "sweep"
    proc = start_cli(["-m", *ARGS, f"data.path={corpus}", "hydra/launcher=joblib",
                  "hydra.launcher.n_jobs=2", "training.warmup_steps=1,2", f"hydra.sweep.dir={sweep}"])
    child = []
    while not child:  # found before it trains, so the kill lands mid-run (12 steps take ~1 s)
        assert proc.poll() is None, proc.stdout.read()
        child = [p for p in descendants(proc.pid) if f"ttexp.worker\0{sweep}/0".encode() in cmdline(p)]
    worker = int(Path(f"/proc/{child[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert b"loky" in Path(f"/proc/{worker}/cmdline").read_bytes()
    wait_for(sweep / "0" / "checkpoints" / "step_3" / "manifest.json", proc)
    os.kill(worker, signal.SIGKILL)
    killed = time.time()
    output, _ = proc.communicate(timeout=300)
    print(f"the sweep ended {time.time() - killed:.1f} s after the worker's SIGKILL")
    # The user sees: which worker died, that job 0 stays lost, job 1 re-dispatched, exit 1.
    assert proc.returncode == 1, output
    assert "A joblib worker process died (exit codes {SIGKILL(-9)" in output, output
    assert "Job 0 was on the killed worker: it stays lost and is not re-run (last logged step" in output
    assert "Recovery 1 of 2 (sweep.recoveries): re-dispatching job(s) 1 in a fresh pool" in output
    assert "Job 0: lost: Its supervising process (pid " in output
    # The record: job 0 lost with its last checkpoint, job 1 completed with the uninterrupted losses.
    lost = json.loads((sweep / "0" / "result.json").read_text())
    assert lost["status"] == "lost" and "last checkpoint step_3" in lost["error"], lost["error"]
    assert max(losses(sweep / "0")) < STEPS, "job 0 finished before its worker was killed"
    assert json.loads((sweep / "1" / "result.json").read_text())["status"] == "completed"
    assert losses(sweep / "1") == losses(warmup2_uninterrupted)  # exactly
    table = (sweep / "experiments.md").read_text()
    assert "Jobs: 2 (1 completed, 1 lost)" in table and "running" not in table.split("| job |", 1)[1]
    args = shlex.split(output.split("resume from their checkpoints): ", 1)[1].splitlines()[0])
    assert args[:4] == ["python", "-m", "ttexp", "-m"] and "sweep.resume=true" in args
    again = run_cli(args[3:])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Jobs: 2 (2 completed)" in (sweep / "experiments.md").read_text()
    assert losses(sweep / "0") == losses(single_uninterrupted)  # exactly
    assert losses(sweep / "1") == losses(warmup2_uninterrupted)  # skipped: untouched
