"""The byte tokenizer round-trips UTF-8 and its transformers form encodes identically."""

from __future__ import annotations

import numpy as np

from ttexp.models.tokenizer import ByteTokenizer, build_hf_byte_tokenizer, byte_to_unicode

TEXT = "ROMEO:\nBut soft!  What light through yonder window breaks?\té — 日本語 🙂\r\n"


def test_byte_tokenizer_round_trips_any_utf8():
    tok = ByteTokenizer()
    ids = tok.encode(TEXT)
    assert ids == list(TEXT.encode("utf-8")) and max(ids) < 256
    assert tok.decode(ids) == TEXT
    assert np.array_equal(tok.encode_array(TEXT), np.frombuffer(TEXT.encode(), dtype=np.uint8))


def test_invalid_bytes_decode_with_replacement_instead_of_raising():
    assert ByteTokenizer().decode([0xFF, 65]) == "\ufffdA"


def test_byte_map_is_a_bijection_onto_printable_characters():
    m = byte_to_unicode()
    assert len(set(m.values())) == 256
    assert all(ch.isprintable() and not ch.isspace() for ch in m.values())


def test_transformers_tokenizer_saves_loads_and_matches(tmp_path):
    from transformers import AutoTokenizer

    build_hf_byte_tokenizer().save_pretrained(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert hf.encode(TEXT) == list(TEXT.encode("utf-8"))
    assert hf.decode(hf.encode(TEXT)) == TEXT
    assert len(hf) == 256
