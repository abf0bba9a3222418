"""The training random state: seeding at the start of a run, capture and restore for checkpoints.

Python's ``random``, NumPy's global generator and torch's CPU and CUDA generators. Generation
(validation samples, eval answers) forks its own generator and never moves these. A checkpoint
stores them as named tensors and JSON scalars (:class:`~ttexp.backends.base.NamedState`), never
as a Python object stream: Python's state is ``(version, 625 ints, gauss_next)`` (``random.getstate``), NumPy's
``('MT19937', 624 uint32 keys, pos, has_gauss, cached_gaussian)`` (``np.random.get_state``), torch's
a uint8 byte tensor per generator.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from ttexp.backends.base import NamedState
from ttexp.errors import CheckpointError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices). Called before the model is built."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> NamedState:
    """The Python, NumPy and torch (CPU and every CUDA device) random states, as tensors
    (``python``, ``numpy``, ``torch``, ``cuda.<i>``; int64 / uint8) and JSON scalars."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"python": torch.tensor(words, dtype=torch.int64),
               "numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
               "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    scalars = {"python": {"version": version, "gauss_next": gauss},
               "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss),
                         "cached_gaussian": float(cached)}}
    return NamedState(tensors, scalars)


def set_rng_state(state: NamedState) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only where CUDA is present).

    Raises:
        CheckpointError: a state is missing or of the wrong shape (names which).
    """
    t, s = state.tensors, state.scalars
    try:
        py, npy = s["python"], s["numpy"]
        random.setstate((int(py["version"]), tuple(int(x) for x in t["python"].tolist()),
                         py["gauss_next"]))
        np.random.set_state((str(npy["kind"]), t["numpy"].numpy().astype(np.uint32), int(npy["pos"]),
                             int(npy["has_gauss"]), float(npy["cached_gaussian"])))
        torch.set_rng_state(t["torch"].to(torch.uint8))
        cuda = [t[f"cuda.{i}"] for i in range(len(t)) if f"cuda.{i}" in t]
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"The saved random state is unusable ({type(exc).__name__}: {exc}).") from None
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
