"""A tokenised text corpus split into training and validation, with seeded, resumable sampling.

Training batches are random windows of ``seq_len + 1`` tokens from the training split. The
offsets for optimizer step ``s`` and micro-step ``m`` come from a generator seeded with
``(seed, s, m)``, so the data order depends only on the step: resuming at step ``s`` needs no saved
sampler state, and every data-parallel rank can draw the same global batch and take its own rows.

Validation is deterministic: consecutive windows over the validation split, each token predicted
once, the same for every run, so validation losses are comparable across runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ttexp.data.batch import Batch
from ttexp.errors import DataError
from ttexp.models.tokenizer import ByteTokenizer, TextTokenizer


def tokenize_corpus(path: Path, tokenizer: TextTokenizer) -> np.ndarray:
    """Read a UTF-8 text file and return its token ids as a 1-D int64 array.

    Raises:
        DataError: the file is empty or not valid UTF-8.
    """
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"The corpus {path} is empty. Point data.path at a text file with content.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"The corpus {path} is not valid UTF-8 (byte {exc.start}): save it as UTF-8."
        ) from None
    if isinstance(tokenizer, ByteTokenizer):
        return np.frombuffer(raw, dtype=np.uint8).astype(np.int64)
    return np.asarray(tokenizer.encode(text), dtype=np.int64)


class TextData:
    """Train/validation split of one token stream.

    Args:
        tokens: 1-D int array, the whole corpus.
        seq_len: tokens per training sequence (``model.max_seq_len``).
        val_fraction: share of the stream, taken from its end, held out for validation.
        seed: seeds the training-window offsets (see module docstring).

    Raises:
        DataError: either split is shorter than one sequence plus its next-token target.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, val_fraction: float, seed: int):
        # nanoGPT's split: the first int(0.9 n) tokens train (1,003,854 of Tiny Shakespeare).
        n_train = int(len(tokens) * (1.0 - val_fraction))
        n_val = len(tokens) - n_train
        self.train = tokens[:n_train]
        self.val = tokens[n_train:]
        self.seq_len = seq_len
        self.seed = seed
        need = seq_len + 1
        for split, arr in (("training", self.train), ("validation", self.val)):
            if len(arr) < need and (split == "training" or n_val > 0):
                raise DataError(
                    f"The {split} split has {len(arr):,} tokens, fewer than one sequence of "
                    f"model.max_seq_len={seq_len} plus its target ({need:,}). Use a longer corpus "
                    "or a smaller model.max_seq_len."
                )

    def train_batch(self, step: int, micro_step: int, batch_size: int) -> Batch:
        """The global batch for (optimizer ``step``, ``micro_step``): ``batch_size`` windows."""
        rng = np.random.default_rng([self.seed, step, micro_step])
        starts = rng.integers(0, len(self.train) - self.seq_len, size=batch_size)
        windows = self.train[starts[:, None] + np.arange(self.seq_len + 1)]
        # The one and only shift: position t is trained to predict token t + 1.
        return Batch(inputs=windows[:, :-1], labels=windows[:, 1:])

    def format_prompt(self, text: str) -> str:
        """Generation prompts are given to the model as they are."""
        return text

    @property
    def num_val_windows(self) -> int:
        return max(0, (len(self.val) - 1) // self.seq_len)

    def val_batches(self, batch_size: int, max_batches: Optional[int] = None) -> Iterator[Batch]:
        """Consecutive validation windows (stride ``seq_len``), ``batch_size`` per batch."""
        n = self.num_val_windows
        starts = np.arange(n) * self.seq_len
        for i, first in enumerate(range(0, n, batch_size)):
            if max_batches is not None and i >= max_batches:
                return
            s = starts[first : first + batch_size]
            windows = self.val[s[:, None] + np.arange(self.seq_len + 1)]
            yield Batch(inputs=windows[:, :-1], labels=windows[:, 1:])
