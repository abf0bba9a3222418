"""Next-token logits for the ttml backend's generation: windowed (no cache) or KV-cached.

Each builder returns a ``next_logits(ids) -> [V]`` function for the shared
:func:`ttexp.backends.sampling.decode`, which samples and stops. Every forward here resets
ttml's autograd graph afterwards, also when it raised (reference/ttml_api.md §7).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ttexp.backends.ttml.tensors import kv_cache_mask, padded_tokens

NextLogits = Callable[[list[int]], np.ndarray]


def last_logits(backend: Any, logits: Any, row: int) -> np.ndarray:
    """Row ``row`` of a ``[1, 1, T_pad, V_pad]`` device logits tensor, as host ``float32 [V]``
    (the padded vocabulary entries cut off)."""
    a = backend.to_host(logits)
    return a.reshape(-1, a.shape[-1])[row, : backend.spec.vocab_size]


def window_steps(backend: Any, window: int) -> NextLogits:
    """No cache: re-run the last ``window`` (``max_seq_len``) tokens for each new token
    (nanoGPT's crop).

    Args:
        backend: a built :class:`~ttexp.backends.ttml.backend.TtmlBackend` in eval mode.
        window: the most tokens one forward sees.
    """
    def step(ids: list[int]) -> np.ndarray:
        ctx_ids = ids[-window:]
        host = padded_tokens(ctx_ids)
        x = backend.to_device(host, tile=False)
        try:
            logits = backend.logits(x, backend.causal(host.shape[-1]))
            return last_logits(backend, logits, len(ctx_ids) - 1)
        finally:
            backend.ctx.reset_graph()
    return step


def cached_steps(backend: Any) -> NextLogits:
    """ttml's KV cache (reference §5; ``ttml/common/generate.py``): prefill the prompt, then one
    token per forward with the cache position advancing. The whole output must fit the model's
    (tile-padded) context.

    Args:
        backend: a built :class:`~ttexp.backends.ttml.backend.TtmlBackend` in eval mode whose
            ttml has ``models.KvCache``.
    """
    s, models = backend.spec, backend.ttml.models
    cache = models.KvCache(models.KvCacheConfig(s.num_layers, 1, s.num_kv_heads,
                                                backend.req.max_position_embeddings, s.head_dim))
    cache.reset()
    state = {"done": 0}

    def step(ids: list[int]) -> np.ndarray:
        new = ids[state["done"]:]
        x = backend.to_device(padded_tokens(new), tile=False)
        mask = backend.to_device(kv_cache_mask(len(new), state["done"]), tile=True)
        try:
            logits = backend.logits(x, mask, kv_cache=cache, new_tokens=len(new))
            state["done"] = len(ids)
            return last_logits(backend, logits, len(new) - 1)
        finally:
            backend.ctx.reset_graph()
    return step
