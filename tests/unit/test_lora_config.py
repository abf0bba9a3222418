"""adapter=lora: validation, the size of an adapter from the config alone, the HF -> ttml target
names, the n150 preset, and the torch backend training only the adapters."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import compose_cfg
from ttexp.config.schema import AdapterConfig, AdapterName, OptimizerConfig
from ttexp.config.validate import validate_config
from ttexp.data.batch import Batch
from ttexp.errors import CheckpointError, ConfigError, TtexpError
from ttexp.models.adapter import lora_parameter_count, ttml_targets
from ttexp.models.spec import ModelSpec, param_breakdown

SHAPES_ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

FT = ["task=finetune", "model.pretrained_path=/nonexistent/base", "adapter=lora"]


def _problems(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as exc:
        validate_config(compose_cfg(overrides))
    return str(exc.value)


def test_lora_settings_are_validated_each_with_its_key_and_fix():
    msg = _problems([*FT, "adapter.r=0", "adapter.lora_dropout=1.0", "adapter.bias=some",
                     "adapter.target_modules=[q_proj,qkv]"])
    for part in ("adapter.r=0 must be at least 1", "adapter.lora_dropout=1.0 must be in [0, 1)",
                 "adapter.bias=some must be one of", "adapter.target_modules=['q_proj', 'qkv']",
                 "e.g. adapter.target_modules=[q_proj,v_proj]"):
        assert part in msg
    assert "adapter.target_modules=[]" in _problems([*FT, "adapter.target_modules=[]"])
    validate_config(compose_cfg([*FT, "adapter.lora_dropout=0", "adapter.r=1"]))  # 0 is a value


def test_lora_on_a_random_initialisation_is_refused_with_the_reason():
    msg = _problems(["task=scratch", "adapter=lora"])
    assert "only makes sense on pretrained weights" in msg and "adapter=none for task=scratch" in msg


def test_the_n150_preset_trains_tt_trains_tinyllama_lora_and_full_fine_tuning_is_one_override():
    cfg = compose_cfg(["experiment=trickster_n150"])
    # tt-train configs/lora_configs/tinyllama.yaml @e6287b35: r 128, alpha 1.0, dropout 0,
    # is_bias_trainable false, q_linear + kv_linear of llama_block_0..21
    assert (cfg.adapter.name, cfg.adapter.r, cfg.adapter.lora_alpha, cfg.adapter.lora_dropout,
            cfg.adapter.bias) == (AdapterName.lora, 128, 1.0, 0.0, "none")
    assert ttml_targets(cfg.adapter, cfg.model.num_layers) == [
        f"llama/llama_block_{i}/attention/{m}" for i in range(22) for m in ("kv_linear", "q_linear")]
    assert compose_cfg(["experiment=trickster_n150", "adapter=none"]).adapter.name == AdapterName.none
    # a newer Python Llama fuses Q, K and V (tt-train examples/lora_llama/train_lora_llama.py @012fd65b)
    assert ttml_targets(cfg.adapter, 1, fused_qkv=True) == ["llama/llama_block_0/attention/qkv_linear"]
    every = AdapterConfig(name=AdapterName.lora, target_modules=list(SHAPES_ALL))
    assert ttml_targets(every, 1, packed_mlp=True) == [f"llama/llama_block_0/{m}" for m in (
        "attention/kv_linear", "attention/out_linear", "attention/q_linear", "mlp/w2", "mlp/w_gate_up")]


SHAPES = {
    "tiny": ModelSpec(name="tiny", vocab_size=400, hidden_dim=32, num_layers=2, num_heads=4,
                      num_kv_heads=2, mlp_dim=64, max_seq_len=64),
    # TinyLlama-1.1B's config.json: 22 layers, 2048 wide, 32 heads, 4 KV heads, 5632 MLP, 32000 vocab
    "tinyllama": ModelSpec(name="tinyllama", vocab_size=32000, hidden_dim=2048, num_layers=22,
                           num_heads=32, num_kv_heads=4, mlp_dim=5632, max_seq_len=2048,
                           tie_word_embeddings=False),
}


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj",
                                                             "gate_proj", "up_proj", "down_proj"]])
def test_the_adapter_size_from_the_config_is_what_peft_builds(targets):
    from transformers import LlamaForCausalLM

    from ttexp.backends.torch_lora import wrap_with_lora
    from ttexp.models.hf import llama_config

    spec = SHAPES["tiny"]
    adapter = AdapterConfig(name=AdapterName.lora, r=4, target_modules=targets)
    model = wrap_with_lora(LlamaForCausalLM(llama_config(spec)), adapter)
    assert lora_parameter_count(spec, adapter) == sum(
        p.numel() for p in model.parameters() if p.requires_grad)


def test_tinyllama_with_tt_trains_lora_values_trains_a_few_percent(capsys):
    spec = SHAPES["tinyllama"]
    total = param_breakdown(spec).total
    adapter = compose_cfg(["experiment=trickster_n150"]).adapter
    trained = lora_parameter_count(spec, adapter)
    # per layer: r 128 x (2048 + 2048) for q, 128 x (2048 + 256) for each of k and v
    assert trained == 22 * 128 * (4096 + 2 * 2304) == 24_510_464
    assert total == 1_100_048_384  # TinyLlama-1.1B's published parameter count
    with capsys.disabled():
        every = AdapterConfig(name=AdapterName.lora, r=4, target_modules=list(SHAPES_ALL))
        tiny = SHAPES["tiny"]
        print(f"\nLoRA trainable/total: tinyllama (tt-train values) {trained:,}/{total:,} = "
              f"{trained / total:.2%}; tiny (r=4, all 7) {lora_parameter_count(tiny, every):,}"
              f"/{param_breakdown(tiny).total:,}")


def _backend():
    from ttexp.backends.torch_backend import TorchBackend

    return TorchBackend(torch.device("cpu"), "fp32", OptimizerConfig(), weight_decay=0.01)


def _batch(seed: int) -> Batch:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(4, 16))
    return Batch(inputs=x, labels=np.roll(x, -1, axis=1), attention_mask=None)


def test_torch_lora_trains_only_the_adapters_and_leaves_the_base_bit_identical():
    torch.manual_seed(0)
    backend = _backend()
    total = backend.build_model(SHAPES["tiny"])
    base_before = {k: v.clone() for k, v in backend.weight_tensors().items()}
    adapter = AdapterConfig(name=AdapterName.lora, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    trained = backend.apply_adapter(adapter)
    assert trained == lora_parameter_count(SHAPES["tiny"], adapter) < total
    in_optimizer = {id(p) for g in backend.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for n, p in backend.model.named_parameters() if "lora_" in n}
    adapter_before = {k: v.clone() for k, v in backend.adapter_state().tensors.items()}
    for step in range(3):
        backend.micro_step(_batch(step), 1.0)
        backend.optimizer_step(1e-2, 1.0)
    base_after = backend.weight_tensors()
    assert base_after.keys() == base_before.keys()  # Hugging Face names, no PEFT prefixes
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    adapter_after = backend.adapter_state().tensors
    assert any(not torch.equal(adapter_before[k], adapter_after[k]) for k in adapter_before)


def test_an_adapter_of_another_shape_is_refused_naming_the_settings():
    torch.manual_seed(0)
    backend = _backend()
    backend.build_model(SHAPES["tiny"])
    backend.apply_adapter(AdapterConfig(name=AdapterName.lora, r=4))
    wrong = {k: torch.zeros(2, 2) for k in backend.adapter_state().tensors}
    with pytest.raises(TtexpError, match="adapter.r, adapter.target_modules"):
        backend.load_adapter_tensors(wrong)
    plain = _backend()
    plain.build_model(SHAPES["tiny"])
    with pytest.raises(TtexpError, match="resume with adapter=lora"):
        plain.load_adapter_tensors(wrong)


def _lora_backend_on(base_dir: Path):
    backend = _backend()
    backend.load_pretrained(str(base_dir))
    backend.apply_adapter(AdapterConfig(name=AdapterName.lora, r=4, lora_dropout=0.1))
    return backend


def test_a_lora_checkpoint_holds_the_adapter_resumes_it_exactly_and_refuses_a_changed_base(
        tmp_path, tiny_llama_dir):
    from safetensors.torch import load_file, save_file

    from ttexp.train import checkpoint as ck

    base = tmp_path / "base"
    shutil.copytree(tiny_llama_dir, base)
    torch.manual_seed(0)
    trained = _lora_backend_on(base)
    for step in range(2):
        trained.micro_step(_batch(step), 1.0)
        trained.optimizer_step(1e-2, 1.0)
    cfg = compose_cfg(["debug=tiny"], tmp_path / "run")
    saved = ck.CheckpointManager(tmp_path / "run", cfg, None, None).save(2, trained, {"step": 2}, None)
    assert {"adapter_model.safetensors", "adapter_config.json"} <= {p.name for p in saved.iterdir()}
    assert not (saved / "model.safetensors").exists()

    torch.manual_seed(1)  # another initialisation of A: the checkpoint must replace it
    resumed = _lora_backend_on(base)
    ck.load_checkpoint(saved, resumed)
    want, got = trained.adapter_state().tensors, resumed.adapter_state().tensors
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    a, b = trained.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(a[i]["exp_avg_sq"], b[i]["exp_avg_sq"]) for i in a)

    weights = load_file(str(base / "model.safetensors"))
    weights["model.norm.weight"] = weights["model.norm.weight"] + 1
    save_file(weights, str(base / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="no longer the same"):
        ck.load_checkpoint(saved, _lora_backend_on(base))


def test_resuming_with_other_adapter_settings_is_a_model_mismatch():
    from omegaconf import OmegaConf

    from ttexp.config.convert import config_yaml
    from ttexp.train.checkpoint import model_mismatches

    lora = compose_cfg([*FT, "adapter.r=8"])
    saved = OmegaConf.create(config_yaml(lora))
    assert model_mismatches(saved, lora) == []
    assert model_mismatches(saved, compose_cfg([*FT, "adapter.r=16"])) == [
        "adapter.r: checkpoint 8, this run 16"]
    assert "adapter.name: checkpoint 'lora', this run 'none'" in model_mismatches(
        saved, compose_cfg([*FT, "adapter=none"]))
    full = OmegaConf.create(config_yaml(compose_cfg([*FT, "adapter=none"])))
    del full["adapter"]  # a checkpoint from before the adapter group
    assert model_mismatches(full, compose_cfg([*FT, "adapter=none"])) == []
    assert model_mismatches(full, lora)[0] == "adapter.name: checkpoint 'none', this run 'lora'"
