"""The memory plan against what a run really allocates (tests/memory_probe.py measures it).

Weights, gradients and AdamW state must equal the tensors after one real step, byte for byte;
the activation estimate must be within 25 % of the bytes saved for backward, for full and LoRA
fine-tuning, with and without activation checkpointing, in fp32 and bf16 autocast.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import compose_cfg  # noqa: E402
from memory_probe import (  # noqa: E402
    checkpointed_activation_bytes,
    saved_activation_bytes,
    state_bytes,
)

from ttexp.backends.torch_backend import TorchBackend  # noqa: E402
from ttexp.config.schema import OptimizerConfig  # noqa: E402
from ttexp.data.batch import Batch  # noqa: E402
from ttexp.errors import ConfigError  # noqa: E402
from ttexp.models.hf import llama_config  # noqa: E402
from ttexp.models.memory import (  # noqa: E402
    TORCH_BF16,
    TORCH_FP32,
    LoraShape,
    activation_bytes,
    estimate_memory,
    gib,
)
from ttexp.models.spec import ModelSpec  # noqa: E402
from ttexp.train import memory  # noqa: E402

README = Path(__file__).resolve().parents[2] / "README.md"

TINY_LLAMA = ModelSpec(name="tiny-llama", vocab_size=400, hidden_dim=32, num_layers=2, num_heads=4,
                       num_kv_heads=2, mlp_dim=64, max_seq_len=64, tie_word_embeddings=False)
"""The shape of conftest.build_tiny_llama_dir: GQA, untied."""
NANO = ModelSpec(name="nano", vocab_size=256, hidden_dim=256, num_layers=6, num_heads=8,
                 num_kv_heads=8, mlp_dim=768, max_seq_len=64)
"""conf/model/nano.yaml (context cut to 64, dropout 0 so saved tensors are deterministic)."""
LORA = LoraShape(r=4, target_modules=("q_proj", "v_proj"))
PRECISIONS = {"fp32": (None, dataclasses.replace(TORCH_FP32, dropout_math=True)),
              "bf16": (torch.bfloat16, dataclasses.replace(TORCH_BF16, dropout_math=True))}
"""The torch backend's profiles on CPU (tests/memory_probe.py runs there)."""


def build(spec: ModelSpec, lora: LoraShape | None, checkpointing: bool):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(spec))
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora is not None:
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(
            r=lora.r, lora_alpha=2 * lora.r, target_modules=list(lora.target_modules)))
    return model.train()


NANO_DROPOUT = dataclasses.replace(NANO, name="nano-dropout", dropout=0.1, num_layers=2)
"""nano's real dropout: SDPA on CPU takes the math path and keeps s x s tensors."""


@pytest.mark.parametrize("spec", [TINY_LLAMA, NANO, NANO_DROPOUT], ids=lambda s: s.name)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("lora", [None, LORA], ids=["full", "lora"])
def test_activation_estimate_within_25_percent(spec, precision, lora):
    dtype, profile = PRECISIONS[precision]
    b, s = 2, spec.max_seq_len
    measured, per_layer = saved_activation_bytes(build(spec, lora, False), b, s, spec.vocab_size, dtype)
    ckpt = checkpointed_activation_bytes(build(spec, lora, True), b, s, spec.vocab_size, dtype,
                                         max(per_layer))
    plain = activation_bytes(spec, b, s, profile, lora, checkpointing=False)
    recomputed = activation_bytes(spec, b, s, profile, lora, checkpointing=True)
    assert plain == pytest.approx(measured, rel=0.25)
    assert recomputed == pytest.approx(ckpt, rel=0.25)
    assert ckpt < measured  # checkpointing must save something on these shapes


@pytest.mark.parametrize("lora", [None, LORA], ids=["full", "lora"])
def test_state_bytes_equal_what_one_step_allocates(lora):
    spec = TINY_LLAMA
    backend = TorchBackend(torch.device("cpu"), "bf16", OptimizerConfig(), weight_decay=0.1)
    backend.build_model(spec)
    if lora is not None:  # PEFT wrapping as the LoRA backend does; only adapters are optimised
        import peft

        backend.model = peft.get_peft_model(backend.model, peft.LoraConfig(
            r=lora.r, target_modules=list(lora.target_modules)))
        backend._forward = backend.model
        backend.optimizer = backend._make_optimizer()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, spec.vocab_size, (2, 17))
    backend.micro_step(Batch(inputs=ids[:, :-1], labels=ids[:, 1:]), 1.0)
    grads = state_bytes(backend.model, backend.optimizer)["gradients"]
    backend.optimizer_step(1e-3, 1.0)
    real = state_bytes(backend.model, backend.optimizer)
    est = estimate_memory(spec, 2, 16, TORCH_BF16, lora)
    assert (est.weights, est.gradients, est.optimizer) == (real["weights"], grads, real["optimizer"])


def test_tinyllama_full_is_refused_on_n150_and_lora_fits():
    full = compose_cfg(["experiment=trickster_n150", "adapter=none"])
    plan = memory.memory_plan(full, "ttml", micro_batch_size=8)
    assert not plan.fits and plan.estimate.trainable_params == 1_100_048_384
    with pytest.raises(memory.MemoryTooSmall, match=r"adapter=lora \(\d+\.\d\d GiB\)") as err:
        plan.check()
    assert "hardware=p150" in str(err.value)
    lora = memory.memory_plan(compose_cfg(["experiment=trickster_n150"]), "ttml", 8)
    # the preset's LoRA (tt-train's lora_configs/tinyllama.yaml): r 128 on q (2048 -> 2048),
    # k and v (2048 -> 256 each, 4 KV heads of 64) in each of 22 layers
    r, width, kv = 128, 2048, 256
    assert lora.fits and lora.estimate.trainable_params == 22 * r * (2 * width + 2 * (width + kv))
    lora.check()


def test_readme_numbers_match_the_plan():
    text = README.read_text()
    section = text[text.index("## Memory plan"):]
    section = section[:section.index("\n## ", 4)]
    for overrides in (["adapter=none"], []):
        plan = memory.memory_plan(compose_cfg(["experiment=trickster_n150", *overrides]), "ttml", 8)
        for line in plan.lines()[1:]:
            if not line.strip().startswith("fits with"):
                assert line.strip() in section, f"README lacks the plan's line: {line.strip()}"
    assert re.search(r"python -m ttexp\.doctor experiment=trickster_n150", section)


def test_a_run_that_does_not_fit_is_refused_before_loading(tiny_cfg, monkeypatch):
    from conftest import run_cfg

    monkeypatch.setattr(memory, "torch_capacity", lambda device: ("a small device", 10_000))
    result = run_cfg(tiny_cfg())
    assert result["status"] == "failed"
    assert "has 0.0 MiB" in result["error"] and "a small device" in result["error"]
    assert result["memory"]["fits"] is False and result["memory"]["capacity"] == 10_000
    assert result.get("num_parameters") is None  # nothing was built


def test_unknown_lora_target_is_named():
    with pytest.raises(ValueError, match="not Llama linear layers"):
        estimate_memory(TINY_LLAMA, 1, 8, TORCH_FP32, LoraShape(4, ("qkv",)))
    assert issubclass(memory.MemoryTooSmall, ConfigError)
    assert (gib(2**30), gib(2**20)) == ("1.00 GiB", "1.0 MiB")
