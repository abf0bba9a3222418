"""LoRA on the torch backend, through PEFT (``get_peft_model`` with a ``LoraConfig``).

PEFT freezes every base weight and adds ``lora_A``/``lora_B`` to each target projection; only
those are trainable, so only they reach the optimizer and the checkpoint. The adapter's state is
PEFT's own (``get_peft_model_state_dict``: names without the adapter name, as
``adapter_model.safetensors`` stores them), so a checkpoint's adapter is a PEFT adapter directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ttexp.backends.base import NamedState
from ttexp.config.schema import AdapterConfig
from ttexp.errors import TtexpError
from ttexp.models.adapter import ADAPTER_CONFIG_KEY, FINAL_ADAPTER_DIR


def wrap_with_lora(model: Any, adapter: AdapterConfig) -> Any:
    """``model`` (a ``transformers`` Llama) as a ``PeftModel`` with LoRA on ``adapter.target_modules``.

    Consumes random numbers (PEFT initialises A with Kaiming-uniform; B is zero, so the wrapped
    model starts equal to the base).
    """
    import warnings

    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=adapter.r, lora_alpha=adapter.lora_alpha,
                        lora_dropout=adapter.lora_dropout,
                        target_modules=list(adapter.target_modules), bias=adapter.bias,
                        task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # PEFT 0.21 asks transformers 5 a deprecated question
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def has_adapter(model: Any) -> bool:
    """True when ``model`` is a ``PeftModel`` (carries an adapter)."""
    return hasattr(model, "peft_config")


def base_state_dict(model: Any) -> dict[str, Any]:
    """The frozen base weights of a ``PeftModel`` under Hugging Face names (PEFT's
    ``.base_layer`` dropped, the adapter's tensors left out)."""
    return {k.replace(".base_layer.", "."): v
            for k, v in model.get_base_model().state_dict().items() if ".lora_" not in k}


def _json_config(model: Any) -> dict[str, Any]:
    """The PEFT adapter config as ``adapter_config.json`` holds it (sets as sorted lists)."""
    conf = model.peft_config["default"].to_dict()
    return json.loads(json.dumps(conf, default=lambda v: sorted(v) if isinstance(v, (set, frozenset))
                                 else str(v)))


def adapter_state(model: Any) -> NamedState:
    """The adapter's tensors under PEFT's file names, and its config under ``adapter_config``."""
    from peft import get_peft_model_state_dict

    tensors = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(model).items()}
    return NamedState(tensors, {ADAPTER_CONFIG_KEY: _json_config(model)})


def load_adapter_tensors(model: Any, tensors: dict[str, Any]) -> None:
    """Copy an adapter's tensors (PEFT names) into ``model``'s adapter, in place.

    Raises:
        TtexpError: a tensor is missing, unexpected or of another shape (another rank or targets).
    """
    from peft import set_peft_model_state_dict

    if not has_adapter(model):
        raise TtexpError("This checkpoint holds a LoRA adapter but the model has none; resume "
                         "with adapter=lora and the settings it was trained with.")
    expected = {k: v.shape for k, v in adapter_state(model).tensors.items()}
    problems = [f"missing {k}" for k in expected if k not in tensors]
    problems += [f"unexpected {k}" for k in tensors if k not in expected]
    problems += [f"{k}: saved {tuple(v.shape)}, model {tuple(expected[k])}"
                 for k, v in tensors.items() if k in expected and v.shape != expected[k]]
    if problems:
        raise TtexpError(f"The saved adapter does not fit this model's adapter ({len(problems)} "
                         f"problems: {'; '.join(problems[:6])}). Use the adapter settings "
                         "(adapter.r, adapter.target_modules) it was trained with.")
    set_peft_model_state_dict(model, dict(tensors))


def save_merged_and_adapter(model: Any, directory: Path) -> Any:
    """Write the adapter in PEFT's format to ``directory/adapter/``, then merge it into the base
    (``merge_and_unload``) and write the merged model to ``directory``; return the merged model.

    The merge replaces each target weight by ``W + (lora_alpha / r) * B @ A`` in place, so the
    backend must use the returned plain model afterwards (training cannot continue).
    """
    model.save_pretrained(str(Path(directory) / FINAL_ADAPTER_DIR), safe_serialization=True)
    merged = model.merge_and_unload(progressbar=False, safe_merge=True)
    merged.save_pretrained(str(directory), safe_serialization=True)
    return merged
