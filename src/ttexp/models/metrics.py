"""What a language model's loss means to a reader: perplexity.

The loop's validation, the run record's validation.txt and task=eval all print it; this is
the one formula they share.
"""

from __future__ import annotations

import math

PERPLEXITY_MAX_LOSS = 50.0
"""Losses above this (nats) are clamped before exponentiation: exp(50) ~ 5e21 is already
meaningless, and exp of a diverged loss would overflow to an error instead of a number."""


def perplexity(loss: float) -> float:
    """Perplexity of a mean token cross-entropy, ``exp(min(loss, 50))``.

    Args:
        loss: mean cross-entropy per token, in nats (natural log).

    Returns:
        ``exp(loss)``, with ``loss`` clamped to :data:`PERPLEXITY_MAX_LOSS`; ``inf`` stays
        clamped and ``nan`` stays ``nan``.
    """
    return math.exp(min(loss, PERPLEXITY_MAX_LOSS))
