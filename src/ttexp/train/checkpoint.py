"""Checkpoints: one format for every backend, complete or absent, verified on load, retained by
recency and by validation loss.

This module alone decides the files. A backend hands over named tensors and JSON-able scalars
(:class:`~ttexp.backends.base.NamedState`); ``checkpoints/step_N/`` holds:

* ``model.safetensors``: weights under Hugging Face names (also loadable by ``init_from=`` and
  ``eval.checkpoint=``); a LoRA run instead holds its adapter in PEFT's format and records its
  frozen base by path and SHA-256 (:mod:`ttexp.train.checkpoint_weights`);
* ``optimizer.safetensors`` + ``optimizer.json``: the optimizer state's tensors and the rest;
* ``rng.safetensors`` + ``rng.json``: Python, NumPy and torch (CPU and CUDA) random states;
* ``trainer_state.json``: step, data position, schedule, best validation loss and its step,
  token and time counters;
* ``config.yaml``: the resolved config of the run that wrote it;
* ``manifest.json``, written last: format and version, and every file above with its size in
  bytes and SHA-256, so a flipped byte inside tensor data is caught before anything is loaded.

Nothing on a load path deserialises Python objects: tensors are read with safetensors, the rest is
JSON and YAML. A directory in the first format (``optimizer.pt``, ``rng.pt``, torch's object
streams) is refused with a message saying how to start from its weights.

The learning-rate schedule and the data sampler are pure functions of the step
(:mod:`ttexp.train.schedule`, :class:`ttexp.data.text.TextData`), so their state *is* the step; it is
recorded explicitly anyway so a reader can see it.

A checkpoint is written into a hidden temporary sibling directory and renamed into place, so a
crash mid-write never leaves a ``step_N`` that looks valid and is not. ``checkpoints/index.json``
lists the checkpoints kept, with their validation loss; ``best`` is a relative symlink to the one
with the lowest validation loss. ``training.keep_last_n`` and ``training.keep_best_n`` bound how
many are kept (the best is never deleted).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from ttexp.backends.base import Backend, NamedState
from ttexp.config.convert import config_dict, config_yaml
from ttexp.config.schema import RunConfig
from ttexp.errors import CheckpointError
from ttexp.files import disk_full_message, sha256_of, write_dir_atomic, write_json_atomic
from ttexp.models.hf import write_tensors
from ttexp.train.checkpoint_weights import (
    adapter_mismatches,
    load_weight_files,
    weight_files,
    write_weight_files,
)
from ttexp.train.rng import rng_state, set_rng_state

log = logging.getLogger("ttexp")

OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_SCALARS = "optimizer.json"
RNG_TENSORS = "rng.safetensors"
RNG_SCALARS = "rng.json"
TRAINER_STATE_NAME = "trainer_state.json"
CONFIG_NAME = "config.yaml"
MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.json"
BEST_LINK = "best"
FORMAT_NAME = "ttexp-checkpoint"
FORMAT_VERSION = 2
"""Version 1 was the first format (torch object streams, no manifest); it is refused."""
REQUIRED_FILES = (OPTIMIZER_TENSORS, OPTIMIZER_SCALARS, RNG_TENSORS, RNG_SCALARS,
                  TRAINER_STATE_NAME, CONFIG_NAME)
"""Every checkpoint's files besides its weights (``checkpoint_weights.weight_files``)."""
OLD_FORMAT_FILES = ("optimizer.pt", "rng.pt", "optimizer_ttml.pkl")


class OldCheckpointFormat(CheckpointError):
    """A checkpoint in the first format (no manifest, optimizer and random state as torch object
    streams, which can run code when read)."""


# -- verification ---------------------------------------------------------------------------------




def _read_manifest(path: Path) -> dict[str, Any]:
    """The parsed manifest of ``path``; raises CheckpointError (or OldCheckpointFormat)."""
    manifest = path / MANIFEST_NAME
    if not manifest.is_file():
        old = [n for n in OLD_FORMAT_FILES if (path / n).exists()]
        if old:
            raise OldCheckpointFormat(
                f"Checkpoint {path} is in ttexp's first format ({', '.join(old)}): those files are "
                "torch object streams that can run code when read, so this ttexp does not load "
                f"them. Start a new run from its weights with init_from={path} (model.safetensors "
                "is still read), or resume it with the ttexp version that wrote it.")
        raise CheckpointError(f"Checkpoint {path} is incomplete: {MANIFEST_NAME} is missing "
                              "(it is written last, so the write did not finish).")
    try:
        data = json.loads(manifest.read_text())
    except (ValueError, OSError) as exc:
        raise CheckpointError(f"Checkpoint {path}: {MANIFEST_NAME} is corrupt ({exc}).") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME or not isinstance(data.get("files"), dict):
        raise CheckpointError(f"Checkpoint {path}: {MANIFEST_NAME} is not a ttexp checkpoint manifest.")
    if data.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"Checkpoint {path} has format version {data.get('version')!r}; this "
                              f"ttexp reads version {FORMAT_VERSION}. Use the ttexp that wrote it.")
    return data


def _check_files(path: Path, files: dict[str, Any]) -> None:
    """Every required file listed, and every listed file present with its size and SHA-256."""
    weight_files(path, files)
    missing = [n for n in REQUIRED_FILES if n not in files]
    if missing:
        raise CheckpointError(f"Checkpoint {path}: the manifest does not list {', '.join(missing)}.")
    for name, entry in files.items():
        f = path / name
        if "/" in name or "\\" in name or name.startswith(".") or not isinstance(entry, dict):
            raise CheckpointError(f"Checkpoint {path}: the manifest lists {name!r}, not a file of it.")
        if not f.is_file():
            raise CheckpointError(f"Checkpoint {path} is incomplete: {name} is missing.")
        if f.stat().st_size != entry.get("bytes"):
            raise CheckpointError(f"Checkpoint {path}: {name} is corrupt (size {f.stat().st_size}, "
                                  f"manifest {entry.get('bytes')}).")
        if sha256_of(f) != entry.get("sha256"):
            raise CheckpointError(f"Checkpoint {path}: {name} is corrupt (SHA-256 differs from the "
                                  "manifest).")


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check that ``path`` is a complete, intact checkpoint; return its trainer state.

    Checks the manifest (every file's size and SHA-256), that ``trainer_state.json`` has the step
    of the ``step_N`` directory, and that ``config.yaml`` parses to a mapping. Reads no tensor.

    Raises:
        OldCheckpointFormat: a checkpoint in the first format (says how to use its weights).
        CheckpointError: names the missing or corrupt file.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint directory.")
    _check_files(path, _read_manifest(path)["files"])
    try:
        state = json.loads((path / TRAINER_STATE_NAME).read_text())
    except (ValueError, OSError) as exc:
        raise CheckpointError(f"Checkpoint {path}: {TRAINER_STATE_NAME} is corrupt ({exc}).") from None
    if not isinstance(state, dict) or type(state.get("step")) is not int:
        raise CheckpointError(f"Checkpoint {path}: {TRAINER_STATE_NAME} has no step.")
    if path.name.startswith("step_") and path.name[5:] != str(state["step"]):
        raise CheckpointError(f"Checkpoint {path}: {TRAINER_STATE_NAME} says step {state['step']}, "
                              f"the directory step {path.name[5:]}.")
    try:
        cfg = OmegaConf.load(path / CONFIG_NAME)
    except Exception as exc:  # yaml's and OmegaConf's own error types
        raise CheckpointError(f"Checkpoint {path}: {CONFIG_NAME} does not parse ({exc}).") from None
    if not isinstance(cfg, DictConfig):
        raise CheckpointError(f"Checkpoint {path}: {CONFIG_NAME} is not a config mapping.")
    return state


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step_N`` directory under ``directory``, oldest first."""
    out = []
    if Path(directory).is_dir():
        for p in Path(directory).iterdir():
            if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit():
                out.append((int(p.name[5:]), p))
    return sorted(out)


def earlier_run_message(directory: str) -> Optional[str]:
    """Why starting a fresh run in ``directory`` would clobber an earlier one (None if it would not):
    its checkpoints would be mixed with the new run's, and its record overwritten."""
    steps = [s for s, _ in list_checkpoints(Path(directory) / "checkpoints")]
    if not steps:
        return None
    return (f"{directory} already holds a run with checkpoints (newest: step_{steps[-1]}). Continue "
            "it with resume=auto, or start a new run in another directory (hydra.run.dir=DIR).")


def newest_valid_checkpoint(directory: Path) -> Optional[tuple[Path, dict[str, Any]]]:
    """The newest checkpoint under ``directory`` that verifies, falling back past damaged ones
    with a warning for each; None when there is none.

    Raises:
        OldCheckpointFormat: none verifies and at least one is in the first format.
    """
    old: Optional[OldCheckpointFormat] = None
    for step, path in reversed(list_checkpoints(directory)):
        try:
            return path, verify_checkpoint(path)
        except OldCheckpointFormat as exc:
            old = old or exc
            log.warning("Skipping checkpoint in the first format: %s", exc)
        except CheckpointError as exc:
            log.warning("Skipping damaged checkpoint: %s Falling back to the one before.", exc)
    if old is not None:  # starting over would bury a run that can be continued from its weights
        raise old
    return None


def model_mismatches(saved_cfg: Any, cfg: RunConfig) -> list[str]:
    """Model keys (and the adapter's shape keys) whose value in the checkpoint's config differs
    from this run's config."""
    saved = config_dict(saved_cfg.model)
    now = config_dict(cfg.model)
    ignore = {"name", "dropout", "pretrained_path"}
    return [
        f"model.{k}: checkpoint {saved.get(k)!r}, this run {now.get(k)!r}"
        for k in sorted(set(saved) | set(now))
        if k not in ignore and saved.get(k) != now.get(k)
    ] + adapter_mismatches(saved_cfg, config_dict(cfg.adapter))


CONTINUATION_KEYS = (
    "training.seed", "training.batch_size", "training.gradient_accumulation_steps",
    "training.learning_rate", "training.warmup_steps", "training.max_steps", "training.weight_decay",
    "scheduler.name", "scheduler.min_lr_ratio", "optimizer.beta1", "optimizer.beta2",
    "optimizer.eps", "data.path", "data.val_fraction", "model.dropout", "adapter.lora_alpha",
    "adapter.lora_dropout",
)
"""Keys that decide the data order, schedule or update rule: a change breaks exact continuation."""


def continuation_differences(saved_cfg: Any, cfg: RunConfig) -> list[str]:
    """``CONTINUATION_KEYS`` whose value differs between the checkpoint's run and this one."""
    out, now = [], OmegaConf.create(config_dict(cfg))
    for key in CONTINUATION_KEYS:
        old = OmegaConf.select(saved_cfg, key, default=None)
        new = OmegaConf.select(now, key, default=None)
        if str(old) != str(new):
            out.append(f"{key}: checkpoint {old!r}, this run {new!r}")
    return out


# -- writing and retention ------------------------------------------------------------------------


@dataclass
class CheckpointInfo:
    step: int
    path: str
    val_loss: Optional[float]


class CheckpointManager:
    """Writes checkpoints into ``run_dir/checkpoints`` and applies retention.

    Args:
        run_dir: the run directory.
        cfg: the resolved config, saved into every checkpoint as ``config.yaml``.
        keep_last_n: keep this many most recent checkpoints; None = all.
        keep_best_n: also keep this many with the lowest validation loss; None = 0.
    """

    def __init__(self, run_dir: Path, cfg: RunConfig, keep_last_n: Optional[int], keep_best_n: Optional[int]):
        self.dir = Path(run_dir) / "checkpoints"
        self.cfg = cfg
        self.keep_last_n = keep_last_n
        self.keep_best_n = keep_best_n or 0
        self.index: list[CheckpointInfo] = self._read_index()

    def _read_index(self) -> list[CheckpointInfo]:
        try:
            rows = json.loads((self.dir / INDEX_NAME).read_text())["checkpoints"]
            known = {r["step"]: r for r in rows}
        except (OSError, ValueError, KeyError, TypeError):
            known = {}
        # The directories on disk are the truth; the index only adds validation losses.
        return [CheckpointInfo(step, str(path), known.get(step, {}).get("val_loss"))
                for step, path in list_checkpoints(self.dir)]

    def save(self, step: int, backend: Backend, trainer_state: dict[str, Any],
             val_loss: Optional[float]) -> Path:
        """Write ``step_N`` atomically, update index.json and ``best``, then prune.

        Raises:
            CheckpointError: the checkpoint could not be written (e.g. a full disk); nothing
                already on disk is lost and the message names the last good checkpoint.
        """
        final = self.dir / f"step_{step}"

        def fill(tmp: Path) -> None:
            write_checkpoint_files(tmp, backend, trainer_state, config_yaml(self.cfg))

        try:
            write_dir_atomic(final, fill)
        except Exception as exc:  # OSError, or safetensors/torch wrapping one (e.g. a full disk)
            last = self.index[-1].path if self.index else "none"
            reason = disk_full_message(final, exc) or getattr(exc, "strerror", None) or str(exc)
            raise CheckpointError(
                f"Could not write checkpoint {final} ({reason}). Nothing was lost: the "
                f"last good checkpoint is {last}. Free space (or fix the directory) and continue "
                "with resume=auto."
            ) from None
        self.index = [c for c in self.index if c.step != step]
        self.index.append(CheckpointInfo(step, str(final), val_loss))
        self.index.sort(key=lambda c: c.step)
        self._prune()
        self._write_index()
        return final

    def best(self) -> Optional[CheckpointInfo]:
        scored = [c for c in self.index if c.val_loss is not None]
        return min(scored, key=lambda c: c.val_loss) if scored else None

    def _prune(self) -> None:
        keep = {c.step for c in self.index}
        if self.keep_last_n is not None:
            keep = {c.step for c in self.index[-self.keep_last_n:]} if self.keep_last_n > 0 else set()
            scored = sorted((c for c in self.index if c.val_loss is not None), key=lambda c: c.val_loss)
            keep |= {c.step for c in scored[: self.keep_best_n]}
            best = self.best()
            if best is not None:
                keep.add(best.step)
        for c in [c for c in self.index if c.step not in keep]:
            shutil.rmtree(c.path, ignore_errors=True)
            log.info("Removed checkpoint %s (keep_last_n=%s, keep_best_n=%s)",
                     c.path, self.keep_last_n, self.keep_best_n)
        self.index = [c for c in self.index if c.step in keep]

    def _write_index(self) -> None:
        best = self.best()
        write_json_atomic(self.dir / INDEX_NAME, {
            "checkpoints": [c.__dict__ for c in self.index],
            "best": best.__dict__ if best else None,
        })
        link = self.dir.parent / BEST_LINK
        if best is not None:
            tmp = link.with_name(f".{BEST_LINK}.tmp")
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            os.symlink(os.path.relpath(best.path, link.parent), tmp)
            os.replace(tmp, link)


def _write_state(directory: Path, state: NamedState, tensors_name: str, scalars_name: str) -> None:
    write_tensors(directory / tensors_name, state.tensors)
    (directory / scalars_name).write_text(json.dumps(state.scalars, indent=1))


def write_checkpoint_files(directory: Path, backend: Backend, trainer_state: dict[str, Any],
                           config_text: str) -> None:
    """Fill ``directory`` with a complete checkpoint, the manifest last.

    Cost: every file is read back once for its SHA-256 (about 1 s per GB on one core).

    Raises:
        OSError: a file cannot be written; TypeError/ValueError: scalars that are not JSON.
    """
    weights, extra = write_weight_files(directory, backend)
    _write_state(directory, backend.optimizer_state(), OPTIMIZER_TENSORS, OPTIMIZER_SCALARS)
    _write_state(directory, rng_state(), RNG_TENSORS, RNG_SCALARS)
    (directory / CONFIG_NAME).write_text(config_text)
    (directory / TRAINER_STATE_NAME).write_text(json.dumps(trainer_state, indent=2, default=str))
    files = {n: {"bytes": (directory / n).stat().st_size, "sha256": sha256_of(directory / n)}
             for n in weights + REQUIRED_FILES}
    manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "backend": backend.name,
                "files": files, **extra}
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))


def _read_state(path: Path, tensors_name: str, scalars_name: str) -> NamedState:
    """Tensors with safetensors, scalars with JSON: nothing here can run code."""
    from safetensors.torch import load_file

    try:
        return NamedState(load_file(str(path / tensors_name)),
                          json.loads((path / scalars_name).read_text()))
    except Exception as exc:  # safetensors' own error types
        raise CheckpointError(f"Checkpoint {path}: {tensors_name} or {scalars_name} is unreadable "
                              f"({exc}).") from None


def load_checkpoint(path: Path, backend: Backend) -> dict[str, Any]:
    """Verify ``path`` and restore weights, optimizer state and random states into ``backend``.

    Call after the model is built (building consumes random numbers); the random states are
    restored last. Returns the trainer state.

    Raises:
        CheckpointError: incomplete, corrupt or first-format checkpoint.
        TtexpError: weights or optimizer state that do not fit the model (from the backend).
    """
    path = Path(path)
    state = verify_checkpoint(path)
    load_weight_files(path, backend, _read_manifest(path))
    backend.load_optimizer_state(_read_state(path, OPTIMIZER_TENSORS, OPTIMIZER_SCALARS))
    set_rng_state(_read_state(path, RNG_TENSORS, RNG_SCALARS))
    return state
