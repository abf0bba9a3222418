"""Measure what a training step really holds, to check the memory plan (ttexp.models.memory).

    measured = saved_activation_bytes(model, batch=2, seq=32, vocab=256, dtype=torch.bfloat16)

Activations: every tensor that autograd saves for backward during one forward, seen through
``torch.autograd.graph.saved_tensors_hooks`` and counted once per storage; the parameters' own
storages are weights, not activations. With activation checkpointing the checkpoint installs its
own hooks (only the innermost hooks see a tensor), so the checkpointed figure is measured as:
the tensors saved outside the checkpointed layers (seen by our hooks), plus each layer's input
(kept alive by its checkpoint; seen by a forward pre-hook), plus the largest layer's saved tensors
(measured in the same model without checkpointing): what backward holds while it recomputes one
layer.
"""

from __future__ import annotations

import contextlib
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch.autograd.graph import saved_tensors_hooks


def _layers(model: Any) -> list[Any]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return list(base.model.layers)


def _step(model: Any, b: int, s: int, vocab: int, dtype: Optional[torch.dtype],
          seen: dict[int, int], layer_of: Optional[dict[int, int]] = None,
          current: Optional[list[int]] = None) -> None:
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr not in params and ptr not in seen:
            seen[ptr] = st.nbytes()
            if layer_of is not None and current:
                layer_of[ptr] = current[-1]
        return t

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (b, s), generator=g)
    y = torch.randint(0, vocab, (b, s), generator=g)
    cast = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
    with saved_tensors_hooks(pack, lambda t: t):
        with cast:
            logits = model(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.float().view(-1, vocab), y.view(-1))  # as the torch backend
    loss.backward()


def saved_activation_bytes(model: Any, b: int, s: int, vocab: int,
                           dtype: Optional[torch.dtype]) -> tuple[int, list[int]]:
    """Bytes saved for backward by one step without checkpointing, and per decoder layer."""
    seen: dict[int, int] = {}
    layer_of: dict[int, int] = {}
    current: list[int] = []
    handles = []
    def leave(module: Any, args: tuple, out: Any) -> None:  # a hook's return value would
        current.pop()                                         # replace the layer's output

    for i, layer in enumerate(_layers(model)):
        handles.append(layer.register_forward_pre_hook(lambda m, a, i=i: current.append(i) or None))
        handles.append(layer.register_forward_hook(leave))
    try:
        _step(model, b, s, vocab, dtype, seen, layer_of, current)
    finally:
        for h in handles:
            h.remove()
    per_layer = [0] * len(_layers(model))
    for ptr, i in layer_of.items():
        per_layer[i] += seen[ptr]
    return sum(seen.values()), per_layer


def checkpointed_activation_bytes(model: Any, b: int, s: int, vocab: int,
                                  dtype: Optional[torch.dtype], max_layer: int) -> int:
    """Bytes held at the start of backward with checkpointing on (``model`` must have it on),
    plus ``max_layer``, the largest layer's saved bytes measured without checkpointing."""
    seen: dict[int, int] = {}
    inputs: dict[int, int] = {}

    def grab(module: Any, args: tuple, kwargs: dict) -> None:
        h = args[0] if args else kwargs["hidden_states"]
        inputs[h.untyped_storage().data_ptr()] = h.untyped_storage().nbytes()

    handles = [layer.register_forward_pre_hook(grab, with_kwargs=True)
               for layer in _layers(model)]
    try:
        _step(model, b, s, vocab, dtype, seen)
    finally:
        for h in handles:
            h.remove()
    outside = sum(seen.values())
    kept = sum(n for ptr, n in inputs.items() if ptr not in seen)
    return outside + kept + max_layer


def state_bytes(model: Any, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes of the weights (every parameter), the gradients that exist and the optimizer's
    state tensors (``optimizer.state``) as a run really allocated them."""
    def size(t: torch.Tensor) -> int:
        return t.numel() * t.element_size()

    return {
        "weights": sum(size(p) for p in model.parameters()),
        "gradients": sum(size(p.grad) for p in model.parameters() if p.grad is not None),
        "optimizer": sum(size(v) for st in optimizer.state.values() for v in st.values()
                         if torch.is_tensor(v) and v.dim() > 0),
    }
