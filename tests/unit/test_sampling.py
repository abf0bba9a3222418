"""The one token sampler: its filters, its loop, and that both backends sample through it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ttml_double as dbl  # noqa: E402

from conftest import compose_cfg  # noqa: E402

from ttexp.backends import sampling  # noqa: E402
from ttexp.backends.base import SamplingParams  # noqa: E402
from ttexp.backends.sampling import decode, sample_token  # noqa: E402
from ttexp.backends.torch_backend import TorchBackend  # noqa: E402
from ttexp.backends.ttml.backend import TtmlBackend  # noqa: E402
from ttexp.config.schema import OptimizerConfig  # noqa: E402
from ttexp.models.spec import ModelSpec  # noqa: E402

SPEC = ModelSpec(name="t", vocab_size=256, hidden_dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                 mlp_dim=64, max_seq_len=32, tie_word_embeddings=True)
OPT = OptimizerConfig(beta1=0.9, beta2=0.95, eps=1e-8)


def test_sampling_honours_temperature_top_k_top_p_and_penalty():
    logits = np.array([1.0, 3.0, 2.0, 0.5])
    rng = np.random.default_rng(0)
    assert sample_token(logits, [], SamplingParams(temperature=0.0), rng) == 1
    assert {sample_token(logits, [0], SamplingParams(temperature=1.0, top_k=1), rng) for _ in range(20)} == {1}
    two = {sample_token(logits, [], SamplingParams(temperature=5.0, top_k=2), rng) for _ in range(200)}
    assert two == {1, 2}
    assert {sample_token(logits, [], SamplingParams(temperature=1.0, top_p=0.05), rng) for _ in range(20)} == {1}
    # penalty 10 on the top token makes the runner-up the greedy pick
    assert sample_token(logits, [1], SamplingParams(temperature=0.0, repetition_penalty=10.0), rng) == 2
    hot = [sample_token(logits, [], SamplingParams(temperature=100.0), rng) for _ in range(400)]
    assert len(set(hot)) == 4  # near-uniform at high temperature


def test_decode_is_seeded_sees_the_history_and_stops_after_eos():
    seen = []

    def next_logits(ids):
        seen.append(list(ids))
        return np.array([0.0, 1.0, 2.0, 0.5])

    p = SamplingParams(max_new_tokens=5, temperature=0.0, eos_token_id=2)
    assert decode(next_logits, [3], p) == [2] and seen == [[3]]
    p = SamplingParams(max_new_tokens=30, temperature=1.0, seed=5)
    first = decode(next_logits, [3], p)
    assert decode(next_logits, [3], p) == first and len(first) == 30
    assert seen[-1][:2] == [3, first[0]]  # each step sees the prompt and what came before


def test_greedy_generation_config_turns_sampling_off():
    g = SamplingParams(max_new_tokens=7, temperature=0.0, top_k=5, eos_token_id=3).to_generation_config()
    assert (g.do_sample, g.temperature, g.top_k, g.max_new_tokens, g.eos_token_id, g.pad_token_id) == (
        False, None, None, 7, 3, 3)
    s = SamplingParams(temperature=0.7, top_k=0, top_p=0.9, repetition_penalty=1.2).to_generation_config()
    assert (s.do_sample, s.temperature, s.top_k, s.top_p, s.repetition_penalty, s.pad_token_id) == (
        True, 0.7, None, 0.9, 1.2, 0)


def test_sampling_params_come_from_the_generation_section_and_the_tokenizer():
    cfg = compose_cfg(["generation.temperature=0.3", "generation.top_k=9", "generation.seed=4"])

    class Tok:
        eos_token_id = 7

    p = SamplingParams.from_config(cfg.generation, Tok())
    assert (p.temperature, p.top_k, p.seed, p.eos_token_id) == (0.3, 9, 4, 7)
    assert p.max_new_tokens == cfg.generation.max_new_tokens
    assert SamplingParams.from_config(cfg.generation).eos_token_id is None


def _torch_backend():
    torch.manual_seed(0)
    b = TorchBackend(torch.device("cpu"), "fp32", OPT, weight_decay=0.0)
    b.build_model(SPEC)
    return b


def _ttml_backend():
    ttml, ttnn = dbl.make("B")
    b = TtmlBackend([1, 1], False, OPT, 0.0, seed=0, ttml=ttml, ttnn=ttnn)
    b.build_model(SPEC)
    return b


@pytest.mark.parametrize("make", [_torch_backend, _ttml_backend], ids=["torch", "ttml"])
def test_both_backends_sample_through_the_one_sampler(make, monkeypatch):
    calls = []

    def recording(logits, history, params, rng):
        calls.append(np.asarray(logits).shape)
        return sample_token(logits, history, params, rng)

    monkeypatch.setattr(sampling, "sample_token", recording)
    b = make()
    # 3 + 40 > max_seq_len = 32: the token-by-token path on both backends
    out = b.generate([1, 2, 3], SamplingParams(max_new_tokens=40, temperature=0.8, top_k=20, seed=7))
    b.close()
    assert len(out) == 40 and calls == [(SPEC.vocab_size,)] * 40
