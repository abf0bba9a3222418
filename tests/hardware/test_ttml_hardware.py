"""On Tenstorrent hardware only: nano trains on one device, agrees with the torch backend, its
weights load in torch, a checkpoint with optimizer state resumes exactly, and cached generation
matches the windowed path; ``doctor --selftest`` passes. Skipped (and listed as skipped) wherever
tt-train's ttml does not import."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttexp.backends.detect import ttml_status

USABLE, WHY = ttml_status()
pytestmark = [pytest.mark.ttml, pytest.mark.skipif(not USABLE, reason=f"needs tt-train's ttml: {WHY}")]

from ttexp.config.schema import OptimizerConfig  # noqa: E402

OPT = OptimizerConfig(beta1=0.9, beta2=0.95, eps=1e-8, fused=None, use_moreh_adamw=False,
                      use_kahan_summation=False)  # the backends read attributes, not keys


@pytest.fixture(scope="module")
def nano():
    from conftest import compose_cfg
    from ttexp.models.spec import ModelSpec

    return ModelSpec.from_config(compose_cfg(["model=nano", "model.dropout=0.0"]).model)


def batches(spec, n, seed=0):
    rng = np.random.default_rng(seed)
    from ttexp.data.batch import Batch

    out = []
    for _ in range(n):
        w = rng.integers(0, spec.vocab_size, size=(4, 129))
        out.append(Batch(w[:, :-1], w[:, 1:]))
    return out


def test_nano_trains_on_one_device_matches_torch_and_saves_for_torch(nano, tmp_path):
    from ttexp.backends.torch_backend import TorchBackend
    from ttexp.backends.ttml.backend import TtmlBackend

    torch.manual_seed(0)
    tb = TorchBackend(torch.device("cpu"), "fp32", OPT, weight_decay=0.0)
    tb.build_model(nano)
    start = tmp_path / "start"
    start.mkdir()
    tb.save_weights(start)
    b = TtmlBackend([1, 1], False, OPT, 0.0, seed=0)
    try:
        b.build_model(nano, init_from=start)
        fixed = batches(nano, 1)[0]
        got, want = [], []
        for _ in range(5):
            b.micro_step(fixed, 1.0)
            tb.micro_step(fixed, 1.0)
            got.append(b.optimizer_step(1e-3, 1.0).loss)
            want.append(tb.optimizer_step(1e-3, 1.0).loss)
        assert got[-1] < got[0]
        np.testing.assert_allclose(got[:3], want[:3], rtol=5e-2)
        out = tmp_path / "ckpt"
        out.mkdir()
        b.save_weights(out)
        check = TorchBackend(torch.device("cpu"), "fp32", OPT, weight_decay=0.0)
        check.build_model(nano, init_from=out)
        x = batches(nano, 1, seed=1)
        assert check.evaluate(x) == pytest.approx(b.evaluate(x), rel=5e-2)
    finally:
        b.close()


def _device_backend(nano, init_from=None):
    from ttexp.backends.ttml.backend import TtmlBackend

    b = TtmlBackend([1, 1], False, OPT, 0.0, seed=0)
    b.build_model(nano, init_from=init_from)
    return b


def test_checkpoint_with_optimizer_state_resumes_on_the_device(nano, tmp_path, tiny_cfg):
    """The checkpoint module's own files (optimizer moments as named tensors, rebuilt into
    NamedParameters at their live dtype): a backend resumed from them takes the same next step.
    One device is open at a time (AutoContext is a singleton)."""
    from ttexp.train.checkpoint import CheckpointManager, load_checkpoint

    nxt = batches(nano, 1, seed=3)[0]
    a = _device_backend(nano)
    try:
        for x in batches(nano, 2):
            a.micro_step(x, 1.0)
            a.optimizer_step(1e-3, 1.0)
        assert a.optimizer_state().scalars["skeleton"]["steps"] == 2
        path = CheckpointManager(tmp_path, tiny_cfg(), None, None).save(2, a, {"step": 2}, None)
        a.micro_step(nxt, 1.0)
        want = a.optimizer_step(1e-3, 1.0).loss
    finally:
        a.close()
    b = _device_backend(nano)
    try:
        assert load_checkpoint(path, b)["step"] == 2
        b.micro_step(nxt, 1.0)
        assert b.optimizer_step(1e-3, 1.0).loss == want
    finally:
        b.close()


def test_cached_generation_matches_the_windowed_path_on_the_device(nano):
    from dataclasses import replace

    from ttexp.backends.base import SamplingParams

    b = _device_backend(nano)
    try:
        if not b.api.has_kv_cache:
            pytest.skip(f"this ttml has no KV cache ({b.api.describe()})")
        p = SamplingParams(max_new_tokens=8, temperature=0.0)
        cached = b.generate([70, 105, 114, 115, 116], p)
        b.api = replace(b.api, has_kv_cache=False)
        assert b.generate([70, 105, 114, 115, 116], p) == cached
    finally:
        b.close()


def test_doctor_selftest_passes_on_the_device(capsys):
    """The report an N150/N300 owner pastes: every conformance step passes on the device."""
    from ttexp.tools import doctor

    code = doctor.main(["--selftest"])
    out = capsys.readouterr().out
    assert code == 0, out


def test_lora_on_the_device_trains_the_adapter_alone_and_its_export_matches_peft(nano, tmp_path):
    """tt-train's ttml.modules.lora on nano: only lora_A/lora_B move, the optimizer holds them
    alone, and the PEFT-format adapter plus merged weights round-trip (what the double proves on
    CPU, here against the real module; skipped with a reason where this ttml has none)."""
    from ttexp.backends.ttml.backend import TtmlBackend
    from ttexp.backends.ttml.lora import lora_module
    from ttexp.config.schema import AdapterConfig, AdapterName

    b = TtmlBackend([1, 1], False, OPT, 0.0, seed=0)
    try:
        if lora_module(b.ttml) is None:
            pytest.skip("this tt-train has no ttml.modules.lora")
        b.build_model(nano)
        n = b.apply_adapter(AdapterConfig(name=AdapterName.lora, r=8, lora_alpha=16.0, lora_dropout=0.0,
                                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                          bias="none"))
        assert n > 0
        before = b.parameters_numpy()
        for batch in batches(nano, 2):
            b.micro_step(batch, 1.0)
            b.optimizer_step(1e-3, 1.0)
        after = b.parameters_numpy()
        changed = {k for k in before if not np.array_equal(before[k], after[k])}
        assert changed == set(b.lora.names())
        state = b.adapter_state()
        b.load_adapter_tensors({k: torch.from_numpy(v) for k, v in state.tensors.items()})
        assert all(np.array_equal(after[k], b.parameters_numpy()[k]) for k in b.lora.names())
    finally:
        b.close()
