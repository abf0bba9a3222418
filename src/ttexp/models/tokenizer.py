"""Tokenizers: the byte-level tokenizer (ids = UTF-8 byte values) and pretrained ones.

The byte tokenizer needs no training and round-trips any UTF-8 text: token id ``b`` is the byte
``b``. For the training data path we encode with NumPy directly (fast, no Python per byte); for
``final_model/`` we save an equivalent ``transformers`` fast tokenizer (a byte-level BPE with no
merges, the GPT-2 byte-to-character map) so that ``AutoTokenizer.from_pretrained`` loads it and
encodes to exactly the same ids.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol

import numpy as np


class TextTokenizer(Protocol):
    """What the data pipeline and generation need from a tokenizer."""

    vocab_size: int
    eos_token_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens: vocabulary 256, no special tokens."""

    vocab_size = 256
    eos_token_id = None

    def encode(self, text: str) -> list[int]:
        """Token ids (bytes, each in [0, 256)) of ``text``'s UTF-8 encoding."""
        return list(text.encode("utf-8"))

    def encode_array(self, text: str) -> np.ndarray:
        """Encode to a uint8 array of shape ``[len(text.encode())]`` without a Python loop."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    def decode(self, ids: list[int]) -> str:
        """Decode, replacing byte sequences that are not valid UTF-8 (a model may emit them)."""
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def to_transformers(self) -> Any:
        """An equivalent ``transformers.PreTrainedTokenizerFast`` for saving with a model."""
        return build_hf_byte_tokenizer()


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters.

    Printable Latin-1 bytes map to themselves; the rest to code points from 256 up, so no byte
    maps to whitespace or a control character (Radford et al. 2019, GPT-2's encoder).
    """
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    mapping, extra = {}, 0
    for b in range(256):
        if b in keep:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def build_hf_byte_tokenizer() -> Any:
    """Build a ``PreTrainedTokenizerFast`` whose ids are the UTF-8 bytes of the text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: b for b, ch in byte_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False)
