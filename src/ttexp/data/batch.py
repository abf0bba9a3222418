"""The batch that crosses the loop/backend seam."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -100
"""Label value that contributes no loss (PyTorch's cross_entropy default ignore_index)."""


@dataclass
class Batch:
    """One micro-batch, already shifted: ``labels[b, t]`` is the token that follows ``inputs[b, t]``.

    Attributes:
        inputs: int64 token ids, shape ``[B, T]``.
        labels: int64 next-token targets, shape ``[B, T]``; ``IGNORE_INDEX`` where no loss is taken
            (prompt and padding positions when fine-tuning).
        attention_mask: optional int64 ``[B, T]``, 1 for real tokens and 0 for right padding.
    """

    inputs: np.ndarray
    labels: np.ndarray
    attention_mask: np.ndarray | None = None

    @property
    def num_tokens(self) -> int:
        """Input tokens in the batch (padding included): ``B * T``."""
        return int(self.inputs.size)

    def shard(self, rank: int, world_size: int) -> "Batch":
        """Rows ``[rank * B/world, (rank+1) * B/world)``; B must divide by ``world_size``."""
        rows = self.inputs.shape[0] // world_size
        sl = slice(rank * rows, (rank + 1) * rows)
        mask = None if self.attention_mask is None else self.attention_mask[sl]
        return Batch(self.inputs[sl], self.labels[sl], mask)
