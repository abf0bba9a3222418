"""The loop really learns: a periodic sequence to near-zero loss, reproduced by greedy decoding.

If labels were shifted twice (the lessons' train_from_scratch.py bug), the model would learn to
predict the token two ahead: the loss would still fall, but greedy generation would skip every
other symbol, which this test catches.
"""

from __future__ import annotations

import json

import pytest

from conftest import TINY, run_in_process

pytestmark = pytest.mark.slow

PERIOD = "0123456789abcdef\n"


def test_periodic_sequence_is_learned_and_reproduced(tmp_path):
    corpus = tmp_path / "periodic.txt"
    corpus.write_text(PERIOD * 400)
    result = run_in_process([
        TINY, f"data.path={corpus}", "training.max_steps=150", "training.batch_size=8",
        "training.learning_rate=1e-2", "training.warmup_steps=10", "training.validation_frequency=150",
        "training.validation_batches=null", "training.checkpoint_frequency=0", "training.log_frequency=20",
        "generation.prompts=[0123]", "generation.temperature=0", "generation.max_new_tokens=40",
    ], tmp_path / "run")
    assert result["status"] == "completed", result["error"]
    assert result["final_val_loss"] < 0.05
    block = (tmp_path / "run" / "validation.txt").read_text().split("--- Prompt: 0123\n")[1]
    generated = block.splitlines(keepends=True)
    text = "".join(generated)[: 4 + 40]
    expected = (PERIOD * 4)[: 4 + 40]
    assert text == expected
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["train/loss"] > 2.0  # it started from chance
