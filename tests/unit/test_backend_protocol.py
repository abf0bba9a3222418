"""Every backend against the one Protocol the loop and tasks use (ttexp.backends.base.Backend):
each member present, each method with the Protocol's parameters, in order."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ttml_double as dbl  # noqa: E402

from ttexp.backends.base import Backend  # noqa: E402
from ttexp.backends.torch_backend import TorchBackend  # noqa: E402
from ttexp.backends.ttml.backend import TtmlBackend  # noqa: E402
from ttexp.config.schema import OptimizerConfig  # noqa: E402

PROTOCOL_METHODS = [name for name, member in vars(Backend).items()
                    if inspect.isfunction(member) and not name.startswith("_")]
PROTOCOL_ATTRIBUTES = list(Backend.__annotations__)


def _torch() -> TorchBackend:
    return TorchBackend(torch.device("cpu"), "fp32", OptimizerConfig(), weight_decay=0.0)


def _ttml() -> TtmlBackend:
    ttml, ttnn = dbl.make("B")
    return TtmlBackend([1, 1], False, OptimizerConfig(), 0.0, seed=0, ttml=ttml, ttnn=ttnn)


BACKENDS = {"torch": _torch, "ttml-double": _ttml}


def test_the_protocol_lists_what_the_loop_and_tasks_use():
    assert {"build_model", "micro_step", "optimizer_step", "evaluate", "generate", "weight_tensors",
            "load_weights", "optimizer_state", "load_optimizer_state", "save_pretrained",
            "load_pretrained", "close"} <= set(PROTOCOL_METHODS)
    assert {"name", "device_name", "precision_name"} <= set(PROTOCOL_ATTRIBUTES)


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_conforms_to_the_protocol(name):
    backend = BACKENDS[name]()
    try:
        assert isinstance(backend, Backend)  # runtime_checkable: every member exists
        for attr in PROTOCOL_ATTRIBUTES:
            assert isinstance(getattr(backend, attr), str), attr
        for method in PROTOCOL_METHODS:
            want = list(inspect.signature(getattr(Backend, method)).parameters)[1:]  # drop self
            got = list(inspect.signature(getattr(backend, method)).parameters)
            assert got == want, f"{name}.{method}{got} differs from Backend.{method}{want}"
    finally:
        backend.close()


def test_a_backend_missing_a_member_is_not_a_backend():
    class Partial:
        name, device_name, precision_name = "x", "cpu", "fp32"

        def build_model(self, spec, init_from=None):
            return 0

    assert not isinstance(Partial(), Backend)
