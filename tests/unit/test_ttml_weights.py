"""HF <-> ttml weight mapping: exact round trips, and the RoPE permutation checked against
transformers' own Llama (rotate_half) through a torch implementation of ttml's layout."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ttexp.errors import TtexpError
from ttexp.models.spec import ModelSpec
from ttexp.models.ttml_weights import (
    TtmlLayout, deinterleave_rope_rows, detect_layout, hf_to_ttml, interleave_rope_rows,
    round_up_to_tile, ttml_to_hf,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ttml_reference as ref  # noqa: E402

# Vocabulary 100 is not a multiple of 32: the padding path is exercised. GQA: 4 heads, 2 KV heads.
SPEC = ModelSpec(name="t", vocab_size=100, hidden_dim=64, num_layers=2, num_heads=4,
                 num_kv_heads=2, mlp_dim=96, max_seq_len=32, rope_theta=10000.0,
                 rms_norm_eps=1e-5, tie_word_embeddings=False)
LAYOUTS = {
    "python_split": TtmlLayout(),
    "python_fused": TtmlLayout(fused_qkv=True, packed_mlp=True),
    "cpp": TtmlLayout(prefix="llama", block="llama_block_{}"),
}


def hf_model(spec: ModelSpec, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=spec.vocab_size, hidden_size=spec.hidden_dim,
                      intermediate_size=spec.mlp_dim, num_hidden_layers=spec.num_layers,
                      num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_kv_heads,
                      max_position_embeddings=spec.max_seq_len, rms_norm_eps=spec.rms_norm_eps,
                      rope_theta=spec.rope_theta, tie_word_embeddings=spec.tie_word_embeddings,
                      attention_dropout=0.0)
    cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norms start at 1; random ones make a wrong mapping visible
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def hf_state(model, tied: bool) -> dict[str, np.ndarray]:
    sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    if tied:
        sd.pop("lm_head.weight", None)
    return sd


def test_round_up_to_tile():
    assert [round_up_to_tile(n) for n in (1, 31, 32, 33, 100, 256, 32000)] == [32, 32, 32, 64, 128, 256, 32000]


def test_interleave_puts_each_half_pair_side_by_side_and_inverts():
    w = np.arange(2 * 8 * 3, dtype=np.float32).reshape(16, 3)  # 2 heads of 8 rows
    got = interleave_rope_rows(w, 2)
    for h in range(2):
        for i in range(4):
            np.testing.assert_array_equal(got[h * 8 + 2 * i], w[h * 8 + i])
            np.testing.assert_array_equal(got[h * 8 + 2 * i + 1], w[h * 8 + 4 + i])
    np.testing.assert_array_equal(deinterleave_rope_rows(got, 2), w)


def test_interleave_rejects_odd_heads():
    with pytest.raises(TtexpError, match="even size"):
        interleave_rope_rows(np.zeros((6, 2), np.float32), 2)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("layout_name", sorted(LAYOUTS))
def test_hf_to_ttml_to_hf_is_exact(layout_name, tied):
    spec = ModelSpec(**{**SPEC.__dict__, "tie_word_embeddings": tied})
    layout = TtmlLayout(**{**LAYOUTS[layout_name].__dict__, "tied": tied})
    hf = hf_state(hf_model(spec), tied)
    params = hf_to_ttml(hf, spec, layout)
    assert set(params) == layout.parameter_names(spec.num_layers)
    assert all(a.ndim == 4 and a.dtype == np.float32 for a in params.values())
    assert params[layout.name("fc/weight")].shape == (1, 1, 128, 64)  # vocab 100 padded to 128
    back = ttml_to_hf(params, spec, layout)
    assert set(back) == set(hf)
    for k in hf:
        np.testing.assert_array_equal(back[k], hf[k], err_msg=k)


def test_padded_vocab_rows_are_zero():
    layout = LAYOUTS["python_split"]
    params = hf_to_ttml(hf_state(hf_model(SPEC), False), SPEC, layout)
    assert not params[layout.name("tok_emb/weight")][0, 0, 100:].any()
    assert not params[layout.name("fc/weight")][0, 0, 100:].any()


@pytest.mark.parametrize("layout_name", sorted(LAYOUTS))
def test_ttml_layout_fed_mapped_weights_matches_transformers_logits(layout_name):
    model = hf_model(SPEC)
    layout = LAYOUTS[layout_name]
    params = {k: torch.from_numpy(v) for k, v in hf_to_ttml(hf_state(model, False), SPEC, layout).items()}
    tokens = torch.randint(0, SPEC.vocab_size, (2, 17), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(input_ids=tokens).logits
        got = ref.forward(params, layout, tokens, SPEC.num_layers, SPEC.num_heads,
                          SPEC.num_kv_heads, SPEC.rope_theta, eps=SPEC.rms_norm_eps)
    assert got.shape == (2, 17, 128)
    torch.testing.assert_close(got[..., :100], want, rtol=1e-4, atol=1e-5)


def test_attention_alone_matches_transformers_and_fails_without_the_permutation():
    """The q/k permutation is what makes ttml's interleaved RoPE equal HF's rotate_half."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    model = hf_model(SPEC)
    attn = model.model.layers[0].self_attn
    layout = LAYOUTS["python_split"]
    hf = hf_state(model, False)
    params = {k: torch.from_numpy(v) for k, v in hf_to_ttml(hf, SPEC, layout).items()}
    # Large inputs make the scores large, so softmax is far from uniform and RoPE matters.
    x = 20 * torch.randn(2, 12, SPEC.hidden_dim, generator=torch.Generator().manual_seed(5))
    pos = torch.arange(12)[None]
    cos_sin = LlamaRotaryEmbedding(model.config)(x, pos)
    causal = torch.full((12, 12), float("-inf")).triu(1)[None, None]
    with torch.no_grad():
        want = attn(x, position_embeddings=cos_sin, attention_mask=causal)[0]
        got = ref.attention(params, layout, 0, x, SPEC.num_heads, SPEC.num_kv_heads, SPEC.rope_theta)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        # Same weights without the row permutation: the scores, hence the output, differ.
        wrong = dict(params)
        q = hf["model.layers.0.self_attn.q_proj.weight"]
        k = hf["model.layers.0.self_attn.k_proj.weight"]
        v = hf["model.layers.0.self_attn.v_proj.weight"]
        wrong[layout.name("attention/q_linear/weight", 0)] = torch.from_numpy(q)[None, None]
        wrong[layout.name("attention/kv_linear/weight", 0)] = torch.from_numpy(np.concatenate([k, v]))[None, None]
        bad = ref.attention(wrong, layout, 0, x, SPEC.num_heads, SPEC.num_kv_heads, SPEC.rope_theta)
    assert (bad - want).abs().max() > 100 * (got - want).abs().max()
    assert (bad - want).abs().max() > 1e-2 * want.abs().max()


def test_detect_layout_from_names():
    for name, layout in LAYOUTS.items():
        for tied in (False, True):
            want = TtmlLayout(**{**layout.__dict__, "tied": tied})
            assert detect_layout(want.parameter_names(3), tied) == want, name
    with pytest.raises(TtexpError, match="no Llama layout"):
        detect_layout({"NanoGPT/blocks/0/ln1/gamma"}, False)


def test_mismatched_checkpoint_lists_every_problem():
    hf = hf_state(hf_model(SPEC), False)
    hf.pop("model.layers.1.mlp.up_proj.weight")
    hf["model.layers.0.self_attn.k_proj.weight"] = np.zeros((64, 64), np.float32)
    with pytest.raises(TtexpError) as err:
        hf_to_ttml(hf, SPEC, LAYOUTS["python_split"])
    msg = str(err.value)
    assert "missing model.layers.1.mlp.up_proj.weight" in msg
    assert "model.layers.0.self_attn.k_proj.weight: file has (64, 64), model needs (32, 64)" in msg


def test_untied_model_from_tied_checkpoint_says_how_to_fix():
    hf = hf_state(hf_model(SPEC), tied=True)
    with pytest.raises(TtexpError, match="tie_word_embeddings=true"):
        hf_to_ttml(hf, SPEC, LAYOUTS["python_split"])


def test_ttml_to_hf_names_missing_parameters():
    layout = LAYOUTS["python_fused"]
    params = hf_to_ttml(hf_state(hf_model(SPEC), False), SPEC, layout)
    params.pop(layout.name("mlp/w2/weight", 1))
    with pytest.raises(TtexpError, match="Llama/blocks/1/mlp/w2/weight"):
        ttml_to_hf(params, SPEC, layout)
