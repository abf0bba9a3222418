"""The one mapping between ttexp's ``model.*`` keys and Hugging Face Llama configs.

Every place that crosses the boundary goes through here: building a ``transformers.LlamaConfig``
from a :class:`~ttexp.models.spec.ModelSpec` (torch backend, ttml ``save_pretrained``, bench),
reading a model directory's ``config.json`` into ``model.*`` keys (fine-tune, eval, the ttml
backend's ``load_pretrained``), and the file names Hugging Face gives a model directory.

=======================  ===========================
``model.*`` key          ``config.json`` key
=======================  ===========================
vocab_size               vocab_size
hidden_dim               hidden_size
num_layers               num_hidden_layers
num_heads                num_attention_heads
num_kv_heads             num_key_value_heads
mlp_dim                  intermediate_size
max_seq_len              max_position_embeddings
rope_theta               rope_theta (transformers 5: rope_parameters.rope_theta)
rms_norm_eps             rms_norm_eps
tie_word_embeddings      tie_word_embeddings
dropout                  attention_dropout
=======================  ===========================
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

from ttexp.errors import TtexpError
from ttexp.models.spec import ARCHITECTURE_KEYS, ModelSpec

WEIGHTS_NAME = "model.safetensors"
"""Hugging Face's weights file name: model directories, final_model/ and checkpoints use it."""
CONFIG_NAME = "config.json"
"""Hugging Face's architecture file in a model directory."""
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
"""Hugging Face's tokenizer settings file in a model directory."""
REMOTE_CODE_KEY = "auto_map"
"""The key with which a config.json or tokenizer_config.json asks ``transformers`` to import Python
code shipped with the model (``trust_remote_code``); ttexp never runs it."""

MODEL_TO_HF: dict[str, str] = {
    "vocab_size": "vocab_size",
    "hidden_dim": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
    "mlp_dim": "intermediate_size",
    "max_seq_len": "max_position_embeddings",
    "rope_theta": "rope_theta",
    "rms_norm_eps": "rms_norm_eps",
    "tie_word_embeddings": "tie_word_embeddings",
    "dropout": "attention_dropout",
}
"""``model.*`` key -> ``config.json`` key: the architecture keys, plus dropout (HF records it)."""

HF_DEFAULTS: dict[str, Any] = {
    "max_seq_len": 2048, "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
}
"""``LlamaConfig``'s defaults for the keys an older config.json may leave out."""


def read_hf_config(model_dir: Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a model directory.

    Raises:
        TtexpError: the file is missing or not JSON.
    """
    path = Path(model_dir) / CONFIG_NAME
    try:
        hf = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TtexpError(f"Could not read {path}: {exc}. Is {model_dir} a model directory?") from None
    refuse_remote_code(model_dir)
    return hf


def refuse_remote_code(model_dir: Path) -> None:
    """Refuse a model directory that asks for its own Python code to be run.

    ``transformers`` imports the modules named under ``auto_map`` when it is allowed to
    (``trust_remote_code``), and on a terminal it asks whether to; ttexp passes
    ``trust_remote_code=False`` to every load and refuses such a directory first, with a message,
    instead of a prompt whose "y" would run a file.

    Raises:
        TtexpError: ``config.json`` or ``tokenizer_config.json`` has an ``auto_map`` entry.
    """
    for name in (CONFIG_NAME, TOKENIZER_CONFIG_NAME):
        path = Path(model_dir).expanduser() / name
        try:
            conf = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # absent or unreadable: the loader that needs it says so
        if isinstance(conf, dict) and REMOTE_CODE_KEY in conf:
            raise TtexpError(
                f"{path} has '{REMOTE_CODE_KEY}': the model asks to run its own Python code, which "
                "ttexp never does (trust_remote_code=False). Use a Llama model directory without "
                f"'{REMOTE_CODE_KEY}' (ttexp trains Llama-family models with transformers' own code).")


def model_keys_from_hf(hf: Mapping[str, Any], source: Any = CONFIG_NAME) -> dict[str, Any]:
    """The ``model.*`` keys a Hugging Face config dict sets.

    Keys absent (or null) in ``hf`` are left out; ``num_kv_heads`` is None (ttexp's "same as
    num_heads") when it equals ``num_heads``; ``rope_theta`` is read from transformers 5's
    ``rope_parameters`` when it is not at the top level.

    Args:
        hf: a parsed ``config.json`` (or ``LlamaConfig.to_dict()``).
        source: where ``hf`` came from, for the error message.

    Returns:
        ``{model key: value}``, values as they are in the JSON (ints, floats, bools).

    Raises:
        TtexpError: ``hf`` describes a model that is not Llama-family (``model_type``).
    """
    if hf.get("model_type") not in ("llama", None):
        raise TtexpError(f"{source} holds a {hf.get('model_type')} model; ttexp trains Llama-family models.")
    out: dict[str, Any] = {}
    for key, hf_key in MODEL_TO_HF.items():
        value = hf.get(hf_key)
        if key == "rope_theta" and value is None:
            value = (hf.get("rope_parameters") or {}).get("rope_theta")
        if value is not None:
            out[key] = value
    if "num_kv_heads" in out and out["num_kv_heads"] == out.get("num_heads"):
        out["num_kv_heads"] = None
    return out


def hf_from_model_keys(model: Mapping[str, Any]) -> dict[str, Any]:
    """The ``config.json`` keys of a ``model.*`` mapping (the inverse of :func:`model_keys_from_hf`).

    Args:
        model: the ``model`` config section, or ``dataclasses.asdict`` of a ModelSpec; keys that
            are not in :data:`MODEL_TO_HF` (name, init_std, ...) are ignored, absent ones left out.

    Returns:
        ``{config.json key: value}``; ``num_key_value_heads`` is ``num_heads`` when
        ``num_kv_heads`` is None.
    """
    out = {hf_key: model[key] for key, hf_key in MODEL_TO_HF.items() if key in model}
    if out.get("num_key_value_heads") is None and "num_heads" in model:
        out["num_key_value_heads"] = model["num_heads"]
    return out


def spec_from_hf(hf: Mapping[str, Any], name: str, source: Any = CONFIG_NAME) -> ModelSpec:
    """The ModelSpec of a Hugging Face config dict (LlamaConfig defaults for optional keys).

    Args:
        hf: a parsed ``config.json``.
        name: the spec's name (e.g. the directory's name).
        source: where ``hf`` came from, for error messages.

    Raises:
        TtexpError: not a Llama-family model, or a shape key (vocab_size, hidden_size,
            num_hidden_layers, num_attention_heads, intermediate_size) is missing.
    """
    keys = {**HF_DEFAULTS, **model_keys_from_hf(hf, source)}
    keys.pop("dropout", None)  # a training setting: the spec's default (0) unless configured
    missing = [MODEL_TO_HF[k] for k in ARCHITECTURE_KEYS if k not in keys and k != "num_kv_heads"]
    if missing:
        raise TtexpError(f"{source} lacks {', '.join(missing)}: not a complete Llama config.")
    if keys.get("num_kv_heads") is None:
        keys["num_kv_heads"] = keys["num_heads"]
    return ModelSpec(name=name, **keys)


def llama_config(spec: ModelSpec) -> Any:
    """The ``transformers.LlamaConfig`` equivalent to ``spec`` (SDPA attention, no special token ids).

    ``initializer_range`` is ``spec.init_std``; ``attention_dropout`` is ``spec.dropout``.
    """
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        **hf_from_model_keys(dataclasses.asdict(spec)),
        initializer_range=spec.init_std,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    cfg._attn_implementation = "sdpa"
    return cfg


def write_tensors(path: Path, tensors: Mapping[str, Any]) -> None:
    """Write named host tensors (``torch.Tensor`` or ``np.ndarray``, mixed) as one safetensors
    file, ``metadata={"format": "pt"}`` so ``transformers`` loads it. Used for ``model.safetensors``
    (Hugging Face names) and for every tensor file of a checkpoint.

    Raises:
        OSError: the file cannot be written (e.g. a full disk).
    """
    import numpy as np
    import torch
    from safetensors.torch import save_file

    out = {}
    for name, t in tensors.items():
        t = torch.from_numpy(np.ascontiguousarray(t)) if isinstance(t, np.ndarray) else t
        out[name] = t.detach().contiguous().cpu()
    save_file(out, str(path), metadata={"format": "pt"})


def write_weights(directory: Path, tensors: Mapping[str, Any]) -> Path:
    """Write ``directory/model.safetensors`` from weights under Hugging Face names; its path."""
    path = Path(directory) / WEIGHTS_NAME
    write_tensors(path, tensors)
    return path


PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
"""The name transformers 4.x and 5.x both resolve to their generic fast tokenizer; 5.x saves its
generic class as "TokenizersBackend", which 4.x cannot load ("Tokenizer class TokenizersBackend
does not exist"; checked with transformers 4.45.0 and tokenizers 0.20.3)."""


def make_portable(model_dir: Path) -> None:
    """Let older ``transformers`` (>= 4.45, pyproject's lower bound) load a model directory that
    this one saved: the generic tokenizer class under :data:`PORTABLE_TOKENIZER_CLASS`, and
    ``rope_theta`` at the top level of config.json too (5.x nests it in ``rope_parameters``;
    4.x would read the missing key as its default 10000)."""
    tok_path = Path(model_dir) / "tokenizer_config.json"
    if tok_path.is_file():
        conf = json.loads(tok_path.read_text())
        if conf.get("tokenizer_class") == "TokenizersBackend":
            conf["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
            tok_path.write_text(json.dumps(conf, indent=2) + "\n")
    cfg_path = Path(model_dir) / CONFIG_NAME
    if cfg_path.is_file():
        conf = json.loads(cfg_path.read_text())
        theta = (conf.get("rope_parameters") or {}).get("rope_theta")
        if theta is not None and "rope_theta" not in conf:
            conf["rope_theta"] = theta
            cfg_path.write_text(json.dumps(conf, indent=2) + "\n")


def read_weights(directory: Path) -> dict[str, Any]:
    """The tensors of ``directory/model.safetensors``, else of its Hugging Face shards
    (``model-0000N-of-0000M.safetensors``), as float NumPy arrays; never a checkpoint's optimizer
    or RNG tensors, which sit beside the weights.

    Raises:
        TtexpError: no such file, or an unreadable one.
    """
    from safetensors.numpy import load_file

    single = Path(directory) / WEIGHTS_NAME
    files = [single] if single.is_file() else sorted(Path(directory).glob("model-*.safetensors"))
    if not files:
        raise TtexpError(f"No .safetensors file in {directory}: not a ttexp checkpoint or model dir.")
    out: dict[str, Any] = {}
    for f in files:
        try:
            out.update(load_file(str(f)))
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise TtexpError(f"Could not read {f}: {exc}. The file is damaged.") from None
    return out
