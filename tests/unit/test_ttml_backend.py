"""TtmlBackend's control flow on CPU, through the strict ttml test double (tests/ttml_double.py).

The double computes ttml's Llama in torch and raises on every documented API constraint, so
these tests check what the backend asks of ttml (dtypes, shapes, reset after backward, set_lr,
gradient sync, fabric before open, device closed) and that the numbers agree with the torch
backend fed the same safetensors. What they cannot check is ttml itself: see test_ttml_hardware.py.
"""

from __future__ import annotations

from dataclasses import replace

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ttml_double as dbl  # noqa: E402

from ttexp.backends.base import SamplingParams  # noqa: E402
from ttexp.backends.torch_backend import TorchBackend  # noqa: E402
from ttexp.backends.ttml.backend import TtmlBackend  # noqa: E402
from ttexp.data.batch import IGNORE_INDEX, Batch  # noqa: E402
from ttexp.errors import BackendUnavailable  # noqa: E402
from ttexp.config.schema import OptimizerConfig  # noqa: E402
from ttexp.models.spec import ModelSpec  # noqa: E402
from ttexp.models.ttml_weights import TtmlLayout  # noqa: E402

SPEC = ModelSpec(name="t", vocab_size=256, hidden_dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                 mlp_dim=64, max_seq_len=32, rms_norm_eps=1e-5, tie_word_embeddings=True)
OPT = OptimizerConfig(beta1=0.9, beta2=0.95, eps=1e-8, fused=None, use_moreh_adamw=False,
                      use_kahan_summation=False)


def make(mesh=(1, 1), generation="B", layout=TtmlLayout(), opt=OPT, spec=SPEC, init_from=None,
         weight_decay=0.0, clip=True, checkpointing=False):
    ttml, ttnn = dbl.make(generation, layout)
    b = TtmlBackend(list(mesh), mesh[1] > 1, opt, weight_decay, seed=0, clip_grad_norm=clip,
                    ttml=ttml, ttnn=ttnn, activation_checkpointing=checkpointing)
    b.build_model(spec, init_from=init_from)
    return b


def batch(n=8, t=SPEC.max_seq_len, seed=1) -> Batch:
    w = np.random.default_rng(seed).integers(0, 256, size=(n, t + 1))
    return Batch(inputs=w[:, :-1], labels=w[:, 1:])


def torch_backend(seed=0) -> TorchBackend:
    torch.manual_seed(seed)
    b = TorchBackend(torch.device("cpu"), "fp32", OPT, weight_decay=0.0)
    b.build_model(SPEC)
    return b


@pytest.fixture
def torch_weights(tmp_path):
    tb = torch_backend()
    tb.save_weights(tmp_path)
    return tb, tmp_path


def test_training_resets_the_graph_after_every_backward_and_loss_falls():
    b = make()
    fixed = batch()
    losses = []
    for _ in range(8):
        b.micro_step(fixed, 1.0)
        losses.append(b.optimizer_step(lr=1e-2, max_grad_norm=1.0).loss)
    st = dbl.state()
    assert st.backwards == 8 and st.resets >= st.backwards and not st.graph_dirty
    assert st.steps == 8 and st.lrs == [1e-2] * 8
    assert losses[-1] < losses[0] - 0.5
    assert all(s[1] in ("UINT32", "BFLOAT16") for s in st.uploads)
    b.close()
    assert st.closed == 1 and not st.device_open
    b.close()  # idempotent
    assert st.closed == 1


def test_first_steps_match_the_torch_backend_on_the_same_weights(torch_weights):
    tb, weights = torch_weights
    b = make(init_from=weights)
    for step in range(3):
        for micro in range(2):
            mb = batch(4, seed=10 * step + micro)
            tb.micro_step(mb, 0.5)
            b.micro_step(mb, 0.5)
        want = tb.optimizer_step(lr=1e-3, max_grad_norm=1.0)
        got = b.optimizer_step(lr=1e-3, max_grad_norm=1.0)
        # ttml uploads weights as bf16; the loss agrees to bf16 precision.
        assert got.loss == pytest.approx(want.loss, rel=1e-2), step
        assert got.grad_norm == pytest.approx(want.grad_norm, rel=5e-2), step


def test_masked_loss_counts_only_labelled_tokens_and_pads_the_sequence(torch_weights):
    tb, weights = torch_weights
    b = make(init_from=weights)
    x = batch(4, t=20, seed=3)  # 20 is padded to 32 on ttml
    labels = x.labels.copy()
    labels[:, :7] = IGNORE_INDEX
    labels[2, 15:] = IGNORE_INDEX
    masked = Batch(x.inputs, labels)
    assert b.evaluate([masked]) == pytest.approx(tb.evaluate([masked]), rel=1e-2)
    uploads = dbl.state().uploads
    assert ((4, 1, 1, 32), "UINT32", "ROW_MAJOR") in uploads
    assert ((4, 32), "UINT32", "ROW_MAJOR") in uploads
    assert ((4, 1, 32, 1), "BFLOAT16", "TILE") in uploads  # the loss mask


def test_accumulating_two_halves_equals_one_full_batch():
    full, halves = make(), make()
    fb = batch()
    full.micro_step(fb, 1.0)
    halves.micro_step(Batch(fb.inputs[:4], fb.labels[:4]), 0.5)
    halves.micro_step(Batch(fb.inputs[4:], fb.labels[4:]), 0.5)
    a, b = full.optimizer_step(1e-3, 1.0), halves.optimizer_step(1e-3, 1.0)
    assert b.loss == pytest.approx(a.loss, rel=1e-5)
    assert b.grad_norm == pytest.approx(a.grad_norm, rel=1e-4)


def test_data_parallel_mesh_opens_with_fabric_syncs_every_step_and_matches_one_device():
    one = make()
    l1 = [one.micro_step(batch(seed=s), 1.0) or one.optimizer_step(1e-3, 1.0).loss for s in range(3)]
    two = make(mesh=(1, 2))
    l2 = [two.micro_step(batch(seed=s), 1.0) or two.optimizer_step(1e-3, 1.0).loss for s in range(3)]
    st = dbl.state()
    assert st.fabric == 2 and st.parallelism == 1 and st.syncs == st.steps == 3
    np.testing.assert_allclose(l2, l1, rtol=1e-5)


def test_gen_a_api_uses_optimizer_classes_and_the_older_sync_name():
    b = make(mesh=(1, 2), generation="A", opt=replace(OPT, use_moreh_adamw=True, use_kahan_summation=True))
    assert b.api.optimizer_factory == "config_classes" and b.api.grad_sync == "synchronize_parameters"
    assert b.optimizer.kind == "MorehAdamW"
    b.micro_step(batch(), 1.0)
    b.optimizer_step(1e-3, None)
    assert dbl.state().syncs == 1


def test_moreh_and_kahan_reach_the_registry():
    assert make(opt=replace(OPT, use_moreh_adamw=True)).optimizer.kind == "MorehAdamW"
    b = make(opt=replace(OPT, use_kahan_summation=True))
    assert b.optimizer.kind == "AdamWComposite" and b.optimizer.settings["kahan_summation"] is True


def test_graph_is_reset_even_when_backward_fails():
    b = make()
    dbl.state().fail_backward = True
    resets = dbl.state().resets
    with pytest.raises(RuntimeError, match="backward failed"):
        b.micro_step(batch(), 1.0)
    assert dbl.state().resets == resets + 1
    dbl.state().fail_backward = False
    b.micro_step(batch(), 1.0)  # the double would raise if the graph were still dirty


def test_missing_clip_is_refused_before_the_device_opens():
    ttml, ttnn = dbl.make()
    del ttml.core.clip_grad_norm
    with pytest.raises(BackendUnavailable, match="use_clip_grad_norm=false"):
        TtmlBackend([1, 1], False, OPT, 0.0, seed=0, clip_grad_norm=True, ttml=ttml, ttnn=ttnn)
    assert dbl.state().opened == 0


def test_constructor_closes_the_device_when_it_fails_after_opening(monkeypatch):
    ttml, ttnn = dbl.make()
    monkeypatch.setattr(dbl.AutoContext, "set_seed", lambda self, seed: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        TtmlBackend([1, 1], False, OPT, 0.0, seed=0, ttml=ttml, ttnn=ttnn)
    assert dbl.state().opened == 1 and dbl.state().closed == 1


def test_weights_round_trip_to_torch_and_transformers(tmp_path):
    b = make(layout=TtmlLayout(fused_qkv=True, packed_mlp=True))
    b.micro_step(batch(), 1.0)
    b.optimizer_step(1e-2, 1.0)
    b.save_weights(tmp_path)
    tb = TorchBackend(torch.device("cpu"), "fp32", OPT, weight_decay=0.0)
    tb.build_model(SPEC, init_from=tmp_path)
    x = batch(2, seed=9)
    assert tb.evaluate([x]) == pytest.approx(b.evaluate([x]), rel=1e-2)

    class Tok:
        def save_pretrained(self, d):
            (Path(d) / "tokenizer_marker.json").write_text("{}")

    out = tmp_path / "pretrained"
    out.mkdir()
    b.save_pretrained(out, Tok())
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(out))
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    with torch.no_grad():
        logits = hf(input_ids=torch.from_numpy(x.inputs)).logits
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), torch.from_numpy(x.labels).reshape(-1))
    assert float(ce) == pytest.approx(b.evaluate([x]), rel=1e-2)


def test_generation_is_seeded_stays_in_vocab_and_crops_past_the_context():
    b = make()
    p = SamplingParams(max_new_tokens=40, temperature=0.8, top_k=20, top_p=0.9, seed=7)
    a1, a2 = b.generate([1, 2, 3], p), b.generate([1, 2, 3], p)
    assert a1 == a2 and len(a1) == 40 and all(0 <= t < 256 for t in a1)  # 3 + 40 > 32: cropped
    g = b.generate([5] * 10, SamplingParams(max_new_tokens=5, temperature=0.0))
    assert g == b.generate([5] * 10, SamplingParams(max_new_tokens=5, temperature=0.0, seed=99))
    assert dbl.state().grad_mode == dbl.GradMode.ENABLED and not dbl.state().graph_dirty


def test_optimizer_state_is_named_arrays_and_json_and_rebuilds_named_parameters(tmp_path):
    import pickle

    a = make()
    for s in range(2):
        a.micro_step(batch(4, seed=s), 1.0)
        a.optimizer_step(1e-2, 1.0)
    live = a.optimizer.get_state_dict()
    with pytest.raises(TypeError, match="cannot pickle"):  # what the first format tripped over
        pickle.dumps(live)
    state = a.optimizer_state()
    assert json.loads(json.dumps(state.scalars)) == state.scalars
    assert all(isinstance(v, np.ndarray) for v in state.tensors.values())
    assert len(state.tensors) == 2 * len(a.model.parameters())
    a.save_weights(tmp_path)
    b = make(init_from=tmp_path)
    b.load_optimizer_state(state)
    got = b.optimizer.get_state_dict()
    assert got["steps"] == 2 and isinstance(got["exp_avg"], dbl.NamedParameters)
    for x, y in ((a, b),):
        x.micro_step(batch(4, seed=9), 1.0)
        y.micro_step(batch(4, seed=9), 1.0)
        assert x.optimizer_step(1e-2, 1.0).loss == y.optimizer_step(1e-2, 1.0).loss
    with pytest.raises(TypeError, match="bad_variant_access"):  # plain tensors are not accepted
        b.optimizer.set_state_dict({**live, "exp_avg": dict(live["exp_avg"].items())})


def test_cached_generation_uses_the_kv_cache_and_matches_the_windowed_path():
    b = make()
    p = SamplingParams(max_new_tokens=6, temperature=0.0)
    assert b.api.has_kv_cache
    cached = b.generate([3, 1, 4, 1, 5], p)
    b.api = replace(b.api, has_kv_cache=False)
    assert b.generate([3, 1, 4, 1, 5], p) == cached and len(cached) == 6


def test_the_double_rejects_what_ttml_rejects():
    b = make()
    arr = np.zeros((1, 1, 32, 32), dtype=np.float32)
    with pytest.raises(TypeError):  # ttml's keyword is numpy_tensor
        b.ttml.autograd.Tensor.from_numpy(arr=arr)
    with pytest.raises(TypeError):
        b.ttml.ops.loss.cross_entropy_loss(logits=None, target=None)
    mask = b.ttml.autograd.Tensor.from_numpy(numpy_tensor=arr, layout=b.ttnn.Layout.TILE,
                                             new_type=b.ttnn.DataType.BFLOAT16)
    x = b.to_device(np.zeros((1, 1, 1, 32), dtype=np.uint32), tile=False)
    with pytest.raises(dbl.ApiViolation, match="requires_grad=True"):
        b.model(x, mask)


def test_current_mesh_api_opens_a_named_mesh_and_syncs_over_dp_without_a_parallelism_context():
    one = make()
    l1 = [one.micro_step(batch(seed=s), 1.0) or one.optimizer_step(1e-3, 1.0).loss for s in range(3)]
    two = make(mesh=(1, 2), generation="C")
    assert two.api.grad_sync == "sync_gradients" and two.api.has_device_mesh
    st = dbl.state()
    assert st.named_mesh.shape == (1, 2) and st.named_mesh.axis_names == ("_0", "dp")  # build_mesh's
    l2 = [two.micro_step(batch(seed=s), 1.0) or two.optimizer_step(1e-3, 1.0).loss for s in range(3)]
    # open_device_mesh enabled the fabric (a second enable_fabric would have raised); no old context
    assert st.fabric == 2 and st.parallelism == 0 and st.syncs == st.steps == 3
    np.testing.assert_allclose(l2, l1, rtol=1e-5)
    two.close()
    assert st.named_mesh is None and not st.device_open


def test_sync_gradients_without_a_named_mesh_is_caught_by_the_double():
    """The trap of mixing the APIs: ttml.sync_gradients after a plain open_device is a silent no-op,
    and the double's optimizer refuses a step on a mesh whose gradients were never averaged."""
    ttml, _ = dbl.make("C")
    ttml.core.distributed.enable_fabric(2)
    ttml.autograd.AutoContext.get_instance().open_device([1, 2])
    params = dbl.NamedParameters()
    ttml.sync_gradients(params, ("dp",))
    assert dbl.state().syncs == 0
    with pytest.raises(ValueError, match="assigned name"):
        ttml.Mesh((1, 2), ("dp",))


def test_single_device_on_the_mesh_api_needs_no_fabric_and_never_syncs():
    b = make(generation="C")
    b.micro_step(batch(), 1.0)
    b.optimizer_step(1e-3, 1.0)
    st = dbl.state()
    assert st.fabric is None and st.syncs == 0 and st.named_mesh.shape == (1, 1)
    assert st.named_mesh.axis_names == ("_0", "_1")  # tt-train's build_mesh without enable_ddp


@pytest.mark.parametrize("generation", ["B", "C"])
def test_backend_auto_probe_opens_and_closes_the_mesh_the_way_the_backend_will(generation, monkeypatch):
    from ttexp.backends.detect import ttml_device_status

    ttml, _ = dbl.make(generation)
    monkeypatch.setitem(sys.modules, "ttml", ttml)
    ok, why = ttml_device_status([1, 2])
    st = dbl.state()
    assert ok, why
    assert st.opened == st.closed == 1 and st.fabric == 2 and st.named_mesh is None


def test_activation_checkpointing_selects_the_memory_efficient_runner():
    """training.activation_checkpointing on ttml is tt-train's memory-efficient runner (the
    double records the runner; on a chip it recomputes each block in backward)."""
    plain, recompute = make(), make(checkpointing=True)
    assert plain.model.cfg.runner_type == dbl.RunnerType.Default
    assert recompute.model.cfg.runner_type == dbl.RunnerType.MemoryEfficient
    for b in (plain, recompute):
        b.micro_step(batch(), 1.0)
    assert plain.optimizer_step(1e-3, 1.0).loss == recompute.optimizer_step(1e-3, 1.0).loss
