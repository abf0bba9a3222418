"""The loop's own arithmetic and guards, on stand-in backends (no model needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import compose_cfg
from ttexp.data.batch import IGNORE_INDEX, Batch
from ttexp.train.loop import Diverged, TrainingLoop
from ttexp.train.plan import make_plan
from ttexp.record.run_record import NullRecord


class NaNValidation:
    device = "cpu"

    def evaluate(self, batches):
        list(batches)
        return float("nan")


class OneBatch:
    def val_batches(self, batch_size, max_batches=None):
        yield Batch(np.zeros((2, 4), dtype=np.int64), np.zeros((2, 4), dtype=np.int64))

    def format_prompt(self, prompt):
        return prompt


def loop_for(tmp_path, backend, processes=1, rank=0, *overrides):
    cfg = compose_cfg(["training.warmup_steps=0", "training.max_steps=10", *overrides], tmp_path)
    plan = make_plan(cfg)
    plan.processes, plan.rank = processes, rank
    return TrainingLoop(cfg, plan, backend, OneBatch(), None, NullRecord(tmp_path))


def test_a_nan_validation_loss_stops_the_run_as_diverged(tmp_path):
    with pytest.raises(Diverged, match="Validation loss at step 3 is nan"):
        loop_for(tmp_path, NaNValidation()).validate(3)


def test_ranks_weight_their_loss_by_their_share_of_scored_tokens(tmp_path):
    """Two ranks: rank 0 holds 3 scored tokens, rank 1 holds 1 (the rest is padding). The mean of
    (scale x shard mean) over the ranks must equal the token mean over the whole micro-batch."""
    labels = np.array([[1, 2, 3, IGNORE_INDEX], [4, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    batch = Batch(np.zeros_like(labels), labels)
    token_loss = np.array([[1.0, 2.0, 3.0, 0.0], [10.0, 0.0, 0.0, 0.0]])
    combined = 0.0
    for rank in (0, 1):
        loop = loop_for(tmp_path, NaNValidation(), 2, rank, "training.gradient_accumulation_steps=1")
        shard = batch.shard(rank, 2)
        mask = shard.labels != IGNORE_INDEX
        shard_mean = token_loss[rank][mask[0]].mean()
        combined += loop._loss_scale(batch, shard) * shard_mean / 2  # the all-reduce average
    assert combined == pytest.approx((1 + 2 + 3 + 10) / 4)
    assert not math.isclose(combined, (2.0 + 10.0) / 2)  # the naive mean of the ranks' means


def test_one_process_scale_is_one_over_accumulation(tmp_path):
    loop = loop_for(tmp_path, NaNValidation(), 1, 0, "training.gradient_accumulation_steps=4")
    b = Batch(np.zeros((2, 2), dtype=np.int64), np.ones((2, 2), dtype=np.int64))
    assert loop._loss_scale(b, b) == 0.25
