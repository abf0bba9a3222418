"""Prompt/response batches: the loss mask, padding, truncation, the split and the data order."""

from __future__ import annotations

import numpy as np
import pytest

from ttexp.data.batch import IGNORE_INDEX
from ttexp.data.pairs import (DEFAULT_TEMPLATE, PairData, collate, encode_example, format_prompt,
                              packaged_dataset, split_indices)
from ttexp.models.pretrained import PromptTokenizer, load_tokenizer
from ttexp.models.tokenizer import ByteTokenizer

BYTES = PromptTokenizer(ByteTokenizer())  # no EOS of its own: "\x04" stands in


def test_template_replaces_only_the_prompt_placeholder():
    assert format_prompt(DEFAULT_TEMPLATE, "Why {x}?") == "### Question:\nWhy {x}?\n\n### Answer:\n"


def test_byte_tokenizer_gets_end_of_transmission_as_eos_and_decode_stops_there():
    assert BYTES.eos_token_id == 4 and BYTES.bos_token_id is None
    assert BYTES.decode(list(b"hi") + [4] + list(b"junk")) == "hi"


def test_loss_mask_covers_the_whole_response_and_eos_but_no_prompt_or_padding():
    long = encode_example("Q?", "Answer here.", BYTES, "<{prompt}>", max_seq_len=64)
    short = encode_example("Q?", "ok", BYTES, "<{prompt}>", max_seq_len=64)
    batch = collate([long, short], pad_token_id=BYTES.pad_token_id)
    prompt_len = len("<Q?>")
    for row, (ex, response) in enumerate(((long, "Answer here."), (short, "ok"))):
        labels, mask = batch.labels[row], batch.attention_mask[row]
        scored = labels != IGNORE_INDEX
        # Exactly the response bytes and EOS are targets, in order, the first one included.
        assert labels[scored].tolist() == list(response.encode()) + [4]
        first = int(np.argmax(scored))
        assert first == prompt_len - 1  # predicted from the last prompt position
        assert batch.inputs[row, first] == ord(">")
        n_real = len(ex.ids) - 1
        assert mask[:n_real].all() and not mask[n_real:].any()
        assert not scored[n_real:].any()  # padding carries no loss
    assert batch.inputs.shape == (2, len(long.ids) - 1)  # padded to the longest, not the context


def test_labels_are_the_inputs_shifted_once():
    ex = encode_example("a", "bcd", BYTES, "{prompt}:", max_seq_len=64)
    batch = collate([ex], pad_token_id=0)
    ids = np.asarray(ex.ids)
    scored = batch.labels[0] != IGNORE_INDEX
    assert (batch.labels[0][scored] == ids[1:][scored]).all()
    assert (batch.inputs[0] == ids[:-1]).all()


def test_truncation_cuts_the_prompt_start_and_keeps_the_response():
    ex = encode_example("x" * 100, "keep me", BYTES, "Q: {prompt}\nA: ", max_seq_len=20)
    assert len(ex.ids) == 21 and ex.truncated == "prompt"
    assert bytes(ex.ids[ex.response_start:-1]) == b"keep me"
    assert bytes(ex.ids[:ex.response_start]).endswith(b"\nA: ")


def test_a_response_longer_than_the_context_is_cut_at_its_end():
    ex = encode_example("q", "y" * 50, BYTES, "{prompt}", max_seq_len=10)
    assert len(ex.ids) == 11 and ex.truncated == "response" and ex.response_start == 1
    assert 4 not in ex.ids  # the EOS went with the cut end


def test_bos_is_kept_when_a_prompt_is_truncated(tiny_llama_dir):
    tok = load_tokenizer(tiny_llama_dir)
    ex = encode_example("word " * 80, "An answer.", tok, DEFAULT_TEMPLATE, max_seq_len=40)
    assert ex.ids[0] == tok.bos_token_id and ex.ids[-1] == tok.eos_token_id and len(ex.ids) == 41
    assert tok.decode(list(ex.ids[ex.response_start:])) == "An answer."


def test_split_is_seeded_disjoint_and_complete():
    train, val = split_indices(58, 0.1, seed=42)
    assert (train, val) == split_indices(58, 0.1, seed=42)
    assert len(val) == 6 and sorted(train + val) == list(range(58))
    assert split_indices(58, 0.1, seed=7)[1] != val
    assert split_indices(3, 0.0, seed=1) == ([0, 1, 2], [])
    assert split_indices(2, 0.9, seed=1)[0]  # training keeps at least one example


def make_data(n=10, accumulation=2) -> PairData:
    examples = [encode_example(f"p{i}", "r" * (i + 1), BYTES, "{prompt}=", 64) for i in range(n)]
    return PairData(examples, examples[:3], BYTES.pad_token_id, seed=3, gradient_accumulation_steps=accumulation)


def first_inputs(batch) -> list[bytes]:
    return [bytes(row[:3].tolist()) for row in batch.inputs]


def test_train_batches_depend_only_on_seed_step_and_micro_step():
    a, b = make_data(), make_data()
    b.train_batch(7, 1, 4)  # any history: resume needs none
    assert np.array_equal(a.train_batch(3, 1, 4).inputs, b.train_batch(3, 1, 4).inputs)
    assert not np.array_equal(a.train_batch(3, 0, 4).inputs, a.train_batch(3, 1, 4).inputs)


def test_every_example_is_seen_once_per_epoch():
    data = make_data(n=10, accumulation=1)
    seen = sum((first_inputs(data.train_batch(step, 0, 5)) for step in range(2)), [])
    assert sorted(seen) == sorted(first_inputs(collate(data.train, 0)))
    second_epoch = sum((first_inputs(data.train_batch(step, 0, 5)) for step in range(2, 4)), [])
    assert sorted(second_epoch) == sorted(seen) and second_epoch != seen  # reshuffled


def test_validation_batches_are_fixed_and_cover_every_example():
    data = make_data()
    batches = list(data.val_batches(2))
    assert [b.inputs.shape[0] for b in batches] == [2, 1]
    assert len(list(data.val_batches(2, max_batches=1))) == 1
    assert all(np.array_equal(x.inputs, y.inputs) for x, y in zip(batches, data.val_batches(2)))


def test_starter_dataset_ships_with_the_package():
    path = packaged_dataset("trickster.jsonl")
    assert path is not None and len(path.read_text().splitlines()) >= 50
    assert packaged_dataset("nope.jsonl") is None


def test_a_tokenizer_without_eos_or_single_token_fallback_is_refused():
    class NoEos:
        vocab_size = 10
        eos_token_id = None

        def encode(self, text):
            return [1, 2]

    from ttexp.errors import TtexpError

    with pytest.raises(TtexpError, match="no EOS token"):
        PromptTokenizer(NoEos())
