"""Checkpoints: a directory per step, written completely or not at all.

``checkpoints/step_N/`` holds ``model.safetensors`` (Hugging Face names), the optimizer state,
``rng.pt`` (Python, NumPy and torch random states) and ``trainer_state.json`` (step, best
validation loss, config). It is first written to a hidden temporary directory next to it and
renamed into place, so a crash mid-write never leaves a directory that looks like a checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

TRAINER_STATE_NAME = "trainer_state.json"
RNG_NAME = "rng.pt"


def write_dir_atomic(final: Path, fill: Callable[[Path], None]) -> Path:
    """Create ``final`` by calling ``fill(tmp)`` on a temporary sibling, then renaming it.

    An existing ``final`` is replaced. If ``fill`` raises, the temporary directory is removed and
    the error propagates; ``final`` is untouched.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    os.chmod(tmp, 0o755)
    try:
        fill(tmp)
        if final.exists():
            old = final.with_name(f".old-{final.name}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def rng_state() -> dict[str, Any]:
    """The Python, NumPy and torch (CPU and CUDA) random states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(directory: Path, backend: Any, trainer_state: dict[str, Any]) -> Path:
    """Write a complete checkpoint for ``trainer_state["step"]`` into ``directory`` atomically."""

    def fill(tmp: Path) -> None:
        backend.save_weights(tmp)
        backend.save_optimizer(tmp)
        torch.save(rng_state(), tmp / RNG_NAME)
        with open(tmp / TRAINER_STATE_NAME, "w") as f:
            json.dump(trainer_state, f, indent=2, default=str)

    return write_dir_atomic(Path(directory), fill)
