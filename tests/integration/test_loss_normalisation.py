"""A step's loss is the mean over every scored token of the step (all micro-steps, all ranks), so
how the effective batch is split does not change training, even on padded prompt/response data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_in_process

FINETUNE = ["task=finetune", "data=trickster", "training.max_steps=3", "training.warmup_steps=0",
            "training.learning_rate=3e-3", "training.validation_frequency=0",
            "training.checkpoint_frequency=0", "training.validation_batches=1",
            "generation.max_new_tokens=2", "model.dropout=0.0", "training.precision=fp32"]


def train_losses(run_dir: Path) -> list[float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


def test_batch_8_x_accumulation_4_trains_as_batch_32(tmp_path, tiny_llama_dir):
    runs = {}
    for batch, accumulation in ((8, 4), (32, 1)):
        out = tmp_path / f"b{batch}x{accumulation}"
        result = run_in_process([*FINETUNE, f"model.pretrained_path={tiny_llama_dir}",
                                 f"training.batch_size={batch}",
                                 f"training.gradient_accumulation_steps={accumulation}"], out)
        assert result["status"] == "completed", result["error"]
        runs[batch] = train_losses(out)
    assert len(runs[8]) == 3
    # Micro-batches of 8 are padded to their own longest example and the batch of 32 to its: the
    # scored tokens are the same, so the per-step losses (and the updates) agree to float error.
    assert runs[8] == pytest.approx(runs[32], rel=1e-5, abs=1e-6)
