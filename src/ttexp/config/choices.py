"""The fixed choices of the run config (Enums, since OmegaConf 2.3 rejects ``Literal``).

:mod:`ttexp.config.schema` re-exports each one; import them from there.
"""

from __future__ import annotations

from enum import Enum


class Backend(Enum):
    """Which training backend runs the model."""

    auto = "auto"  # ttml when it imports and a device opens, else torch (CUDA, else CPU)
    torch = "torch"
    ttml = "ttml"


class TaskName(Enum):
    scratch = "scratch"  # train a randomly initialised model on a text corpus
    finetune = "finetune"  # continue training pretrained weights on prompt/response pairs
    eval = "eval"  # evaluate (and compare) trained models


class Precision(Enum):
    auto = "auto"  # bf16 autocast where the device computes bf16 natively, else fp32
    fp32 = "fp32"
    bf16 = "bf16"  # bf16 autocast, fp32 master weights and optimizer state


class SchedulerName(Enum):
    constant = "constant"  # the lessons' "identity": the peak learning rate throughout
    warmup_cosine = "warmup_cosine"  # linear warmup from 0, cosine decay to min_lr_ratio * peak
    warmup_linear = "warmup_linear"  # linear warmup from 0, linear decay to min_lr_ratio * peak


class DataFormat(Enum):
    text = "text"  # one plain-text corpus, tokenised as a stream and split 90/10
    jsonl = "jsonl"  # prompt/response pairs, one JSON object per line
