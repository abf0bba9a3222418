"""Data parallelism on torch.distributed: same curve as one process, one record, no hangs."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from conftest import TINY, log_to, run_cli, run_in_process, start_cli

pytestmark = pytest.mark.slow

# Dropout off and fp32: then the only difference between one process and two ranks is the order
# of floating-point sums (a mean over 8 rows vs the mean of two means over 4 rows, and gloo's
# all-reduce). That perturbs the loss around 1e-7 relative per step; AdamW normalises each update
# by the gradient's running RMS, which can amplify such noise where a gradient is near zero, so
# after 12 steps we allow 2e-4 absolute on a loss of ~5, far below the step-to-step change (~1e-2).
TOLERANCE = 2e-4
BASE = [TINY, "training.precision=fp32", "training.max_steps=12", "training.batch_size=8",
        "training.gradient_accumulation_steps=2", "training.warmup_steps=2", "training.learning_rate=3e-3",
        "training.validation_frequency=6", "training.validation_batches=3", "training.checkpoint_frequency=6"]


def curve(run_dir: Path, key: str = "train/loss") -> dict[int, float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in rows if key in r}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus):
    """The same run three ways: one process (n150 and n300 presets, run here, the log kept as
    console.txt) and two gloo ranks (the real command line and its launcher)."""
    root = tmp_path_factory.mktemp("ddp")
    for name, extra in {"n150": ["hardware=n150"], "n300_one_process": ["hardware=n300"]}.items():
        (root / name).mkdir()
        with log_to(root / name / "console.txt"):
            result = run_in_process([*BASE, *extra, f"data.path={corpus}"], root / name)
        assert result["status"] == "completed", result["error"]
    name = "n300_two_ranks"
    proc = run_cli([*BASE, "hardware=n300", "hardware.processes=2", f"data.path={corpus}",
                    f"hydra.run.dir={root}/{name}"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (root / name / "console.txt").write_text(proc.stdout + proc.stderr)
    return {name: root / name for name in ("n150", "n300_one_process", "n300_two_ranks")}


def test_two_gloo_ranks_match_one_process_with_accumulation(runs):
    one, two = curve(runs["n150"]), curve(runs["n300_two_ranks"])
    assert sorted(one) == sorted(two) == list(range(1, 13))
    for step in one:
        assert two[step] == pytest.approx(one[step], abs=TOLERANCE), step
    assert one[12] < one[1] - 0.1  # and it is a real curve, not a flat line
    v1, v2 = curve(runs["n150"], "val/loss"), curve(runs["n300_two_ranks"], "val/loss")
    assert sorted(v1) == sorted(v2) == [6, 12]
    for step in v1:
        assert v2[step] == pytest.approx(v1[step], abs=TOLERANCE)


def test_n150_and_n300_presets_give_the_same_curve(runs):
    # In one process the n300 mesh splits the same global batch into shards that are computed
    # together: the arithmetic is the same, so the curves are identical.
    assert curve(runs["n300_one_process"]) == curve(runs["n150"])


def test_the_plan_says_how_the_mesh_is_run(runs):
    two = (runs["n300_two_ranks"] / "console.txt").read_text()
    assert "Device mesh: [1, 2] (hardware=n300, data parallel)" in two
    assert "Batch size: 8 (per-device: 4) x gradient accumulation 2 = effective batch 16" in two
    assert "2 torch ranks, 4 sequences each per micro-step" in two
    one = (runs["n300_one_process"] / "console.txt").read_text()
    assert "torch runs the 2 data-parallel shards in one process" in one


def test_a_two_rank_run_writes_its_record_once(runs):
    d = runs["n300_two_ranks"]
    assert sorted(p.name for p in d.parent.iterdir()) == ["n150", "n300_one_process", "n300_two_ranks"]
    assert not list(d.rglob(".hydra/*/.hydra")) and len(list(d.rglob(".hydra"))) == 1
    console = (d / "console.txt").read_text()
    assert console.count("Final training loss:") == 1
    log = (d / "training.log").read_text()
    assert log.count("Final training loss:") == 1 and log.count("Step 12/12") == 1
    assert len((d / "metrics.jsonl").read_text().splitlines()) == 12 + 2
    assert (d / "validation.txt").read_text().count("=== Step ") == 2
    result = json.loads((d / "result.json").read_text())
    assert result["status"] == "completed" and result["plan"]["processes"] == 2
    assert (d / "checkpoints" / "step_12" / "model.safetensors").is_file()


def _rank_pids(parent: int, rank: str) -> list[int]:
    """PIDs of descendants of ``parent`` whose environment has RANK=rank."""
    out = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"TORCHELASTIC_RUN_ID" in b"".join(env):
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            while ppid > 1 and ppid != parent:
                try:
                    ppid = int(Path(f"/proc/{ppid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except OSError:
                    break
            if ppid == parent:
                out.append(pid)
    return out


def test_a_dead_rank_ends_the_run_with_its_error(tmp_path, corpus):
    out = tmp_path / "run"
    args = [*BASE, "hardware=n300", "hardware.processes=2", "training.max_steps=100000",
            "training.validation_frequency=0", "training.checkpoint_frequency=0",
            f"data.path={corpus}", f"hydra.run.dir={out}"]
    proc = start_cli(args)
    deadline = time.time() + 120
    while not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().count("\n") >= 2):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
    pids = _rank_pids(proc.pid, "1")
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    killed = time.time()
    output, _ = proc.communicate(timeout=60)
    assert time.time() - killed < 30, "the run did not end promptly after a rank died"
    assert proc.returncode == 1, output
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "failed"
    assert "rank 1" in result["error"] and "SIGKILL" in result["error"]
    assert "rank 1" in output


def test_ctrl_c_on_a_multi_rank_run_checkpoints_and_records_interrupted(tmp_path, corpus):
    out = tmp_path / "run"
    args = [*BASE, "hardware=n300", "hardware.processes=2", "training.max_steps=100000",
            "training.validation_frequency=0", "training.checkpoint_frequency=0",
            f"data.path={corpus}", f"hydra.run.dir={out}"]
    proc = start_cli(args)
    deadline = time.time() + 120
    while not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().count("\n") >= 2):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # to the controller only, as `kill -INT` would
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 130, output
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "interrupted", result
    step = result["steps_done"]
    assert (out / "checkpoints" / f"step_{step}" / "model.safetensors").is_file()
    assert "resume=auto" in result["error"] and "Traceback" not in output
