"""The ttml double names its parameters the way ttml does (derived from the module tree by
``ModuleBase.parameters()``, never handed in by a test), and ttexp's HF <-> ttml mapping agrees
with those names: a tied nano and an untied model round-trip through Hugging Face names."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ttml_double as dbl  # noqa: E402

from conftest import compose_cfg  # noqa: E402
from ttexp.backends.ttml.api import build_model_config, detect_api, model_request  # noqa: E402
from ttexp.backends.ttml.backend import TtmlBackend  # noqa: E402
from ttexp.config.schema import OptimizerConfig  # noqa: E402
from ttexp.models.hf import write_weights  # noqa: E402
from ttexp.models.spec import ModelSpec  # noqa: E402
from ttexp.models.ttml_weights import TtmlLayout, detect_layout  # noqa: E402

OPT = OptimizerConfig(beta1=0.9, beta2=0.95, eps=1e-8, fused=None, use_moreh_adamw=False,
                      use_kahan_summation=False)
UNTIED = ModelSpec(name="u", vocab_size=100, hidden_dim=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   mlp_dim=96, max_seq_len=64, rms_norm_eps=1e-5, tie_word_embeddings=False)
LAYOUTS = {"python_split": TtmlLayout(), "python_fused": TtmlLayout(fused_qkv=True, packed_mlp=True),
           "cpp": TtmlLayout(prefix="llama", block="llama_block_{}")}


def _model(spec: ModelSpec, layout: TtmlLayout):
    ttml, _ = dbl.make("B", layout)
    ttml.autograd.AutoContext.get_instance().open_device([1, 1], [0])
    return ttml.models.llama.Llama(build_model_config(model_request(spec), detect_api(ttml), ttml))


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_the_module_tree_gives_the_names_the_mapping_expects(name, tied):
    layout = TtmlLayout(**{**LAYOUTS[name].__dict__, "tied": tied})
    spec = ModelSpec(**{**UNTIED.__dict__, "tie_word_embeddings": tied})
    model = _model(spec, layout)
    names = list(model.parameters().keys())
    assert set(names) == layout.parameter_names(spec.num_layers)
    assert detect_layout(names, tied) == layout
    root = model.root
    if tied:  # one tensor, registered twice, listed once under the name the walk reaches first
        assert root.tok_emb.weight is root.fc.weight
        assert f"{layout.prefix}/tok_emb/weight" not in names
        assert sum(t is root.fc.weight for t in model.parameters().values()) == 1
    else:
        assert model.parameters()[f"{layout.prefix}/tok_emb/weight"] is root.tok_emb.weight


def test_module_base_refuses_a_taken_name_and_overrides_only_a_known_one():
    m = dbl.ModuleBase("M")
    m.register_tensor("t", "weight")
    with pytest.raises(RuntimeError, match="coincide"):
        m.register_tensor("u", "weight")
    with pytest.raises(RuntimeError, match="does not exist"):
        m.override_tensor("u", "bias")


def test_default_intermediate_size_is_tt_trains_swiglu_rounding():
    assert dbl.compute_swiglu_intermediate_size(2048) == 5632  # TinyLlama's HF intermediate_size
    assert dbl.compute_swiglu_intermediate_size(384) == 1024


def _hf_weights(spec: ModelSpec, seed: int) -> dict[str, np.ndarray]:
    """Random HF-named weights, rounded to bf16 so ttml's bf16 storage keeps them exactly."""
    from ttexp.models.ttml_weights import _expected_hf_shapes

    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g).to(torch.bfloat16).float().numpy()
            for k, s in _expected_hf_shapes(spec).items()}


@pytest.mark.parametrize("which", ["tied_nano", "untied"])
def test_weights_round_trip_through_hf_names(which, tmp_path):
    spec = (ModelSpec.from_config(compose_cfg(["model=nano", "model.dropout=0.0"]).model)
            if which == "tied_nano" else UNTIED)
    hf = _hf_weights(spec, seed=3)
    write_weights(tmp_path, hf)
    ttml, ttnn = dbl.make()
    b = TtmlBackend([1, 1], False, OPT, 0.0, seed=0, ttml=ttml, ttnn=ttnn)
    try:
        b.build_model(spec, init_from=tmp_path)
        assert b.layout.tied is spec.tie_word_embeddings
        back = b.weight_tensors()
    finally:
        b.close()
    assert set(back) == set(hf)
    for k in hf:
        np.testing.assert_array_equal(back[k], hf[k], err_msg=k)


@pytest.mark.parametrize("generation", ["B", "C"])
def test_hardware_device_ids_reach_open_device_and_the_double_checks_them(generation):
    from ttexp.backends.base import OneProcess
    from ttexp.backends.factory import create_backend

    for ids, mesh in (([5], "n150"), ([2, 3], "n300")):
        ttml, ttnn = dbl.make(generation)
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(sys.modules, "ttml", ttml)
            mp.setitem(sys.modules, "ttnn", ttnn)
            b = create_backend(compose_cfg(["backend=ttml", f"hardware={mesh}",
                                            f"hardware.device_ids={ids}"]), "ttml", OneProcess())
        b.close()
        assert dbl.state().device_ids == ids
    ttml, ttnn = dbl.make(generation)
    with pytest.raises(dbl.ApiViolation, match="distinct chips"):  # chip 9 of the 8 here
        TtmlBackend([1, 1], False, OPT, 0.0, seed=0, ttml=ttml, ttnn=ttnn, device_ids=[9])
    assert dbl.state().device_open is False
