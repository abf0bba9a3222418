"""LoRA adapters on disk and across backends: PEFT's directory format, the names of the Llama
projections on each backend, and the size of an adapter computed from the config alone.

An *adapter directory* is what PEFT's ``PeftModel.save_pretrained`` writes and
``PeftModel.from_pretrained`` loads onto a base: ``adapter_config.json`` (a ``LoraConfig``) and
``adapter_model.safetensors`` (tensors named e.g.
``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``). ttexp writes one into
``final_model/adapter/`` and into every LoRA checkpoint, and ``task=eval`` loads one onto its base.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from ttexp.config.schema import AdapterConfig, AdapterName
from ttexp.errors import TtexpError
from ttexp.models.memory import LoraShape, lora_params
from ttexp.models.spec import ModelSpec

ADAPTER_CONFIG_NAME = "adapter_config.json"
"""PEFT's adapter settings file (``peft.utils.CONFIG_NAME``)."""
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
"""PEFT's adapter weights file (``peft.utils.SAFETENSORS_WEIGHTS_NAME``)."""
ADAPTER_CONFIG_KEY = "adapter_config"
"""The key of a backend's adapter state (``NamedState.scalars``) that holds PEFT's adapter config
as ``adapter_config.json`` stores it."""
FINAL_ADAPTER_DIR = "adapter"
"""Where a LoRA fine-tune's ``final_model/`` keeps the adapter, next to the merged model."""

HF_TO_TTML_TARGETS: dict[str, str] = {
    "q_proj": "attention/q_linear",
    "k_proj": "attention/kv_linear",
    "v_proj": "attention/kv_linear",
    "o_proj": "attention/out_linear",
    "gate_proj": "mlp/w1",
    "up_proj": "mlp/w3",
    "down_proj": "mlp/w2",
}
"""Hugging Face Llama projection -> ttml Llama module (below ``llama/llama_block_{i}/``), for a
ttml whose Llama has separate ``q_linear`` and ``kv_linear`` and an unpacked MLP.

ttml fuses K and V into one ``kv_linear`` (tt-train ``configs/lora_configs/tinyllama.yaml``
@e6287b35 targets ``q_linear`` and ``kv_linear``), so ``k_proj`` and ``v_proj`` both map to it and
one adapter (one A) spans both; the MLP is SwiGLU ``w1`` (gate), ``w3`` (up), ``w2`` (down). Newer
Python Llamas fuse Q, K and V into ``qkv_linear`` (tt-train ``examples/lora_llama/
train_lora_llama.py`` @012fd65b targets ``qkv_linear`` and ``out_linear``) and may pack gate and
up into ``w_gate_up``: :func:`ttml_targets` takes the layout found in the built model's parameter
names (:func:`ttexp.models.ttml_weights.detect_layout`)."""


def is_adapter_dir(path: Path) -> bool:
    """True when ``path`` holds a PEFT adapter (``adapter_config.json``)."""
    return (Path(path) / ADAPTER_CONFIG_NAME).is_file()


def read_adapter_config(path: Path) -> dict[str, Any]:
    """The parsed ``adapter_config.json`` of an adapter directory.

    Raises:
        TtexpError: the file is missing, not JSON, or not a LoRA adapter.
    """
    file = Path(path) / ADAPTER_CONFIG_NAME
    try:
        conf = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise TtexpError(f"Could not read {file}: {exc}. Is {path} a PEFT adapter directory?") from None
    if not isinstance(conf, dict) or conf.get("peft_type") != "LORA":
        raise TtexpError(f"{file} is not a LoRA adapter (peft_type {conf.get('peft_type')!r}); "
                         "ttexp loads LoRA adapters only.")
    return conf


def read_adapter_weights(path: Path) -> dict[str, Any]:
    """The tensors of ``path/adapter_model.safetensors`` (PEFT names), read with safetensors.

    Raises:
        TtexpError: the file is missing or unreadable.
    """
    from safetensors.torch import load_file

    file = Path(path) / ADAPTER_WEIGHTS_NAME
    try:
        return load_file(str(file))
    except Exception as exc:  # OSError, or safetensors' own error types
        raise TtexpError(f"Could not read the adapter {file}: {exc}.") from None


def adapter_from_peft(conf: Mapping[str, Any]) -> AdapterConfig:
    """ttexp's ``adapter`` section equivalent to a PEFT ``adapter_config.json`` dict."""
    return AdapterConfig(name=AdapterName.lora, r=int(conf["r"]),
                         lora_alpha=float(conf["lora_alpha"]),
                         lora_dropout=float(conf.get("lora_dropout") or 0.0),
                         target_modules=sorted(conf["target_modules"]),
                         bias=str(conf.get("bias", "none")))


def ttml_module_names(fused_qkv: bool = False, packed_mlp: bool = False) -> dict[str, str]:
    """Hugging Face projection -> the ttml module (below a block) that holds it, for a layout
    (:data:`HF_TO_TTML_TARGETS`, with ``qkv_linear`` when ``fused_qkv``, ``w_gate_up`` when
    ``packed_mlp``). A fused module stacks its projections' rows in Hugging Face order (q, k, v;
    gate, up), as :func:`ttexp.models.ttml_weights.hf_to_ttml` packs the weights."""
    names = dict(HF_TO_TTML_TARGETS)
    if fused_qkv:
        names.update(q_proj="attention/qkv_linear", k_proj="attention/qkv_linear",
                     v_proj="attention/qkv_linear")
    if packed_mlp:
        names.update(gate_proj="mlp/w_gate_up", up_proj="mlp/w_gate_up")
    return names


def ttml_targets(adapter: AdapterConfig, num_layers: int, fused_qkv: bool = False,
                 packed_mlp: bool = False) -> list[str]:
    """The ttml module names that ``adapter.target_modules`` (Hugging Face names) select, in the
    form of tt-train's ``lora_configs/*.yaml``: ``llama/llama_block_{i}/attention/q_linear``, ...
    (``k_proj`` and ``v_proj`` give one ``kv_linear``; with ``fused_qkv`` any of q, k, v gives
    ``qkv_linear``; with ``packed_mlp`` gate or up gives ``w_gate_up``)."""
    names = ttml_module_names(fused_qkv, packed_mlp)
    suffixes = sorted({names[m] for m in adapter.target_modules})
    return [f"llama/llama_block_{i}/{s}" for i in range(num_layers) for s in suffixes]


def lora_parameter_count(spec: ModelSpec, adapter: AdapterConfig) -> int:
    """Trainable parameters of PEFT's LoRA on ``spec`` (no weights needed): per target and layer,
    A is (r, in_features) and B is (out_features, r) (Hu et al. 2021, arXiv:2106.09685, §4.1;
    PEFT ``LoraLayer.update_layer``). Bias settings other than 'none' add nothing on Llama, whose
    projections have no bias."""
    return lora_params(spec, LoraShape(adapter.r, tuple(adapter.target_modules)))
