"""ttml optimizer state <-> named host tensors and JSON scalars (no object streams).

``optimizer.get_state_dict()`` returns a dict whose values are scalars (``steps``: int, ``lr``:
float, ``amsgrad``: bool), nested dicts (composite optimizers), or ``ttml.NamedParameters``, a
nanobind map of parameter name -> ``ttml.autograd.Tensor`` that cannot be serialised. AdamW's keys
are ``steps, lr, exp_avg, exp_avg_sq, amsgrad[, max_exp_avg_sq]`` and ``set_state_dict`` reads each
moment with ``std::get<NamedParameters>`` (``tt-train/sources/ttml/optimizers/adamw.cpp`` @
013b217398641b1697a42d986c1318dfee5101ad; MorehAdamW's ``m_first_moment``/``m_second_moment`` the
same way, reference/ttml_audit_2026-11.md). tt-train's own ``ttml/checkpointing.py`` @
1acba1e4dd63549d00edffe4f097f61e9ac4d6f5 walks the same shapes but writes a Python object
stream, which ttexp does not load; this module keeps its walk and its rule that each tensor is
rebuilt at the dtype of the live tensor it replaces.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ttexp.backends.base import NamedState
from ttexp.errors import TtexpError

SKELETON_KEY = "skeleton"
LEAF_KEY = "named_parameters"


def _label(path: tuple[str, ...], name: str) -> str:
    """``("exp_avg",), "Llama/fc/weight"`` -> ``exp_avg[Llama/fc/weight]`` (tensor file key)."""
    return f"{'/'.join(path)}[{name}]"


def split_state(value: dict[str, Any], ttml: Any, to_host: Callable[[Any], np.ndarray]) -> NamedState:
    """Split a ``get_state_dict()`` result into named host arrays and a JSON skeleton.

    Args:
        value: the optimizer's state dict.
        ttml: the ttml module (for ``ttml.NamedParameters``).
        to_host: device tensor -> float32 NumPy array (replicated tensors: one copy).

    Raises:
        TtexpError: a value of a type tt-train's state dicts do not hold.
    """
    tensors: dict[str, np.ndarray] = {}

    def walk(node: Any, path: tuple[str, ...]) -> Any:
        if isinstance(node, ttml.NamedParameters):
            for name, t in node.items():
                tensors[_label(path, name)] = to_host(getattr(t, "tensor", t))
            return {LEAF_KEY: list(node.keys())}
        if isinstance(node, dict):
            return {str(k): walk(v, path + (str(k),)) for k, v in node.items()}
        if isinstance(node, (bool, int, float, str)) or node is None:
            return node
        raise TtexpError(f"ttml optimizer state {'/'.join(path)} is a {type(node).__name__}, which "
                         "ttexp cannot checkpoint; report it with `python -m ttexp.doctor`.")

    return NamedState(tensors, {SKELETON_KEY: walk(value, ())})


def join_state(state: NamedState, live: dict[str, Any], ttml: Any,
               upload: Callable[[np.ndarray, Any], Any]) -> dict[str, Any]:
    """Rebuild a ``set_state_dict`` argument from :func:`split_state`'s output.

    Args:
        state: the saved tensors and skeleton.
        live: the optimizer's current ``get_state_dict()`` (gives each tensor's dtype and shape).
        upload: ``(array, live tensor) -> device tensor`` at the live tensor's dtype.

    Raises:
        TtexpError: keys, names or shapes differ from the live optimizer's (names the first).
    """
    skeleton = state.scalars.get(SKELETON_KEY)
    if not isinstance(skeleton, dict):
        raise TtexpError("The saved ttml optimizer state has no skeleton; it was not written by this "
                         "ttexp. Start from its weights with init_from=DIR instead.")

    def mismatch(what: str) -> TtexpError:
        return TtexpError(f"The saved ttml optimizer state does not fit this optimizer: {what}. "
                          "Resume with the model and optimizer settings it was trained with.")

    def rebuild(node: Any, live_node: Any, path: tuple[str, ...]) -> Any:
        if isinstance(node, dict) and LEAF_KEY in node:
            if not isinstance(live_node, ttml.NamedParameters):
                raise mismatch(f"{'/'.join(path)} is not a tensor map in this optimizer")
            if sorted(node[LEAF_KEY]) != sorted(live_node.keys()):
                raise mismatch(f"{'/'.join(path)} holds other parameters")
            out = ttml.NamedParameters()
            for name in node[LEAF_KEY]:
                arr = state.tensors[_label(path, name)]
                arr = arr.numpy() if hasattr(arr, "numpy") else np.asarray(arr)
                live_t = getattr(live_node[name], "tensor", live_node[name])
                if list(arr.shape) != list(live_t.shape()):
                    raise mismatch(f"{_label(path, name)} is {list(arr.shape)}, live {live_t.shape()}")
                out[name] = upload(arr, live_t)
            return out
        if isinstance(node, dict):
            if not isinstance(live_node, dict) or set(node) != set(live_node):
                raise mismatch(f"keys {sorted(node)} at '{'/'.join(path)}', live "
                               f"{sorted(live_node) if isinstance(live_node, dict) else live_node!r}")
            return {k: rebuild(v, live_node[k], path + (k,)) for k, v in node.items()}
        return node

    return rebuild(skeleton, live, ())
