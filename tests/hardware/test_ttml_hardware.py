"""On Tenstorrent hardware only: nano trains on one device, agrees with the torch backend, and its
checkpoint loads in torch. Skipped (and listed as skipped) wherever tt-train's ttml does not import."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttexp.backends.detect import ttml_status

USABLE, WHY = ttml_status()
pytestmark = [pytest.mark.ttml, pytest.mark.skipif(not USABLE, reason=f"needs tt-train's ttml: {WHY}")]

OPT = {"beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "fused": None, "use_moreh_adamw": False,
       "use_kahan_summation": False}


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
