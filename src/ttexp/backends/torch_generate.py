"""Token generation for the torch backend: transformers' KV-cached ``generate`` while the output
fits the context, a sliding window past it. The caller sets eval mode, the RNG and autocast."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ttexp.backends.base import SamplingParams
from ttexp.backends.sampling import decode


def generate_tokens(model: Any, prompt: list[int], params: SamplingParams,
                    device: torch.device) -> list[int]:
    """``params.max_new_tokens`` (or fewer, at an EOS) new token ids after ``prompt`` (ids):
    :func:`generate_cached` when prompt plus output fit ``max_position_embeddings``, else
    :func:`generate_windowed`."""
    if len(prompt) + params.max_new_tokens <= model.config.max_position_embeddings:
        return generate_cached(model, prompt, params, device)
    return generate_windowed(model, prompt, params, device)


def generate_cached(model: Any, prompt: list[int], params: SamplingParams,
                    device: torch.device) -> list[int]:
    """transformers' ``generate`` with its KV cache, sampling as
    :meth:`SamplingParams.to_generation_config` says."""
    x = torch.tensor([prompt], dtype=torch.long, device=device)
    out = model.generate(x, attention_mask=torch.ones_like(x),
                         generation_config=params.to_generation_config())
    return out[0, len(prompt):].tolist()


def generate_windowed(model: Any, prompt: list[int], params: SamplingParams,
                      device: torch.device) -> list[int]:
    """Past the context length: re-run the last ``max_position_embeddings`` tokens for every new
    token (no cache; positions stay within what the model was trained on, as nanoGPT does),
    sampled by the shared :func:`ttexp.backends.sampling.decode`."""
    window = model.config.max_position_embeddings

    def next_logits(ids: list[int]) -> np.ndarray:
        x = torch.tensor([ids[-window:]], dtype=torch.long, device=device)
        return model(input_ids=x, use_cache=False).logits[0, -1].float().cpu().numpy()

    return decode(next_logits, prompt, params)
