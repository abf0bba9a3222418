"""Host-side arrays for the ttml backend: batch layout, tile padding, masks (pure NumPy).

Everything here is what tt-train's examples build on the host before ``Tensor.from_numpy``
(reference/ttml_api.md §4 "Tensors"; ``nb_util.cpp`` @ 28fa47762d3f8bed76e3b805b74576f8899fa576):
element width must be 32 bits (int64/float64 arrays raise "Unsupported precision"), inputs are
``uint32 [B, 1, 1, T]``, targets ``uint32 [B, T]``, the causal mask ``float32 [1, 1, T, T]``
(uploaded as bf16 TILE), the fine-tuning loss mask ``[B, 1, T, 1]``. ttml tiles are 32 x 32, so
``T`` is padded up to a multiple of 32 here; padded positions are masked out of the loss and,
being at the end, are never attended to by real positions under the causal mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ttexp.data.batch import IGNORE_INDEX, Batch
from ttexp.errors import TtexpError
from ttexp.models.ttml_weights import round_up_to_tile

PADDED_LOGIT_OFFSET = 1e4
"""Subtracted from the logits of padded vocabulary entries (tt-train's ``build_logits_mask``,
``ttml/common/utils.py``): softmax gives them probability exp(-1e4) = 0 even in bf16."""


@dataclass
class TtmlBatch:
    """One micro-batch laid out as ttml expects.

    Attributes:
        inputs: ``uint32 [B, 1, 1, T]``, T a multiple of 32 (pad id 0 past the data).
        targets: ``uint32 [B, T]`` next-token ids (0 where no loss is taken).
        loss_mask: ``float32 [B, 1, T, 1]`` scaled so that ``mean(ce * loss_mask)`` is the mean
            over counted tokens, i.e. it sums to ``B * T``; None when every position counts
            (then the plain MEAN reduction gives the same number).
        num_tokens: positions that count towards the loss.
    """

    inputs: np.ndarray
    targets: np.ndarray
    loss_mask: np.ndarray | None
    num_tokens: int

    @property
    def seq_len(self) -> int:
        return int(self.inputs.shape[-1])


def layout_batch(batch: Batch, vocab_size: int) -> TtmlBatch:
    """Lay out a loop :class:`~ttexp.data.batch.Batch` for ttml.

    Args:
        batch: inputs and (already shifted) labels ``[B, T]``; ``IGNORE_INDEX`` labels carry no loss.
        vocab_size: the real vocabulary (ids must be below it).

    Raises:
        TtexpError: an id is negative or not below ``vocab_size``, or no position counts.
    """
    x = np.asarray(batch.inputs)
    y = np.asarray(batch.labels)
    if x.shape != y.shape or x.ndim != 2:
        raise TtexpError(f"A batch must have inputs and labels of one shape [B, T]; got "
                         f"{x.shape} and {y.shape}.")
    counted = y != IGNORE_INDEX
    for what, ids in (("input", x), ("label", y[counted])):
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise TtexpError(f"A batch holds {what} ids outside [0, {vocab_size}); the tokenizer "
                             "does not match model.vocab_size.")
    b, t = x.shape
    tp = round_up_to_tile(t)
    inputs = np.zeros((b, 1, 1, tp), dtype=np.uint32)
    inputs[:, 0, 0, :t] = x
    targets = np.zeros((b, tp), dtype=np.uint32)
    targets[:, :t] = np.where(counted, y, 0)
    n = int(counted.sum())
    if n == 0:
        raise TtexpError("A batch has no labelled tokens (every label is ignored); check the data.")
    mask = None
    if n != b * tp:
        m = np.zeros((b, tp), dtype=np.float32)
        m[:, :t] = counted
        mask = (m * (b * tp / n)).reshape(b, 1, tp, 1).astype(np.float32)
    return TtmlBatch(inputs, targets, mask, n)


def causal_mask(seq_len: int) -> np.ndarray:
    """``float32 [1, 1, T, T]``, 1 where position i may attend to j <= i (``build_causal_mask``)."""
    return np.tril(np.ones((seq_len, seq_len), dtype=np.float32)).reshape(1, 1, seq_len, seq_len)


def kv_cache_mask(query_len: int, cached_len: int) -> np.ndarray:
    """Mask for a KV-cached forward of ``query_len`` new tokens after ``cached_len`` cached ones.

    Returns ``float32 [1, 1, pad(q), pad(cached + q)]`` with row i open on columns
    ``0 .. cached_len + i`` (tt-train ``ttml/common/generate.py``, ``create_causal_mask_kv_cache``,
    @ 216e94b1d8493d157ec8c0032faf1e6679a2e115).
    """
    rows, cols = round_up_to_tile(query_len), round_up_to_tile(cached_len + query_len)
    m = np.zeros((rows, cols), dtype=np.float32)
    for i in range(query_len):
        m[i, : cached_len + i + 1] = 1.0
    return m.reshape(1, 1, rows, cols)


def padded_tokens(tokens: list[int]) -> np.ndarray:
    """``uint32 [1, 1, 1, pad(n)]``: one sequence, zero-padded to the tile."""
    out = np.zeros((1, 1, 1, round_up_to_tile(max(1, len(tokens)))), dtype=np.uint32)
    out[0, 0, 0, : len(tokens)] = tokens
    return out


def logits_padding_mask(vocab_size: int, padded_vocab_size: int) -> np.ndarray | None:
    """``float32 [1, 1, 1, V_pad]``: ``PADDED_LOGIT_OFFSET`` on padded entries, 0 elsewhere;
    None when the vocabulary needs no padding."""
    if padded_vocab_size == vocab_size:
        return None
    m = np.zeros((1, 1, 1, padded_vocab_size), dtype=np.float32)
    m[..., vocab_size:] = PADDED_LOGIT_OFFSET
    return m
