"""Corpus lookup, the 90/10 split, one shift of the labels, seeded sampling, clear data errors."""

from __future__ import annotations


import numpy as np
import pytest

from ttexp.config.schema import DataConfig
from ttexp.files import sha256_of
from ttexp.data.corpus import cache_dir, resolve_corpus, search_paths
from ttexp.data.text import TextData, tokenize_corpus
from ttexp.errors import DataError
from ttexp.models.tokenizer import ByteTokenizer

SHA = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def data_cfg(**kw):
    return DataConfig(**{"name": "shakespeare", "path": None, "filename": "tinyshakespeare.txt",
                         "url": None, "sha256": SHA, **kw})


def test_shakespeare_split_matches_nanogpt(corpus):
    tokens = tokenize_corpus(corpus, ByteTokenizer())
    data = TextData(tokens, seq_len=512, val_fraction=0.1, seed=0)
    assert (len(tokens), len(data.train), len(data.val)) == (1_115_394, 1_003_854, 111_540)
    assert sha256_of(corpus) == SHA


def test_labels_are_the_inputs_shifted_exactly_once():
    tokens = np.arange(1000, dtype=np.int64)
    b = TextData(tokens, seq_len=16, val_fraction=0.1, seed=3).train_batch(0, 0, 8)
    assert b.inputs.shape == b.labels.shape == (8, 16)
    assert np.array_equal(b.labels, b.inputs + 1)


def test_sampling_depends_only_on_seed_step_and_micro_step():
    tokens = np.arange(10_000, dtype=np.int64)
    a, b = TextData(tokens, 32, 0.1, 7), TextData(tokens, 32, 0.1, 7)
    assert np.array_equal(a.train_batch(5, 1, 4).inputs, b.train_batch(5, 1, 4).inputs)
    assert not np.array_equal(a.train_batch(5, 0, 4).inputs, a.train_batch(5, 1, 4).inputs)
    assert not np.array_equal(a.train_batch(5, 0, 4).inputs, TextData(tokens, 32, 0.1, 8).train_batch(5, 0, 4).inputs)


def test_validation_windows_are_fixed_and_cover_the_split_once():
    tokens = np.arange(1000, dtype=np.int64)
    data = TextData(tokens, seq_len=10, val_fraction=0.1, seed=0)
    batches = list(data.val_batches(batch_size=4))
    inputs = np.concatenate([b.inputs for b in batches])
    assert inputs.shape == (9, 10)  # (100 - 1) // 10 windows
    assert np.array_equal(inputs.ravel(), np.arange(900, 990))
    assert len(list(data.val_batches(batch_size=4, max_batches=1))) == 1


def test_shard_takes_its_rows():
    tokens = np.arange(1000, dtype=np.int64)
    b = TextData(tokens, 8, 0.1, 0).train_batch(0, 0, 4)
    assert np.array_equal(np.concatenate([b.rows(0, 2).inputs, b.rows(1, 2).inputs]), b.inputs)


def test_corpus_shorter_than_one_sequence_is_a_clear_error():
    with pytest.raises(DataError, match="fewer than one sequence of model.max_seq_len=512"):
        TextData(np.arange(300), seq_len=512, val_fraction=0.1, seed=0)


def test_empty_and_non_utf8_corpora_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(DataError, match="is empty"):
        tokenize_corpus(empty, ByteTokenizer())
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xff\xfe world")
    with pytest.raises(DataError, match="not valid UTF-8"):
        tokenize_corpus(bad, ByteTokenizer())


def test_lookup_order_path_then_env_then_cache(tmp_path, monkeypatch, corpus):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TTEXP_DATA_DIR", raising=False)
    assert resolve_corpus(data_cfg(path=str(corpus))) == corpus
    monkeypatch.setenv("TTEXP_DATA_DIR", str(corpus.parent))
    assert resolve_corpus(data_cfg()) == corpus.parent / "tinyshakespeare.txt"
    monkeypatch.setenv("TTEXP_DATA_DIR", str(tmp_path / "nowhere"))
    cached = cache_dir() / "tinyshakespeare.txt"
    cached.parent.mkdir(parents=True)
    cached.write_text("cached copy")
    assert resolve_corpus(data_cfg()) == cached
    assert search_paths("tinyshakespeare.txt") == [tmp_path / "nowhere" / "tinyshakespeare.txt", cached]
    monkeypatch.delenv("TTEXP_DATA_DIR")
    assert search_paths("tinyshakespeare.txt") == [cached]


def test_missing_explicit_path_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(DataError, match="data.path=.*does not exist"):
        resolve_corpus(data_cfg(path=str(tmp_path / "missing.txt")))


def test_failed_download_says_where_it_looked_and_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TTEXP_DATA_DIR", str(tmp_path / "nowhere"))
    url = (tmp_path / "no-such-file.txt").as_uri()  # fails like an offline machine, instantly
    with pytest.raises(DataError) as info:
        resolve_corpus(data_cfg(url=url))
    msg = str(info.value)
    assert "could not download" in msg and "TTEXP_DATA_DIR" in msg and "data.path" in msg
    assert not list((tmp_path / "cache" / "ttexp").glob("*"))  # no partial file left behind


def test_download_with_wrong_checksum_is_rejected_and_not_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TTEXP_DATA_DIR", raising=False)
    src = tmp_path / "served.txt"
    src.write_text("not shakespeare")
    with pytest.raises(DataError, match="SHA-256"):
        resolve_corpus(data_cfg(url=src.as_uri()))
    assert not (tmp_path / "cache" / "ttexp" / "tinyshakespeare.txt").exists()


def test_download_with_right_checksum_lands_in_the_cache(tmp_path, monkeypatch, corpus):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TTEXP_DATA_DIR", raising=False)
    got = resolve_corpus(data_cfg(url=corpus.as_uri()))
    assert got == tmp_path / "cache" / "ttexp" / "tinyshakespeare.txt"
    assert sha256_of(got) == SHA
