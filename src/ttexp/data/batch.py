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

    @property
    def num_scored(self) -> int:
        """Positions that carry a loss (labels other than ``IGNORE_INDEX``): what the loss of a
        step is normalised by."""
        return int((self.labels != IGNORE_INDEX).sum())

    def rows(self, rank: int, world_size: int) -> "Batch":
        """Block ``rank`` of ``world_size`` contiguous blocks of rows (``numpy.array_split``
        order). Training batches divide evenly (validated); a last validation batch may leave a
        block with fewer rows, or none."""
        if world_size == 1:
            return self
        bounds = np.linspace(0, self.inputs.shape[0], world_size + 1).round().astype(int)
        sl = slice(bounds[rank], bounds[rank + 1])
        mask = None if self.attention_mask is None else self.attention_mask[sl]
        return Batch(self.inputs[sl], self.labels[sl], mask)
