"""The one token sampler, shared by every backend's token-by-token generation (pure NumPy).

Both backends hand over the last position's logits as a host array and let :func:`decode` run
the loop; the torch backend's KV-cached path uses ``transformers.generate`` with
:meth:`~ttexp.backends.base.SamplingParams.to_generation_config`, which samples the same way.
The draws come from a ``numpy`` generator seeded with ``SamplingParams.seed``, never from the
training random state.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ttexp.backends.base import SamplingParams


def sample_token(logits: np.ndarray, history: list[int], params: SamplingParams,
                 rng: np.random.Generator) -> int:
    """Pick the next token as transformers' sampler would: repetition penalty (CTRL, Keskar et al.
    2019) over ``history``, then temperature, top-k and top-p (nucleus, Holtzman et al. 2019).

    Args:
        logits: ``[V]`` scores of the real vocabulary (any float dtype; computed in float64).
        history: the token ids so far (prompt and generated); ids ``>= V`` are ignored.
        params: the decoding settings; ``temperature <= 0`` is greedy (``rng`` unused).
        rng: the generator the draw comes from.

    Returns:
        The chosen token id, in ``[0, V)``.
    """
    z = np.asarray(logits, dtype=np.float64).copy()
    if params.repetition_penalty != 1.0 and len(history):
        seen = np.unique(np.asarray(history, dtype=np.int64))
        seen = seen[seen < z.size]
        z[seen] = np.where(z[seen] > 0, z[seen] / params.repetition_penalty,
                           z[seen] * params.repetition_penalty)
    if params.temperature <= 0:
        return int(np.argmax(z))
    z = z / params.temperature
    if 0 < params.top_k < z.size:
        kth = np.partition(z, -params.top_k)[-params.top_k]
        z[z < kth] = -np.inf
    if params.top_p < 1.0:
        order = np.argsort(-z, kind="stable")
        p = np.exp(z[order] - z[order[0]])
        p /= p.sum()
        drop = np.cumsum(p) - p > params.top_p  # keep the first token past the mass
        z[order[drop]] = -np.inf
    p = np.exp(z - z.max())
    p /= p.sum()
    return int(rng.choice(z.size, p=p))


def decode(next_logits: Callable[[list[int]], np.ndarray], prompt_ids: list[int],
           params: SamplingParams) -> list[int]:
    """Generate up to ``params.max_new_tokens`` tokens, one :func:`sample_token` per step.

    Args:
        next_logits: given every id so far (prompt and generated), returns the ``[V]`` logits of
            the next position; a backend's forward (windowed or KV-cached).
        prompt_ids: the prompt (at least one id).
        params: decoding settings; generation stops after ``params.eos_token_id`` (kept in the
            output) when it is set.

    Returns:
        The new token ids only.
    """
    rng = np.random.default_rng(params.seed)
    ids = list(prompt_ids)
    new: list[int] = []
    for _ in range(params.max_new_tokens):
        token = sample_token(next_logits(ids), ids, params, rng)
        new.append(token)
        ids.append(token)
        if params.eos_token_id is not None and token == params.eos_token_id:
            break
    return new
