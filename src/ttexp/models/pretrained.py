"""Starting points for fine-tuning and evaluation: model directories, their tokenizers, weights.

A *model directory* is what ``transformers`` saves (``config.json``, ``model.safetensors``,
tokenizer files): TinyLlama downloaded to disk, or any ttexp ``final_model/``. A *checkpoint*
(``checkpoints/step_N/``) holds only weights; its architecture and tokenizer come from the run
that wrote it (``resolved.yaml`` and ``result.json`` two levels up).

Where a fine-tune starts (:func:`finetune_source`):

* ``init_from=DIR`` with a ``config.json``: that directory (weights, architecture, tokenizer);
* ``init_from=CHECKPOINT``: its weights, on the architecture of ``model.pretrained_path`` when set,
  else of the ``model`` config, with the byte tokenizer;
* ``model.pretrained_path=DIR``: that directory (``model=tinyllama``);
* nothing: an error that says how to get weights (never a silent random initialisation).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ttexp.config.recorded import ORIGIN_FILE
from ttexp.config.section import evolve
from ttexp.config.schema import AdapterConfig, AdapterName, ModelConfig, RunConfig
from ttexp.config.validate import GET_WEIGHTS_HINT
from ttexp.errors import TtexpError
from ttexp.models.adapter import adapter_from_peft, read_adapter_config, read_adapter_weights
from ttexp.models.hf import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    model_keys_from_hf,
    read_hf_config,
    refuse_remote_code,
)
from ttexp.models.hub import local_snapshot
from ttexp.models.spec import ARCHITECTURE_KEYS
from ttexp.models.tokenizer import ByteTokenizer

log = logging.getLogger("ttexp")

ORIGIN_NAME = ORIGIN_FILE
"""Written into a fine-tuned final_model/: the base model, prompt template and EOS id (the name
is owned by :mod:`ttexp.config.recorded`, which reads it while the config resolves)."""
FALLBACK_EOS_TEXT = "\x04"
"""ASCII End of Transmission: the EOS of tokenizers that have none (the 256-byte tokenizer)."""


class PromptTokenizer:
    """A tokenizer for prompt/response data and generation, over a ``transformers`` tokenizer or
    ttexp's byte tokenizer.

    ``encode`` is what generation prompts and example prompts go through (BOS first when the
    tokenizer has one); ``encode_plain`` adds no special tokens (responses). ``eos_token_id`` is
    the tokenizer's EOS, else the model config's, else the single token of "\\x04".

    Args:
        tokenizer: a ``PreTrainedTokenizerBase`` or a :class:`~ttexp.models.tokenizer.ByteTokenizer`.
        eos_token_id: overrides the tokenizer's EOS (e.g. recorded in a model's config.json).

    Raises:
        TtexpError: the tokenizer has no EOS token and "\\x04" is not one token in it.
    """

    def __init__(self, tokenizer: Any, eos_token_id: Optional[int] = None):
        self.inner = tokenizer
        self._hf = hasattr(tokenizer, "convert_ids_to_tokens")
        self.bos_token_id = getattr(tokenizer, "bos_token_id", None) if self._hf else None
        eos = eos_token_id if eos_token_id is not None else getattr(tokenizer, "eos_token_id", None)
        if eos is None:
            ids = self.encode_plain(FALLBACK_EOS_TEXT)
            if len(ids) != 1:
                raise TtexpError(
                    "The tokenizer has no EOS token, and fine-tuning needs one to end each response. "
                    "Add one (tokenizer.add_special_tokens({'eos_token': ...})) and save the "
                    "tokenizer with the model."
                )
            eos = ids[0]
        self.eos_token_id = int(eos)
        self.pad_token_id = self.eos_token_id  # padding carries no loss and no attention
        self.vocab_size = len(tokenizer) if self._hf else tokenizer.vocab_size

    def encode_plain(self, text: str) -> list[int]:
        """Token ids of ``text`` with no special tokens."""
        if self._hf:
            return list(self.inner.encode(text, add_special_tokens=False))
        return list(self.inner.encode(text))

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt: BOS (when the tokenizer has one), then ``text``."""
        ids = self.encode_plain(text)
        return ([self.bos_token_id] + ids) if self.bos_token_id is not None else ids

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids`` up to the first EOS, special tokens dropped."""
        ids = [int(i) for i in ids]
        if self.eos_token_id in ids:
            ids = ids[: ids.index(self.eos_token_id)]
        if self._hf:
            return self.inner.decode(ids, skip_special_tokens=True)
        return self.inner.decode(ids)

    def to_transformers(self) -> Any:
        """The ``transformers`` tokenizer to save with a model directory."""
        return self.inner.to_transformers() if hasattr(self.inner, "to_transformers") else self.inner


def is_model_dir(path: Path) -> bool:
    """True when ``path`` is a ``transformers`` model directory (has ``config.json``)."""
    return (Path(path) / CONFIG_NAME).is_file()


def load_tokenizer(model_dir: Optional[Path]) -> PromptTokenizer:
    """The tokenizer of ``model_dir`` (``AutoTokenizer``), or the byte tokenizer when None.

    The EOS id falls back to the ``eos_token_id`` in the directory's config.json (a fine-tuned
    byte-level model records it there).

    Raises:
        TtexpError: the directory has no loadable tokenizer, or no usable EOS, or it asks to run
            its own code (``auto_map``).
    """
    if model_dir is None:
        return PromptTokenizer(ByteTokenizer())
    from transformers import AutoTokenizer

    refuse_remote_code(model_dir)
    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    except (OSError, ValueError, TypeError) as exc:
        if not Path(model_dir).expanduser().exists():  # a hub id, and the hub is out of reach
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise TtexpError(f"Could not load the model '{model_dir}': it is not a local directory "
                             f"and the hub did not answer ({first}). {GET_WEIGHTS_HINT}") from None
        raise TtexpError(
            f"Could not load a tokenizer from {model_dir}: {exc}. The directory needs the "
            "tokenizer files (tokenizer.json or tokenizer.model, tokenizer_config.json)."
        ) from None
    eos = None
    if is_model_dir(model_dir):
        eos = read_hf_config(model_dir).get("eos_token_id")
        eos = eos[0] if isinstance(eos, list) and eos else eos
    return PromptTokenizer(tok, eos_token_id=eos if tok.eos_token_id is None else None)


def model_config_for(model: ModelConfig, source: "ModelSource") -> ModelConfig:
    """``model`` with the architecture of ``source``: the keys of its ``config.json`` when it is a
    model directory (:func:`ttexp.models.hf.model_keys_from_hf`), else those of its run's
    ``model`` section; each change is logged. The original section is not changed (the config is
    resolved before it is validated and frozen).

    Raises:
        TtexpError: the model directory's config.json is unreadable or not a Llama model.
    """
    if source.model_dir is not None and is_model_dir(source.model_dir):
        origin = Path(source.model_dir) / CONFIG_NAME
        keys = model_keys_from_hf(read_hf_config(source.model_dir), source=source.model_dir)
    elif source.model_cfg is not None:
        keys = {k: source.model_cfg[k] for k in ARCHITECTURE_KEYS + ("name",)}
        origin = "the run that wrote the weights"
    else:
        return model
    changed = {k: v for k, v in keys.items() if getattr(model, k) != v}
    for key, value in changed.items():
        log.info("model.%s=%s replaced by %s from %s", key, getattr(model, key), value, origin)
    return evolve(model, **changed) if changed else model


@dataclass
class ModelSource:
    """Where a model's architecture, weights and tokenizer come from.

    Attributes:
        model_dir: a ``transformers`` model directory (architecture, tokenizer and, unless
            ``weights_dir`` is set, weights); None = architecture from the ``model`` config and
            the byte tokenizer.
        weights_dir: a directory whose ``model.safetensors`` replaces the weights; None = those of
            ``model_dir``.
        model_cfg: the ``model`` config section to use when ``model_dir`` is None.
        adapter_dir: a PEFT LoRA adapter directory to load onto those weights (``task=eval`` of
            ``final_model/adapter/`` or of a LoRA checkpoint); None = no adapter.
    """

    model_dir: Optional[Path] = None
    weights_dir: Optional[Path] = None
    model_cfg: Any = None
    adapter_dir: Optional[Path] = None

    @property
    def weights(self) -> Path:
        """The directory the weights are read from."""
        return self.weights_dir or self.model_dir


def _existing_dir(value: str, key: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_dir():
        raise TtexpError(f"{key}={value} is not a directory. {GET_WEIGHTS_HINT}")
    return path


def _looks_like_hub_id(value: str) -> bool:
    return not Path(value).expanduser().exists() and value.count("/") == 1 and not value.startswith(
        (".", "/", "~"))


def finetune_source(cfg: RunConfig) -> ModelSource:
    """Resolve the starting point of a fine-tune (see the module docstring).

    Raises:
        TtexpError: no weights are configured, or a configured directory does not exist.
    """
    pretrained = cfg.model.pretrained_path
    base_dir: Optional[Path] = None
    if pretrained:
        base_dir = local_snapshot(pretrained) if _looks_like_hub_id(pretrained) else _existing_dir(
            pretrained, "model.pretrained_path")
    if cfg.init_from:
        init = _existing_dir(cfg.init_from, "init_from")
        if is_model_dir(init):
            return ModelSource(model_dir=init)
        if not (init / WEIGHTS_NAME).is_file():
            raise TtexpError(f"init_from={cfg.init_from} has neither config.json nor "
                             "model.safetensors: give a final_model/ or checkpoints/step_N/ directory.")
        return ModelSource(model_dir=base_dir, weights_dir=init, model_cfg=cfg.model)
    if base_dir is not None:
        return ModelSource(model_dir=base_dir)
    raise TtexpError(
        f"task=finetune needs pretrained weights, but model={cfg.model.name} has no "
        f"model.pretrained_path and init_from is not set. {GET_WEIGHTS_HINT}"
    )


def read_origin(model_dir: Path) -> Optional[dict[str, Any]]:
    """The ``ttexp_origin.json`` a fine-tune wrote into its final_model/, or None."""
    try:
        return json.loads((Path(model_dir) / ORIGIN_NAME).read_text())
    except (OSError, ValueError):
        return None


def load_model(backend: Any, source: ModelSource, spec: Any,
               adapter: Optional[AdapterConfig] = None) -> int:
    """Load ``source`` into ``backend`` (creates its optimizer too), then add ``adapter`` (LoRA to
    train) or the adapter of ``source.adapter_dir`` (LoRA to evaluate); returns the parameter count
    of the model without adapters.

    Raises:
        TtexpError: weights or adapter missing, unreadable or of another shape (from the backend).
        BackendUnavailable: the backend has no LoRA.
    """
    if source.model_dir is not None:
        n = backend.load_pretrained(str(source.model_dir))
        if source.weights_dir is not None:
            backend.load_weights(source.weights_dir)
    else:
        n = backend.build_model(spec, init_from=source.weights_dir)
    if source.adapter_dir is not None:
        backend.apply_adapter(adapter_from_peft(read_adapter_config(source.adapter_dir)))
        backend.load_adapter_tensors(read_adapter_weights(source.adapter_dir))
    elif adapter is not None and adapter.name == AdapterName.lora:
        backend.apply_adapter(adapter)
    return n
