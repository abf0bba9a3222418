"""The weights part of a checkpoint (for :mod:`ttexp.train.checkpoint`, which owns the format).

A full fine-tune or a scratch run stores ``model.safetensors`` (every weight, Hugging Face names).
A LoRA run stores only what it trains: the adapter as a PEFT adapter directory
(``adapter_model.safetensors`` + ``adapter_config.json``, which ``PeftModel.from_pretrained`` and
``task=eval`` load), while the frozen base is recorded in the manifest by path and the SHA-256 of
each of its ``*.safetensors`` files. Resuming rebuilds the run's model from that base (the run's
own config names it), checks the fingerprint, and loads the adapter: the base is bit-identical
because it is never trained, so the resume is exact. A TinyLlama LoRA checkpoint is then a few
MB to a few hundred MB instead of 4.4 GB of fp32 weights.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Optional

from ttexp.backends.base import Backend
from ttexp.errors import CheckpointError
from ttexp.files import sha256_of
from ttexp.models.adapter import ADAPTER_CONFIG_KEY, ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME
from ttexp.models.hf import WEIGHTS_NAME, write_tensors, write_weights

FULL_WEIGHT_FILES = (WEIGHTS_NAME,)
ADAPTER_FILES = (ADAPTER_WEIGHTS_NAME, ADAPTER_CONFIG_NAME)
BASE_KEY = "base_model"
"""Manifest key of a LoRA checkpoint's base: ``{"path": ..., "sha256": {file name: hex}}``."""


@functools.lru_cache(maxsize=8)
def _fingerprint(path: str, stamp: tuple) -> dict[str, str]:
    """SHA-256 of each ``*.safetensors`` in ``path``; cached by (path, sizes and mtimes), since
    hashing a 2.2 GB base costs about 2 s per checkpoint otherwise."""
    return {f.name: sha256_of(f) for f in sorted(Path(path).glob("*.safetensors"))}


def base_fingerprint(base: Optional[str]) -> dict[str, Any]:
    """The base record of a LoRA checkpoint: its path, and the SHA-256 of its weight files when it
    is a local directory (a hub id is recorded by name only)."""
    if not base or not Path(base).is_dir():
        return {"path": base, "sha256": None}
    files = sorted(Path(base).glob("*.safetensors"))
    stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return {"path": str(base), "sha256": _fingerprint(str(base), stamp)}


ADAPTER_KEYS = ("name", "r", "target_modules", "bias")
"""``adapter.*`` keys that decide which tensors a checkpoint holds and their shapes (alpha and
dropout change the numbers, not the tensors, and are continuation settings)."""


def adapter_mismatches(saved_cfg: Any, now: dict[str, Any]) -> list[str]:
    """``adapter.*`` keys whose value in a checkpoint's config (an OmegaConf node; a checkpoint
    written before the adapter group has none, i.e. ``adapter=none``) differs from ``now`` (this
    run's ``adapter`` section as a dict). Only LoRA settings matter when either side uses LoRA."""
    from omegaconf import OmegaConf

    saved = OmegaConf.to_container(saved_cfg.adapter) if "adapter" in saved_cfg else {"name": "none"}
    if saved.get("name", "none") == "none" and now.get("name", "none") == "none":
        return []
    keys = ADAPTER_KEYS if "lora" in (saved.get("name"), now.get("name")) else ("name",)
    return [f"adapter.{k}: checkpoint {saved.get(k)!r}, this run {now.get(k)!r}" for k in keys
            if str(saved.get(k)) != str(now.get(k))]


def write_weight_files(directory: Path, backend: Backend) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Write the weights part of a checkpoint into ``directory``.

    Returns:
        The file names written, and what the manifest must add (a LoRA run's base record).

    Raises:
        OSError: a file cannot be written.
    """
    state = backend.adapter_state()
    if state is None:
        write_weights(directory, backend.weight_tensors())
        return FULL_WEIGHT_FILES, {}
    write_tensors(Path(directory) / ADAPTER_WEIGHTS_NAME, state.tensors)
    conf = state.scalars[ADAPTER_CONFIG_KEY]
    (Path(directory) / ADAPTER_CONFIG_NAME).write_text(json.dumps(conf, indent=2))
    return ADAPTER_FILES, {BASE_KEY: base_fingerprint(conf.get("base_model_name_or_path"))}


def weight_files(path: Path, listed: dict[str, Any]) -> tuple[str, ...]:
    """Which weight files the manifest of ``path`` lists: the full weights or an adapter.

    Raises:
        CheckpointError: it lists neither complete set.
    """
    for names in (FULL_WEIGHT_FILES, ADAPTER_FILES):
        if all(n in listed for n in names):
            return names
    raise CheckpointError(f"Checkpoint {path}: the manifest lists neither {WEIGHTS_NAME} nor an "
                          f"adapter ({', '.join(ADAPTER_FILES)}).")


def load_weight_files(path: Path, backend: Backend, manifest: dict[str, Any]) -> None:
    """Load the weights part of the checkpoint ``path`` into ``backend`` (an adapter after
    checking that the base the backend was built from is the one the checkpoint was trained on).

    Raises:
        CheckpointError: the base's weight files changed since the checkpoint was written, or the
            adapter file is unreadable.
        TtexpError: the weights or adapter do not fit the model (from the backend).
    """
    if weight_files(path, manifest["files"]) == FULL_WEIGHT_FILES:
        backend.load_weights(path)
        return
    saved = manifest.get(BASE_KEY) or {}
    if saved.get("sha256") is not None:
        now = base_fingerprint(saved.get("path"))
        if now["sha256"] != saved["sha256"]:
            raise CheckpointError(
                f"Checkpoint {path} holds a LoRA adapter trained on the base {saved.get('path')}, "
                "whose weight files are no longer the same (SHA-256 differs or the directory is "
                "gone), so the adapter cannot be continued exactly. Restore that base, or start a "
                "new run with init_from.")
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(Path(path) / ADAPTER_WEIGHTS_NAME))
    except Exception as exc:  # safetensors' own error types
        raise CheckpointError(f"Checkpoint {path}: {ADAPTER_WEIGHTS_NAME} is unreadable ({exc}).") from None
    backend.load_adapter_tensors(tensors)
