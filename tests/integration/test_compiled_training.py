"""``training.compile=true`` on the torch backend: the decoder layers are compiled (one graph,
reused by every layer), training matches eager mode, and validation and generation stay eager
(no second compile for no-grad mode, none per decoding length)."""

import numpy as np
import pytest
import torch

from ttexp.backends.base import SamplingParams
from ttexp.backends.compile import decoder_layers
from ttexp.backends.torch_backend import TorchBackend
from ttexp.config.schema import OptimizerConfig
from ttexp.data.batch import Batch
from ttexp.models.spec import ModelSpec

SPEC = ModelSpec(name="t", vocab_size=64, hidden_dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                 mlp_dim=64, max_seq_len=32, tie_word_embeddings=True)


def _train(compile_: bool, tmp_path, monkeypatch) -> tuple[TorchBackend, list[float]]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # Inductor's cache goes there
    torch.manual_seed(0)
    backend = TorchBackend(torch.device("cpu"), "fp32", OptimizerConfig(), weight_decay=0.1,
                           compile=compile_)
    backend.build_model(SPEC)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(4):
        ids = rng.integers(0, SPEC.vocab_size, size=(2, 17))
        backend.micro_step(Batch(ids[:, :-1], ids[:, 1:]), 1.0)
        losses.append(backend.optimizer_step(lr=1e-2, max_grad_norm=1.0).loss)
    return backend, losses


def test_compiled_layers_train_as_eager_and_validation_and_generation_compile_nothing(
        tmp_path, monkeypatch):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    _, eager = _train(False, tmp_path, monkeypatch)
    backend, compiled = _train(True, tmp_path, monkeypatch)
    layers = decoder_layers(backend.model)
    assert len(layers) == SPEC.num_layers
    assert all(layer._compiled_call_impl is not None for layer in layers)
    assert backend.model._compiled_call_impl is None  # embedding, head and loss stay eager
    assert compiled == pytest.approx(eager, rel=1e-4)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    ids = np.arange(2 * 17).reshape(2, 17) % SPEC.vocab_size
    loss = backend.evaluate([Batch(ids[:, :-1], ids[:, 1:])])
    out = backend.generate([1, 2, 3], SamplingParams(max_new_tokens=5, temperature=1.0, top_k=0,
                                                     top_p=1.0, seed=0))
    assert np.isfinite(loss) and len(out) == 5
    assert counters["stats"]["unique_graphs"] == graphs  # nothing compiled for eval or decoding
    torch._dynamo.reset()


def test_auto_compiles_a_shape_measured_as_worth_it_and_records_what_this_run_measured(
        tmp_path, monkeypatch):
    """compile=auto in the real backend: the key is this run's shape, a stored measurement
    (cheap compile, large gain) makes even an 11-step run compile, and the run stores its own
    measured cost and gain under the same key."""
    from ttexp.backends.compile import CompileCosts, cost_key

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    torch._dynamo.reset()
    torch.manual_seed(0)
    backend = TorchBackend(torch.device("cpu"), "fp32", OptimizerConfig(), weight_decay=0.1,
                           compile="auto", planned_steps=11)
    backend.build_model(SPEC)
    key = cost_key(backend.model.config, (2, 16), "fp32", False, False, "cpu")
    costs = CompileCosts(tmp_path / "cache" / "ttexp" / "compile_costs.json")
    costs.put(key, cost_s=0.0, gain=0.9)
    rng = np.random.default_rng(0)
    for _ in range(11):
        ids = rng.integers(0, SPEC.vocab_size, size=(2, 17))
        backend.micro_step(Batch(ids[:, :-1], ids[:, 1:]), 1.0)
        backend.optimizer_step(lr=1e-2, max_grad_norm=1.0)
    assert backend._auto.key == key and backend._auto.decided is True
    assert all(layer._compiled_call_impl is not None for layer in decoder_layers(backend.model))
    measured = costs.get(key)
    assert measured["cost_s"] == pytest.approx(backend._auto.measured_cost_s, abs=1e-3)
    assert measured["gain"] == pytest.approx(backend._auto.measured_gain, abs=1e-3)
    assert measured["gain"] != 0.9  # replaced by what this run measured
    torch._dynamo.reset()
