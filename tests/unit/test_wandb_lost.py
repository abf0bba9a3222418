"""A lost run's W&B run closed as lost (ttexp.record.wandb_lost): never fails its caller, once per
lost start. The offline round trip read back with W&B's reader is tests/integration/test_wandb.py."""

from __future__ import annotations

import json
import logging
import sys

from ttexp.record.liveness import RunLease
from ttexp.record.result import RunResult
from ttexp.record.wandb_lost import LOST_MARK, close_lost_wandb_run


def _lost_run(tmp_path, **wandb):
    (tmp_path / "wandb").mkdir()
    (tmp_path / "checkpoints/step_5").mkdir(parents=True)
    (tmp_path / "checkpoints/step_5/manifest.json").write_text("{}")
    (tmp_path / "metrics.jsonl").write_text('{"step": 7, "train/loss": 3.0}\n{"step": 8, "tra')
    return RunResult(status="running", wandb=wandb or None)


def test_a_missing_wandb_is_one_warning_and_is_not_tried_again(tmp_path, monkeypatch, caplog):
    result = _lost_run(tmp_path, id="abc", mode="offline", project="p")
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with caplog.at_level(logging.WARNING, logger="ttexp"):
        said = close_lost_wandb_run(tmp_path, result, "its process is gone")
    assert said.startswith("Could not mark W&B run abc lost (ModuleNotFoundError") and str(LOST_MARK) in said
    assert len(caplog.records) == 1
    mark = json.loads((tmp_path / LOST_MARK).read_text())
    assert mark["last_step"] == 7 and mark["last_checkpoint"] == "step_5" and "ModuleNotFoundError" in mark["error"]
    assert close_lost_wandb_run(tmp_path, result, "again") is None  # once per lost start


def test_nothing_to_do_without_a_wandb_run_or_while_the_directory_is_held(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert close_lost_wandb_run(tmp_path, RunResult(status="running")) is None
    assert close_lost_wandb_run(tmp_path, _lost_run(tmp_path, id="abc", mode="disabled")) is None
    lease = RunLease.acquire(tmp_path)  # a resume has begun: it owns the W&B run now
    try:
        assert close_lost_wandb_run(tmp_path, RunResult(status="running",
                                                        wandb={"id": "abc", "mode": "offline"})) is None
    finally:
        lease.release()
    assert not (tmp_path / LOST_MARK).exists()
