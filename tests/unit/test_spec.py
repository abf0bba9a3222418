"""Parameter accounting from the spec equals the built transformers model, exactly."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_cfg
from ttexp.models.hf import llama_config
from ttexp.models.spec import ModelSpec, flops_per_token, param_breakdown


def test_nano_has_5_180_672_parameters_not_11m():
    spec = ModelSpec.from_config(compose_cfg(["model=nano"]).model)
    b = param_breakdown(spec)
    assert (b.attention_per_block, b.mlp_per_block, b.norms_per_block) == (262_144, 589_824, 512)
    assert b.per_block == 852_480 and b.blocks == 5_114_880
    assert b.embedding == 65_536 and b.lm_head == 0 and b.final_norm == 256
    assert b.total == 5_180_672


@pytest.mark.parametrize("model", ["nano", "mini", "midi", "mega", "tinyllama"])
def test_breakdown_matches_transformers_numel(model):
    from transformers import LlamaForCausalLM

    spec = ModelSpec.from_config(compose_cfg([f"model={model}"]).model)
    with torch.device("meta"):  # no memory: shapes only
        hf = LlamaForCausalLM(llama_config(spec))
    assert sum(p.numel() for p in hf.parameters()) == param_breakdown(spec).total


def test_mega_is_tinyllamas_shape_with_gqa():
    spec = ModelSpec.from_config(compose_cfg(["model=mega"]).model)
    assert (spec.hidden_dim, spec.num_layers, spec.num_heads, spec.num_kv_heads, spec.mlp_dim) == (
        2048, 22, 32, 4, 5632)
    b = param_breakdown(spec)
    # k and v project to 4 heads x 64 = 256: 2*2048^2 + 2*2048*256
    assert b.attention_per_block == 2 * 2048 * 2048 + 2 * 2048 * 256


def test_flops_per_token_follows_6n_plus_12ldt():
    spec = ModelSpec.from_config(compose_cfg(["model=nano"]).model)
    n = 6 * 852_480 - 6 * 512 + 65_536  # matmul weights of the blocks plus the (tied) head
    assert flops_per_token(spec, 512) == 6 * n + 12 * 6 * 256 * 512
