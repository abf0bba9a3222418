"""Failed runs: one clear message, a non-zero exit, and a result.json that says why."""

from __future__ import annotations

import json

import pytest

from conftest import TINY, run_cli, run_in_process

pytestmark = pytest.mark.slow


def test_missing_data_file_fails_cleanly(tmp_path):
    out = tmp_path / "run"
    proc = run_cli([TINY, f"data.path={tmp_path}/nope.txt", f"hydra.run.dir={out}"])
    assert proc.returncode == 1
    console = proc.stdout + proc.stderr
    assert "does not exist or is not a file" in console and "Traceback" not in console
    r = json.loads((out / "result.json").read_text())
    assert r["status"] == "failed" and "nope.txt" in r["error"]


def test_divergence_is_recorded_as_diverged(tmp_path, corpus):
    r = run_in_process([TINY, f"data.path={corpus}", "training.max_steps=30",
                        "training.batch_size=2", "training.warmup_steps=0", "training.learning_rate=1e6",
                        "training.use_clip_grad_norm=false", "training.precision=fp32",
                        "training.validation_frequency=0", "training.checkpoint_frequency=0"],
                       tmp_path / "run")
    assert r["status"] == "diverged"
    assert "Training diverged at step" in r["error"] and "last good checkpoint" in r["error"]
