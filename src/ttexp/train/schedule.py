"""Learning-rate schedules, as a pure function of the optimizer step."""

from __future__ import annotations

import math


def learning_rate_at(
    step: int, peak: float, warmup_steps: int, max_steps: int, name: str, min_lr_ratio: float
) -> float:
    """Learning rate for optimizer step ``step`` (0-based: the first update is step 0).

    Warmup rises linearly from ``peak / warmup_steps`` at step 0 to ``peak`` at step
    ``warmup_steps - 1`` (the lessons' "warmup from 0" without a wasted zero-LR step). After warmup:

    * ``constant``: ``peak``;
    * ``warmup_cosine``: cosine from ``peak`` down to ``min_lr_ratio * peak`` at the last step
      (ct8: 3e-4 -> 3e-5 with ratio 0.1);
    * ``warmup_linear``: the same end points on a straight line.

    Args:
        step: optimizer step, ``0 <= step < max_steps``.
        peak: ``training.learning_rate``.
        warmup_steps: steps of linear warmup (0 = none).
        max_steps: total optimizer steps of the run.
        name: 'constant', 'warmup_cosine' or 'warmup_linear'.
        min_lr_ratio: final learning rate as a fraction of ``peak``.

    Raises:
        ValueError: unknown schedule name.
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if name == "constant":
        return peak
    span = max(1, max_steps - warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / span)
    floor = peak * min_lr_ratio
    if name == "warmup_cosine":
        return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if name == "warmup_linear":
        return peak - (peak - floor) * progress
    raise ValueError(f"Unknown scheduler '{name}'; expected constant, warmup_cosine or warmup_linear.")
