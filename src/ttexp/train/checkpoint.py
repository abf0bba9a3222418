"""Checkpoints: complete or absent, verified on load, retained by recency and by validation loss.

``checkpoints/step_N/`` holds everything needed to continue exactly:

* ``model.safetensors``: weights under Hugging Face names (the backend writes it);
* ``optimizer.pt``: the optimizer state (the backend writes it);
* ``rng.pt``: Python, NumPy and torch (CPU and CUDA) random states;
* ``trainer_state.json``: step, data position, schedule, best validation loss and its step,
  token and time counters;
* ``config.yaml``: the resolved config of the run that wrote it.

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
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import OmegaConf

from ttexp.backends.base import OPTIMIZER_NAME, Backend
from ttexp.config.convert import config_dict, config_yaml
from ttexp.config.schema import RunConfig
from ttexp.errors import CheckpointError
from ttexp.files import disk_full_message, write_dir_atomic, write_json_atomic
from ttexp.models.hf import WEIGHTS_NAME
from ttexp.train.rng import rng_state, set_rng_state

log = logging.getLogger("ttexp")

RNG_NAME = "rng.pt"
TRAINER_STATE_NAME = "trainer_state.json"
CONFIG_NAME = "config.yaml"
INDEX_NAME = "index.json"
BEST_LINK = "best"
REQUIRED_FILES = (WEIGHTS_NAME, OPTIMIZER_NAME, RNG_NAME, TRAINER_STATE_NAME, CONFIG_NAME)


# -- verification ---------------------------------------------------------------------------------


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check that ``path`` is a complete, readable checkpoint; return its trainer state.

    Reads every file far enough to detect truncation: the safetensors header and its coverage of
    the file, the zip directory and CRCs of the torch files, and the JSON/YAML.

    Raises:
        CheckpointError: names the missing or corrupt file.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint directory.")
    for name in REQUIRED_FILES:
        f = path / name
        if not f.is_file() or f.stat().st_size == 0:
            raise CheckpointError(f"Checkpoint {path} is incomplete: {name} is missing or empty.")
    try:
        from safetensors import safe_open

        with safe_open(str(path / WEIGHTS_NAME), "pt") as f:
            f.keys()
    except Exception as exc:
        raise CheckpointError(f"Checkpoint {path}: {WEIGHTS_NAME} is corrupt ({exc}).") from None
    for name in (OPTIMIZER_NAME, RNG_NAME):
        try:
            with zipfile.ZipFile(path / name) as z:
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError) as exc:
            raise CheckpointError(f"Checkpoint {path}: {name} is corrupt ({exc}).") from None
        if bad is not None:
            raise CheckpointError(f"Checkpoint {path}: {name} is corrupt (bad CRC in {bad}).")
    try:
        state = json.loads((path / TRAINER_STATE_NAME).read_text())
        OmegaConf.load(path / CONFIG_NAME)
    except (ValueError, OSError) as exc:
        raise CheckpointError(f"Checkpoint {path}: trainer state or config is corrupt ({exc}).") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"Checkpoint {path}: {TRAINER_STATE_NAME} has no step.")
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
    with a warning for each; None when there is none."""
    for step, path in reversed(list_checkpoints(directory)):
        try:
            return path, verify_checkpoint(path)
        except CheckpointError as exc:
            log.warning("Skipping damaged checkpoint: %s Falling back to the one before.", exc)
    return None


def model_mismatches(saved_cfg: Any, cfg: RunConfig) -> list[str]:
    """Model keys whose value in the checkpoint's config differs from this run's config."""
    saved = config_dict(saved_cfg.model)
    now = config_dict(cfg.model)
    ignore = {"name", "dropout", "pretrained_path"}
    return [
        f"model.{k}: checkpoint {saved.get(k)!r}, this run {now.get(k)!r}"
        for k in sorted(set(saved) | set(now))
        if k not in ignore and saved.get(k) != now.get(k)
    ]


CONTINUATION_KEYS = (
    "training.seed", "training.batch_size", "training.gradient_accumulation_steps",
    "training.learning_rate", "training.warmup_steps", "training.max_steps", "training.weight_decay",
    "scheduler.name", "scheduler.min_lr_ratio", "optimizer.beta1", "optimizer.beta2",
    "optimizer.eps", "data.path", "data.val_fraction", "model.dropout",
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
            backend.save_weights(tmp)
            backend.save_optimizer(tmp)
            torch.save(rng_state(), tmp / RNG_NAME)
            (tmp / CONFIG_NAME).write_text(config_yaml(self.cfg))
            with open(tmp / TRAINER_STATE_NAME, "w") as f:
                json.dump(trainer_state, f, indent=2, default=str)

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


def load_checkpoint(path: Path, backend: Backend) -> dict[str, Any]:
    """Verify ``path`` and restore weights, optimizer state and random states into ``backend``.

    Call after the model is built (building consumes random numbers); the random states are
    restored last. Returns the trainer state.

    Raises:
        CheckpointError: incomplete or corrupt checkpoint.
        TtexpError: weights that do not fit the model (from the backend).
    """
    state = verify_checkpoint(path)
    backend.load_weights(Path(path))
    backend.load_optimizer(Path(path))
    set_rng_state(torch.load(Path(path) / RNG_NAME, weights_only=False))
    return state
