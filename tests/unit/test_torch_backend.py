"""The torch backend's mechanics: accumulation, clipping, state round trips, generation RNG."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ttexp.backends.base import SamplingParams
from ttexp.backends.torch_backend import TorchBackend
from ttexp.data.batch import Batch
from ttexp.errors import TtexpError
from ttexp.config.schema import OptimizerConfig
from ttexp.models.spec import ModelSpec

SPEC = ModelSpec(name="t", vocab_size=256, hidden_dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                 mlp_dim=64, max_seq_len=16, tie_word_embeddings=True)
OPT = OptimizerConfig(beta1=0.9, beta2=0.95, eps=1e-8, fused=None)


def make_backend(seed=0, spec=SPEC) -> TorchBackend:
    torch.manual_seed(seed)
    b = TorchBackend(torch.device("cpu"), "fp32", OPT, weight_decay=0.1)
    b.build_model(spec)
    return b


def batch(n=8, seed=1) -> Batch:
    rng = np.random.default_rng(seed)
    w = rng.integers(0, 256, size=(n, SPEC.max_seq_len + 1))
    return Batch(inputs=w[:, :-1], labels=w[:, 1:])


def params(b: TorchBackend) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in b.model.parameters()])


def grads(b: TorchBackend) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in b.model.parameters()])


def test_accumulating_two_half_batches_equals_one_full_batch():
    full, halves = make_backend(), make_backend()
    b = batch()
    full.micro_step(b, 1.0)
    halves.micro_step(Batch(b.inputs[:4], b.labels[:4]), 0.5)
    halves.micro_step(Batch(b.inputs[4:], b.labels[4:]), 0.5)
    # Compare gradients, not weights: Adam's first update is ~lr*sign(g), which amplifies
    # float rounding wherever a gradient element is near zero.
    torch.testing.assert_close(grads(halves), grads(full), rtol=1e-4, atol=1e-7)
    s_full = full.optimizer_step(lr=1e-2, max_grad_norm=None)
    s_half = halves.optimizer_step(lr=1e-2, max_grad_norm=None)
    assert s_half.loss == pytest.approx(s_full.loss, rel=1e-5)
    assert s_half.grad_norm == pytest.approx(s_full.grad_norm, rel=1e-4)


def test_clipping_is_applied_and_the_pre_clip_norm_is_reported():
    b = make_backend()
    b.micro_step(batch(), 1.0)
    stats = b.optimizer_step(lr=1e-3, max_grad_norm=0.01)
    assert stats.grad_norm > 0.01
    # AdamW's first moment after one step is (1 - beta1) * the gradient it was given.
    applied = torch.cat([b.optimizer.state[p]["exp_avg"].flatten() for p in b.model.parameters()])
    assert float(applied.norm()) / (1 - 0.9) == pytest.approx(0.01, rel=1e-4)


def test_no_clipping_leaves_the_gradient_alone():
    b = make_backend()
    b.micro_step(batch(), 1.0)
    stats = b.optimizer_step(lr=1e-3, max_grad_norm=None)
    applied = torch.cat([b.optimizer.state[p]["exp_avg"].flatten() for p in b.model.parameters()])
    assert float(applied.norm()) / (1 - 0.9) == pytest.approx(stats.grad_norm, rel=1e-4)


def test_weight_decay_skips_norm_weights():
    b = make_backend()
    decayed = {id(p) for p in b.optimizer.param_groups[0]["params"]}
    for name, p in b.model.named_parameters():
        assert (id(p) in decayed) == ("norm" not in name), name


def test_weights_and_optimizer_round_trip(tmp_path):
    a = make_backend(seed=0)
    a.micro_step(batch(), 1.0)
    a.optimizer_step(lr=1e-3, max_grad_norm=1.0)
    a.save_weights(tmp_path)
    state = a.optimizer_state()
    assert json.loads(json.dumps(state.scalars)) == state.scalars  # JSON, nothing else
    assert all(torch.is_tensor(t) for t in state.tensors.values())
    b = make_backend(seed=99)
    b.load_weights(tmp_path)
    b.load_optimizer_state(state)
    torch.testing.assert_close(params(b), params(a), rtol=0, atol=0)
    assert b.model.lm_head.weight.data_ptr() == b.model.model.embed_tokens.weight.data_ptr()
    for x, y in ((a, b),):
        x.micro_step(batch(seed=5), 1.0)
        y.micro_step(batch(seed=5), 1.0)
        assert x.optimizer_step(1e-3, 1.0).loss == y.optimizer_step(1e-3, 1.0).loss


def test_mismatched_weights_list_every_problem(tmp_path):
    make_backend().save_weights(tmp_path)
    other = make_backend(spec=ModelSpec(**{**SPEC.__dict__, "hidden_dim": 64, "mlp_dim": 128}))
    with pytest.raises(TtexpError) as info:
        other.load_weights(tmp_path)
    msg = str(info.value)
    assert "model.embed_tokens.weight: file has (256, 32), model has (256, 64)" in msg
    assert "Use the model config they were trained with" in msg


def test_missing_and_corrupt_weight_files_are_clear_errors(tmp_path):
    b = make_backend()
    with pytest.raises(TtexpError, match="No model.safetensors"):
        b.load_weights(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(TtexpError, match="damaged"):
        b.load_weights(tmp_path)


@pytest.mark.parametrize("new_tokens", [8, 40])  # within the context (KV cache) and past it (window)
def test_generation_is_seeded_and_leaves_the_training_rng_alone(new_tokens):
    b = make_backend()
    p = SamplingParams(max_new_tokens=new_tokens, temperature=1.0, top_k=50, seed=7)
    before = torch.get_rng_state()
    first = b.generate([1, 2, 3], p)
    assert torch.equal(torch.get_rng_state(), before)
    assert b.generate([1, 2, 3], p) == first and len(first) == new_tokens
    assert b.model.training


def test_greedy_generation_matches_argmax_of_the_model():
    b = make_backend()
    out = b.generate([5, 6, 7], SamplingParams(max_new_tokens=3, temperature=0.0))
    ids = [5, 6, 7]
    b.model.eval()
    for _ in range(3):
        with torch.no_grad():
            ids.append(int(b.model(torch.tensor([ids])).logits[0, -1].argmax()))
    assert out == ids[3:]


def test_native_bf16_follows_the_isa_caps_torch_and_onednn_obey(monkeypatch):
    """ONEDNN_MAX_CPU_ISA below bf16, or ATen below AVX512, makes precision=auto choose fp32, so
    a bf16 machine can run as an fp32-only one; on a CPU without the flags it is fp32 anyway."""
    import torch

    from ttexp.backends import detect
    from ttexp.backends.torch_device import autocast_dtype_for, cpu_has_native_bf16

    flags = "flags : fpu avx2 avx512f avx512_bf16 amx_bf16\n"
    monkeypatch.setattr(detect, "cpu_info", lambda: flags)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert cpu_has_native_bf16()
    assert autocast_dtype_for(torch.device("cpu"), "auto") == torch.bfloat16
    for isa, native in [("AVX512_CORE_VNNI", False), ("avx2", False), ("AVX512_CORE_BF16", True),
                        ("AVX512_CORE_AMX", True), ("ALL", True)]:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
        assert cpu_has_native_bf16() is native, isa
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    assert autocast_dtype_for(torch.device("cpu"), "auto") is None
    assert autocast_dtype_for(torch.device("cpu"), "bf16") == torch.bfloat16  # asked for: obeyed
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not cpu_has_native_bf16()
    monkeypatch.setattr(detect, "cpu_info", lambda: "flags : fpu avx2 avx512f\n")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert not cpu_has_native_bf16()
