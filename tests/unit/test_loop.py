"""The loop's own arithmetic and guards, on stand-in backends (no model needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import compose_cfg
from ttexp.data.batch import IGNORE_INDEX, Batch
from ttexp.backends.base import StepStats
from ttexp.errors import Diverged
from ttexp.train.loop import TrainingLoop
from ttexp.train.ranks import Ranks
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


# Two micro-batches of padded prompt/response data: 3 + 1 scored tokens, then 2 + 0.
LABELS = [np.array([[1, 2, 3, IGNORE_INDEX], [4, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]),
          np.array([[5, 6, IGNORE_INDEX, IGNORE_INDEX], [IGNORE_INDEX] * 4])]
TOKEN_LOSS = {1: 1.0, 2: 2.0, 3: 3.0, 4: 10.0, 5: 4.0, 6: 6.0}  # a loss per scored label


class PaddedPairs(OneBatch):
    def train_batch(self, step, micro_step, batch_size):
        labels = LABELS[micro_step]
        return Batch(np.zeros_like(labels), labels)


class Recorder:
    """Stands in for a backend: the loss it back-propagates is (shard mean) x loss_scale."""

    def __init__(self):
        self.step_loss = 0.0

    def micro_step(self, batch, loss_scale):
        scored = [TOKEN_LOSS[int(x)] for x in batch.labels.ravel() if x != IGNORE_INDEX]
        self.step_loss += float(np.mean(scored)) * loss_scale

    def optimizer_step(self, lr, max_grad_norm):
        loss, self.step_loss = self.step_loss, 0.0
        return StepStats(loss=loss, grad_norm=1.0)


def loop_for(tmp_path, backend, ranks=None, data=None, *overrides):
    cfg = compose_cfg(["training.warmup_steps=0", "training.max_steps=10", *overrides], tmp_path)
    return TrainingLoop(cfg, make_plan(cfg), backend, data or OneBatch(), None, NullRecord(tmp_path),
                        ranks or Ranks.single())


def test_a_nan_validation_loss_stops_the_run_as_diverged(tmp_path):
    with pytest.raises(Diverged, match="Validation loss at step 3 is nan"):
        loop_for(tmp_path, NaNValidation()).validate(3)


TOKEN_MEAN = (1 + 2 + 3 + 10 + 4 + 6) / 6


@pytest.mark.parametrize("world_size", [1, 2])
def test_the_step_loss_is_the_mean_over_every_scored_token_of_the_step(tmp_path, world_size):
    """The loss of a step is normalised by the scored tokens of all its micro-steps and ranks
    (rank 1's second shard has none), not by each micro-batch or each shard on its own."""
    losses = []
    for rank in range(world_size):
        loop = loop_for(tmp_path, Recorder(), Ranks(rank=rank, world_size=world_size), PaddedPairs(),
                        "training.gradient_accumulation_steps=2", "training.batch_size=2")
        stats, _, _ = loop.train_step(0)
        losses.append(stats.loss)
    assert np.mean(losses) == pytest.approx(TOKEN_MEAN)  # the ranks' all-reduce average
    per_micro_batch = ((1 + 2 + 3 + 10) / 4 + (4 + 6) / 2) / 2  # what 1/accumulation gave
    assert not math.isclose(TOKEN_MEAN, per_micro_batch)
