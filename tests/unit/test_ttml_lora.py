"""adapter=lora on the ttml backend (ttexp.backends.ttml.lora) through the strict double of
tt-train's ttml.modules.lora (tests/ttml_double_lora.py): detection and refusals, the mapping of
ttml's fused adapters to PEFT's separate ones (RoPE rows included), and an export that PEFT loads
onto the base with the logits the double computes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ttml_double as dbl  # noqa: E402
import ttml_double_lora as dlora  # noqa: E402

from conftest import bf16_exact_copy  # noqa: E402
from test_ttml_backend import OPT, SPEC  # noqa: E402
from ttexp.backends.ttml.backend import TtmlBackend  # noqa: E402
from ttexp.backends.ttml.lora import lora_module, peft_key  # noqa: E402
from ttexp.backends.ttml.tensors import padded_tokens  # noqa: E402
from ttexp.config.schema import AdapterConfig, AdapterName  # noqa: E402
from ttexp.errors import BackendUnavailable, TtexpError  # noqa: E402
from ttexp.models.ttml_weights import TtmlLayout  # noqa: E402

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SPLIT, FUSED = TtmlLayout(), TtmlLayout(fused_qkv=True, packed_mlp=True)
CPP = TtmlLayout(prefix="llama", block="llama_block_{}")


def adapter(targets=ALL, r=4, alpha=8.0) -> AdapterConfig:
    return AdapterConfig(name=AdapterName.lora, r=r, lora_alpha=alpha, lora_dropout=0.0,
                         target_modules=list(targets), bias="none")


def backend(layout=SPLIT, lora=True, spec=SPEC, init_from=None) -> TtmlBackend:
    ttml, ttnn = dbl.make("B", layout, lora=lora)
    b = TtmlBackend([1, 1], False, OPT, 0.0, seed=0, ttml=ttml, ttnn=ttnn)
    b.build_model(spec, init_from=init_from)
    return b


def randomise_adapter(b: TtmlBackend, seed: int = 3) -> None:
    """Give B non-zero values (it starts at zero), so the adapter changes the logits; bf16 values,
    as ttml stores them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in b.lora.names():
            p = b.model.parameters()[name].value
            p.copy_((torch.randn(p.shape, generator=g) * 0.2).bfloat16().float())


def test_the_double_declares_tt_trains_keywords_strictly():
    cfg = dlora.LoraConfig(rank=2, alpha=4.0, target_modules=["x"], use_rslora=False,
                           is_bias_trainable=False, trainable_modules=[], lora_dropout=0.0)
    assert cfg.rank == 2
    with pytest.raises(TypeError):
        dlora.LoraConfig(r=2)  # PEFT's name, not ttml's


def test_detection_and_refusals():
    assert lora_module(dbl.make(lora=False)[0]) is None
    b = backend(lora=False)
    with pytest.raises(BackendUnavailable, match="ttml.modules.lora"):
        b.apply_adapter(adapter())
    b.close()
    b = backend(layout=CPP)
    with pytest.raises(BackendUnavailable, match="Python Llama"):
        b.apply_adapter(adapter())
    b.close()
    for layout, targets, missing in ((SPLIT, ["k_proj"], "v_proj"), (FUSED, ["q_proj", "v_proj"], "k_proj"),
                                     (FUSED, ["gate_proj"], "up_proj")):
        b = backend(layout=layout)
        with pytest.raises(BackendUnavailable, match=f"without {missing}"):
            b.apply_adapter(adapter(targets))
        b.close()


@pytest.mark.parametrize("layout", [SPLIT, FUSED], ids=["split", "fused"])
def test_only_the_adapter_trains_and_the_optimizer_holds_it_alone(layout):
    b = backend(layout=layout)
    n = b.apply_adapter(adapter(["q_proj", "k_proj", "v_proj"]))
    d, kv = SPEC.hidden_dim, SPEC.num_kv_heads * SPEC.head_dim
    # q and kv_linear (one shared A for K and V), or one qkv_linear: r x (in + out) each
    want = 4 * (d + d) + 4 * (d + 2 * kv) if layout == SPLIT else 4 * (d + d + 2 * kv)
    assert n == SPEC.num_layers * want
    before = {k: v.copy() for k, v in b.parameters_numpy().items()}
    w = np.random.default_rng(1).integers(0, 256, size=(4, SPEC.max_seq_len + 1))
    from ttexp.data.batch import Batch

    for _ in range(2):  # B starts at zero: the second step moves A too
        b.micro_step(Batch(inputs=w[:, :-1], labels=w[:, 1:]), 1.0)
        b.optimizer_step(1e-2, 1.0)
    changed = {k for k, v in b.parameters_numpy().items() if not np.array_equal(v, before[k])}
    assert changed == set(b.lora.names())
    assert sorted(b.optimizer.get_state_dict()["exp_avg"].keys()) == sorted(b.lora.names())
    b.close()


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
@pytest.mark.parametrize("layout", [SPLIT, FUSED], ids=["split", "fused"])
def test_export_loads_in_peft_and_transformers_with_the_doubles_logits(layout, tmp_path, tiny_llama_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ttml, ttnn = dbl.make("B", layout)
    b = TtmlBackend([1, 1], False, OPT, 0.0, seed=0, ttml=ttml, ttnn=ttnn)
    base_dir = bf16_exact_copy(tiny_llama_dir, tmp_path / "base")
    b.load_pretrained(str(base_dir))
    b.apply_adapter(adapter())
    randomise_adapter(b)
    out = tmp_path / "final_model"
    out.mkdir()
    b.save_pretrained(out, type("Tok", (), {"save_pretrained": lambda self, d: None})())
    ids = list(range(5, 25))
    host = padded_tokens(ids)
    own = b.to_host(b.logits(b.to_device(host, tile=False), b.causal(host.shape[-1])))
    b.ctx.reset_graph()
    own = own.reshape(-1, own.shape[-1])[: len(ids), : b.spec.vocab_size]
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    with torch.no_grad():
        x = torch.tensor([ids])
        plain = base(input_ids=x).logits[0].numpy()
        on_base = PeftModel.from_pretrained(base, out / "adapter")
        want_merged, want_peft = merged(input_ids=x).logits[0].numpy(), on_base(input_ids=x).logits[0].numpy()
    assert np.abs(want_peft - plain).max() > 0.05  # the adapter is not a no-op ...
    # ... and all three agree to float32 rounding
    np.testing.assert_allclose(want_merged, want_peft, atol=1e-5, rtol=0)
    np.testing.assert_allclose(own, want_peft, atol=1e-5, rtol=0)
    # the exported adapter loads back into a fresh ttml adapter, giving the same tensors
    from ttexp.models.adapter import read_adapter_weights

    saved = read_adapter_weights(out / "adapter")
    live = {k: v.copy() for k, v in b.parameters_numpy().items() if k in b.lora.names()}
    randomise_adapter(b, seed=9)
    b.load_adapter_tensors(saved)
    now = b.parameters_numpy()
    assert all(np.array_equal(now[k], v) for k, v in live.items())
    b.close()


def test_a_peft_adapter_with_separate_k_and_v_a_is_refused_on_fused_kv():
    b = backend()
    b.apply_adapter(adapter(["k_proj", "v_proj"]))
    state = b.adapter_state()
    tensors = {k: torch.from_numpy(v.copy()) for k, v in state.tensors.items()}
    tensors[peft_key(1, "v_proj", "lora_A")] += 1.0
    with pytest.raises(TtexpError, match="layer 1: k_proj/v_proj have different lora_A"):
        b.load_adapter_tensors(tensors)
    del tensors[peft_key(0, "k_proj", "lora_B")]
    with pytest.raises(TtexpError, match="missing base_model.model.model.layers.0.self_attn.k_proj.lora_B"):
        b.load_adapter_tensors(tensors)
    b.close()


def test_backend_ttml_refuses_k_without_v_before_anything_loads():
    from conftest import compose_cfg
    from ttexp.config.validate import validate_config
    from ttexp.errors import ConfigError

    with pytest.raises(ConfigError, match="on backend=ttml: ttml's Llama fuses K and V"):
        validate_config(compose_cfg(["task=finetune", "backend=ttml", "adapter=lora", "model.pretrained_path=/x"]))
    validate_config(compose_cfg(["task=finetune", "backend=torch", "adapter=lora", "model.pretrained_path=/x"]))
