"""The run-directory lease: one holder (its pid and host named to a second), a heartbeat, ``lost``
for a running record whose writer is gone, and the sweep of half-written temporary files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from ttexp.errors import RunDirBusy, exit_code
from ttexp.record.liveness import (
    HEARTBEAT_NAME,
    RunLease,
    busy_message,
    hold_rank_lock,
    last_state,
    liveness,
)


def test_a_held_directory_is_refused_with_the_holders_pid_and_host(tmp_path):
    lease = RunLease.acquire(tmp_path)
    try:
        with pytest.raises(RunDirBusy) as exc:
            RunLease.acquire(tmp_path)
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in str(exc.value)
        assert exc.value.exit_code == exit_code("usage") == 2
        assert busy_message(tmp_path) == str(exc.value)
    finally:
        lease.release()
    assert busy_message(tmp_path) is None
    RunLease.acquire(tmp_path).release()  # free again


def test_a_live_rank_of_an_earlier_run_blocks_a_new_run(tmp_path):
    rank = hold_rank_lock(tmp_path, 1)
    with pytest.raises(RunDirBusy, match="rank of an earlier run .pid"):
        RunLease.acquire(tmp_path)
    rank.release()
    RunLease.acquire(tmp_path).release()


def test_running_is_lost_when_the_pid_is_gone_or_the_heartbeat_stale(tmp_path):
    lease = RunLease.acquire(tmp_path)
    lease.release()
    assert liveness(tmp_path, "running").status == "running"  # this process: alive, fresh
    assert liveness(tmp_path, "completed").status == "completed"
    beat = json.loads((tmp_path / HEARTBEAT_NAME).read_text())
    stale = liveness(tmp_path, "running", now=beat["time"] + 61)
    assert stale.status == "lost" and "no heartbeat for 61 s" in stale.reason
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / HEARTBEAT_NAME).write_text(json.dumps({**beat, "pid": int(dead)}))
    lost = liveness(tmp_path, "running")
    assert lost.status == "lost" and f"pid {dead} on {socket.gethostname()}" in lost.reason
    (tmp_path / HEARTBEAT_NAME).write_text(json.dumps({**beat, "pid": int(dead), "host": "elsewhere",
                                                       "time": time.time()}))
    assert liveness(tmp_path, "running").status == "running"  # another host's pid: trust the time


def test_the_lease_sweeps_half_written_files_and_keeps_the_rest(tmp_path):
    ckpts = tmp_path / "checkpoints"
    (ckpts / "step_3").mkdir(parents=True)
    (ckpts / "step_3" / "manifest.json").write_text("{}")
    (ckpts / ".tmp-step_6-x1").mkdir()
    (ckpts / ".best.tmp").write_text("")
    (tmp_path / ".result.json.ab.tmp").write_text("{")
    (tmp_path / "metrics.jsonl").write_text('{"step": 4}\n{"st')
    RunLease.acquire(tmp_path).release()
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if "ttexp" not in p.name)
    assert left == ["checkpoints", "checkpoints/step_3", "checkpoints/step_3/manifest.json",
                    "heartbeat.json", "metrics.jsonl"]
    assert last_state(tmp_path) == "last logged step 4, last checkpoint step_3"


def test_a_sweep_table_shows_a_dead_running_job_as_lost_and_the_jobs_not_started(tmp_path):
    import yaml

    from ttexp.sweeps.summarize import collect_sweep, render_sweep

    sweep = tmp_path / "sweep"
    job = sweep / "0"
    (job / ".hydra").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {
        "hydra": ["hydra.mode=MULTIRUN"], "task": ["training.learning_rate=1e-4,3e-4,1e-3"]}}}))
    (job / ".hydra/overrides.yaml").write_text(yaml.safe_dump(["training.learning_rate=1e-4"]))
    (job / "result.json").write_text(json.dumps({"status": "running",
                                                 "overrides": ["training.learning_rate=1e-4"]}))
    (job / "metrics.jsonl").write_text('{"step": 7, "train/loss": 4.0}\n')
    (job / HEARTBEAT_NAME).write_text(json.dumps({"pid": 2**22 + 7, "host": socket.gethostname(),
                                                  "time": time.time()}))
    text = render_sweep(collect_sweep(sweep), sweep)
    assert "- Jobs: 1 of 3 started (1 lost)" in text
    assert "**lost**: its process (pid 4194311" in text and "last logged step 7" in text
    assert "sweep.resume=true" in text
