"""Pure ttml logic: API detection on fake modules, model and optimizer configs for every preset,
mesh plans for every hardware preset, batch layout, masks and sampling."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ttml_double as dbl  # noqa: E402
from conftest import ROOT, compose_cfg  # noqa: E402

from ttexp.backends.ttml.api import (  # noqa: E402
    build_model_config, detect_api, model_request, optimizer_request, plan_mesh,
)
from ttexp.backends.ttml.tensors import (  # noqa: E402
    causal_mask, kv_cache_mask, layout_batch, logits_padding_mask,
)
from ttexp.data.batch import IGNORE_INDEX, Batch  # noqa: E402
from ttexp.errors import BackendUnavailable, TtexpError  # noqa: E402
from ttexp.models.spec import ModelSpec  # noqa: E402

MODELS = sorted(p.stem for p in (ROOT / "conf/model").glob("*.yaml"))
HARDWARE = sorted(p.stem for p in (ROOT / "conf/hardware").glob("*.yaml"))


def cpp_gen_a():
    """A Gen A-shaped module: C++ Llama config with attributes, optimizer classes, old sync name."""
    class CppCfg:
        pass
    llama = SimpleNamespace(LlamaConfig=CppCfg, create_llama_model=lambda c: c)
    return SimpleNamespace(
        models=SimpleNamespace(llama=llama, RunnerType=dbl.RunnerType, WeightTyingType=dbl.WeightTyingType),
        optimizers=SimpleNamespace(AdamWConfig=object, AdamW=object),
        core=SimpleNamespace(distributed=SimpleNamespace(synchronize_parameters=print)),
        autograd=SimpleNamespace(AutoContext=object))


def test_detect_generations():
    ttml_b, _ = dbl.make("B")
    b = detect_api(ttml_b)
    assert (b.generation, b.model_builder, b.optimizer_factory, b.grad_sync) == \
        ("B", "python_llama", "registry", "synchronize_gradients")
    assert b.has_clip_grad_norm and b.has_kv_cache and b.has_parallelism_context and b.has_enable_fabric
    a = detect_api(cpp_gen_a())
    assert (a.generation, a.model_builder, a.optimizer_factory, a.grad_sync, a.has_clip_grad_norm) == \
        ("A", "cpp_llama_gen_a", "config_classes", "synchronize_parameters", False)
    ttml_b.open_device_mesh = object
    half = detect_api(ttml_b)  # open_device_mesh without Mesh / sync_gradients: keep the old sync
    assert (half.generation, half.grad_sync, half.has_device_mesh) == ("C", "synchronize_gradients", False)
    c = detect_api(dbl.make("C")[0])
    assert (c.generation, c.grad_sync, c.has_device_mesh) == ("C", "sync_gradients", True)
    assert not b.has_device_mesh


def test_detect_names_what_is_missing():
    with pytest.raises(BackendUnavailable, match="no Llama model"):
        detect_api(SimpleNamespace(models=SimpleNamespace()))
    mod = cpp_gen_a()
    mod.optimizers = SimpleNamespace()
    with pytest.raises(BackendUnavailable, match="no AdamW"):
        detect_api(mod)


@pytest.mark.parametrize("model", MODELS)
def test_model_request_for_every_preset(model):
    spec = ModelSpec.from_config(compose_cfg([f"model={model}"]).model)
    req = model_request(spec)
    assert req.vocab_size % 32 == 0 and spec.vocab_size <= req.vocab_size < spec.vocab_size + 32
    assert req.max_position_embeddings == spec.max_seq_len  # every preset is tile-aligned
    assert (req.hidden_size, req.intermediate_size, req.num_hidden_layers) == \
        (spec.hidden_dim, spec.mlp_dim, spec.num_layers)
    assert (req.num_attention_heads, req.num_key_value_heads, req.tied) == \
        (spec.num_heads, spec.num_kv_heads, spec.tie_word_embeddings)
    assert req.memory_efficient == (spec.hidden_dim >= 2048)
    ttml, _ = dbl.make()
    cfg = build_model_config(req, detect_api(ttml), ttml)  # the double validates like ttml
    assert cfg.hidden_size == spec.hidden_dim and cfg.mlp_dropout == 0.0
    cpp = build_model_config(req, detect_api(cpp_gen_a()), cpp_gen_a())
    assert (cpp.num_heads, cpp.num_groups, cpp.embedding_dim, cpp.intermediate_dim, cpp.num_blocks,
            cpp.vocab_size, cpp.max_sequence_length) == (spec.num_heads, spec.num_kv_heads,
            spec.hidden_dim, spec.mlp_dim, spec.num_layers, req.vocab_size, spec.max_seq_len)


def test_model_request_notes_and_refusals():
    spec = ModelSpec(name="x", vocab_size=100, hidden_dim=48, num_layers=1, num_heads=4,
                     num_kv_heads=4, mlp_dim=64, max_seq_len=20, dropout=0.1)
    with pytest.raises(BackendUnavailable, match="use 64"):
        model_request(spec)
    req = model_request(ModelSpec(**{**spec.__dict__, "hidden_dim": 64}))
    assert req.vocab_size == 128 and req.max_position_embeddings == 32
    assert any("padded 100 -> 128" in n for n in req.notes)
    assert any("epsilon" in n for n in req.notes) and any("dropout" in n for n in req.notes)


@pytest.mark.parametrize("moreh,kahan,kind", [(False, False, "AdamW"), (True, False, "MorehAdamW"),
                                              (False, True, "AdamWComposite"), (True, True, "MorehAdamW")])
def test_optimizer_request_registry(moreh, kahan, kind):
    ttml, _ = dbl.make()
    req = optimizer_request(detect_api(ttml), 1e-3, 0.9, 0.95, 1e-8, 0.01, moreh, kahan)
    assert req.kind == kind and req.settings["type"] == kind
    assert req.settings["beta2"] == 0.95 and req.settings["epsilon"] == 1e-8
    assert ("kahan_summation" in req.settings) == kahan
    assert any("unverified" in n.lower() or "does not confirm" in n for n in req.notes) == (moreh and kahan)


def test_optimizer_request_gen_a_reports_what_it_cannot_do():
    api = detect_api(cpp_gen_a())  # no MorehAdamW class
    req = optimizer_request(api, 1e-3, 0.9, 0.95, 1e-8, 0.01, True, True)
    assert req.kind == "AdamW"
    assert any("no MorehAdamW" in n for n in req.notes)
    assert any("kahan" in n.lower() and "ignored" in n for n in req.notes)


@pytest.mark.parametrize("hardware", HARDWARE)
def test_mesh_plan_for_every_hardware_preset(hardware):
    hw = compose_cfg([f"hardware={hardware}"]).hardware
    plan = plan_mesh(list(hw.mesh_shape), hw.enable_ddp)
    n = hw.mesh_shape[0] * hw.mesh_shape[1]
    assert plan.num_devices == n and plan.enable_fabric == (n > 1) and plan.enable_ddp == (n > 1)
    assert plan.device_ids == ([0] if n == 1 else None)


def test_mesh_plan_refuses_what_ttml_cannot_open():
    with pytest.raises(BackendUnavailable, match=r"\[1, N\]"):
        plan_mesh([2, 4], True)
    with pytest.raises(BackendUnavailable, match="enable_ddp"):
        plan_mesh([1, 2], False)


def test_layout_batch_pads_to_tiles_and_normalises_the_mask():
    x = np.arange(3 * 40).reshape(3, 40) % 256
    y = x.copy()
    y[0, :10] = IGNORE_INDEX
    tb = layout_batch(Batch(x, y), 256)
    assert tb.inputs.shape == (3, 1, 1, 64) and tb.inputs.dtype == np.uint32
    assert tb.targets.shape == (3, 64) and tb.targets.dtype == np.uint32
    assert tb.loss_mask.shape == (3, 1, 64, 1) and tb.loss_mask.dtype == np.float32
    assert tb.num_tokens == 110
    assert tb.loss_mask.sum() == pytest.approx(3 * 64)
    assert tb.loss_mask[0, 0, :10].sum() == 0 and tb.loss_mask[:, 0, 40:].sum() == 0
    np.testing.assert_array_equal(tb.inputs[:, 0, 0, :40], x)
    full = layout_batch(Batch(np.zeros((2, 32), int), np.ones((2, 32), int)), 256)
    assert full.loss_mask is None and full.num_tokens == 64


def test_layout_batch_rejects_bad_ids():
    with pytest.raises(TtexpError, match="outside"):
        layout_batch(Batch(np.full((1, 4), 300), np.zeros((1, 4), int)), 256)
    with pytest.raises(TtexpError, match="no labelled"):
        layout_batch(Batch(np.zeros((1, 4), int), np.full((1, 4), IGNORE_INDEX)), 256)


def test_masks():
    m = causal_mask(4)[0, 0]
    assert m.dtype == np.float32 and (m == np.tril(np.ones((4, 4)))).all()
    kv = kv_cache_mask(1, 40)
    assert kv.shape == (1, 1, 32, 64) and kv[0, 0, 0].sum() == 41 and kv[0, 0, 1:].sum() == 0
    pre = kv_cache_mask(3, 0)
    assert (pre[0, 0, :3, :3] == np.tril(np.ones((3, 3)))).all() and pre[0, 0, :3, 3:].sum() == 0
    lm = logits_padding_mask(100, 128)
    assert lm.shape == (1, 1, 1, 128) and lm[..., :100].sum() == 0 and (lm[..., 100:] == 1e4).all()
    assert logits_padding_mask(256, 256) is None
