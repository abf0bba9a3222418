"""One Llama-family model spec, its exact parameter breakdown, and its FLOPs per token.

The spec is what every backend builds: the torch backend turns it into a ``transformers``
``LlamaConfig``; the ttml backend into tt-train's transformer config. Counting is done from the
spec (not from a built model) so the plan can print it before anything is allocated; a test
checks that it equals the built model's ``numel`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ARCHITECTURE_KEYS = (
    "vocab_size", "hidden_dim", "num_layers", "num_heads", "num_kv_heads", "mlp_dim",
    "max_seq_len", "rope_theta", "rms_norm_eps", "tie_word_embeddings",
)
"""The ``model.*`` config keys that fix the shape of the weights (and hence must follow a model
directory's config.json); ``dropout`` and ``init_std`` are training settings, ``name`` a label."""


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a Llama-family decoder (RMSNorm, RoPE, SwiGLU, optional GQA / tying)."""

    name: str
    vocab_size: int
    hidden_dim: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    mlp_dim: int
    max_seq_len: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    dropout: float = 0.0
    init_std: float = 0.02

    @classmethod
    def from_config(cls, model: Any) -> "ModelSpec":
        """Build from the ``model`` config section (:class:`ttexp.config.schema.ModelConfig`, or
        the same keys as attributes); ``num_kv_heads: null`` means ``num_heads``."""
        kv = model.num_kv_heads
        return cls(
            name=str(model.name), vocab_size=int(model.vocab_size), hidden_dim=int(model.hidden_dim),
            num_layers=int(model.num_layers), num_heads=int(model.num_heads),
            num_kv_heads=int(kv) if kv is not None else int(model.num_heads),
            mlp_dim=int(model.mlp_dim), max_seq_len=int(model.max_seq_len),
            rope_theta=float(model.rope_theta), rms_norm_eps=float(model.rms_norm_eps),
            tie_word_embeddings=bool(model.tie_word_embeddings), dropout=float(model.dropout),
            init_std=float(model.init_std),
        )

    @property
    def head_dim(self) -> int:
        """Width of one attention head: ``hidden_dim // num_heads``."""
        return self.hidden_dim // self.num_heads


@dataclass(frozen=True)
class ParamBreakdown:
    """Parameter counts (numbers of scalars) by part of the model."""

    embedding: int
    attention_per_block: int
    mlp_per_block: int
    norms_per_block: int
    final_norm: int
    lm_head: int  # 0 when tied to the embedding
    num_layers: int

    @property
    def per_block(self) -> int:
        """Parameters of one transformer block (attention, MLP, its two norms)."""
        return self.attention_per_block + self.mlp_per_block + self.norms_per_block

    @property
    def blocks(self) -> int:
        """Parameters of all transformer blocks."""
        return self.per_block * self.num_layers

    @property
    def total(self) -> int:
        """Every parameter of the model (a tied LM head counted once)."""
        return self.embedding + self.blocks + self.final_norm + self.lm_head

    @property
    def matmul(self) -> int:
        """Weights that take part in matmuls: blocks' projections plus the LM head (tied counts once).

        This is N in the FLOPs formula (reference/perf_anchors.md §6): the input-embedding lookup
        is not a matmul, but a tied embedding *is* the LM head's matrix, so it is counted once.
        """
        head = self.lm_head if self.lm_head else self.embedding
        return (self.attention_per_block + self.mlp_per_block) * self.num_layers + head

    def lines(self, tied: bool) -> list[str]:
        """Human-readable breakdown, one part per line."""
        head = "tied to the embedding" if tied else f"{self.lm_head:,}"
        return [
            f"Embedding: {self.embedding:,}",
            f"Per block: {self.per_block:,} (attention {self.attention_per_block:,}, "
            f"MLP {self.mlp_per_block:,}, norms {self.norms_per_block:,})",
            f"Transformer blocks: {self.blocks:,} ({self.num_layers} x {self.per_block:,})",
            f"Final norm: {self.final_norm:,}",
            f"Output layer: {head}",
            f"Total parameters: {self.total:,}",
        ]


def param_breakdown(spec: ModelSpec) -> ParamBreakdown:
    """Exact parameter counts of the Llama architecture for ``spec`` (no biases).

    Attention: q and o are d x d; k and v are d x (kv_heads * head_dim). SwiGLU: three d x mlp
    matrices (gate, up, down). Two RMSNorm weight vectors per block, one final.
    """
    d, kv_dim = spec.hidden_dim, spec.num_kv_heads * spec.head_dim
    return ParamBreakdown(
        embedding=spec.vocab_size * d,
        attention_per_block=2 * d * d + 2 * d * kv_dim,
        mlp_per_block=3 * d * spec.mlp_dim,
        norms_per_block=2 * d,
        final_norm=d,
        lm_head=0 if spec.tie_word_embeddings else spec.vocab_size * d,
        num_layers=spec.num_layers,
    )


def flops_per_token(spec: ModelSpec, seq_len: int) -> int:
    """Training FLOPs per token, 6N + 12 L d T (PaLM appendix B; nanoGPT's estimate_mfu).

    N counts every matmul weight once, LM head included (:attr:`ParamBreakdown.matmul`); the
    attention term is not halved for causal masking (reference/perf_anchors.md §6).
    """
    n = param_breakdown(spec).matmul
    return 6 * n + 12 * spec.num_layers * spec.hidden_dim * seq_len
