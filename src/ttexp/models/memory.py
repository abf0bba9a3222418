"""How many bytes a training run holds per device, from the config alone (no weights needed).

    estimate_memory(spec, micro_batch_size=8, seq_len=2048, profile=TTML_BF16, lora=...)

The plan (:mod:`ttexp.train.memory`) compares the total with the device's memory before anything
loads. Four parts, per device (data parallelism keeps a full copy of each on every device):

* **weights**: every parameter, at the backend's storage precision;
* **gradients**: one per trainable parameter (all of them, or only LoRA's adapters);
* **optimizer**: AdamW's two moments per trainable parameter (``exp_avg``, ``exp_avg_sq``);
* **activations**: the tensors autograd saves for backward in one micro-step, with and without
  activation checkpointing (:func:`activation_bytes`).

The activation formula follows Korthikanti et al. 2022, "Reducing Activation Recomputation in
Large Transformer Models" (arXiv:2205.05198, §4.1), which counts the tensors each op of a block
saves: ``s*b*h*(34 + 5*a*s/h)`` bytes for a GPT block in 16-bit. Adapted here to transformers'
``LlamaForCausalLM`` with SDPA attention, tensor by tensor (tests/unit/test_memory_plan.py
measures the same tensors with ``torch.autograd.graph.saved_tensors_hooks``):

* SDPA (flash / memory-efficient kernels) keeps no ``s x s`` score matrix, so the ``5as/h`` term
  is gone; it keeps q, k, v, its output and a float32 log-sum-exp per head and position;
* RMSNorm keeps its input, ``rsqrt`` of the variance and the normalised input (GPT's LayerNorm
  keeps the input and two statistics); the residual stream is float32 under autocast;
* SwiGLU keeps four ``mlp_dim``-wide tensors (gate output, SiLU output, up output, their product)
  instead of GPT's two ``4h`` tensors; there is no dropout mask (dropout 0);
* a frozen weight's matmul keeps no input (its weight gradient is not needed), which is most of
  what LoRA saves besides gradients and optimizer state;
* under torch autocast every matmul input is a fresh bf16 copy, and the bf16 copy of each weight
  is kept too (autocast's cast cache);
* the loss keeps float32 log-probabilities, ``b*s*vocab*4`` bytes: at TinyLlama's 32,000 tokens
  this is the largest single tensor of a step.

With checkpointing (transformers' ``gradient_checkpointing_enable``, one checkpoint per decoder
layer; tt-train's memory-efficient runner) each layer keeps only its input, and backward
recomputes one layer at a time, so the peak is the layer inputs plus one layer's saved tensors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

from ttexp.models.spec import ModelSpec, param_breakdown

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The Llama linear layers LoRA can target, in Hugging Face names (PEFT's ``target_modules``)."""


@dataclass(frozen=True)
class PrecisionProfile:
    """Bytes per element of each kind of tensor a backend keeps during training.

    Sources: torch.optim.AdamW creates ``exp_avg`` and ``exp_avg_sq`` with
    ``torch.zeros_like(param)`` (torch/optim/adamw.py, ``_init_group``), so two moments in the
    parameter's dtype (float32 on the torch backend, which keeps fp32 master weights under bf16
    autocast). tt-train's ``AdamW`` makes both moments ``zeros_like`` the parameter's bf16 value
    (``tt-train/sources/ttml/optimizers/adamw.cpp``: ``get_value(PreferredPrecision::HALF)``);
    ``MorehAdamW`` makes them from the full-precision (float32) value (``get_value(FULL)``).
    tt-train's own measurement of TinyLlama agrees: bf16 weights 1,863 MB, AdamW state 3,709 MB
    (``tt-train/docs/MEMORY_TRACKING.md``, reference/perf_anchors.md §3.2).
    """

    name: str
    weight: int
    """Bytes per parameter (the master copy the optimizer updates)."""
    grad: int
    moment: int
    """Bytes per AdamW moment per trainable parameter (two moments)."""
    residual: int
    """Bytes per element of the residual stream and the norms' saved tensors."""
    matmul: int
    """Bytes per element of a matmul's output (and of its input copy under autocast)."""
    autocast: bool
    """True: each matmul input and each weight are cast to ``matmul`` bytes and the copies kept."""
    dropout_math: bool = False
    """True: attention dropout makes SDPA take its math path (torch on CPU), which keeps the
    ``s x s`` probabilities (see :func:`attention_bytes`)."""


TORCH_FP32 = PrecisionProfile("fp32", 4, 4, 4, 4, 4, False)
TORCH_BF16 = PrecisionProfile("bf16 autocast (fp32 weights and AdamW)", 4, 4, 4, 4, 2, True)
TTML_BF16 = PrecisionProfile("ttml bf16 (AdamW moments bf16)", 2, 2, 2, 2, 2, False)
TTML_BF16_MOREH = PrecisionProfile("ttml bf16 (MorehAdamW moments fp32)", 2, 2, 4, 2, 2, False)

MEMORY_EFFICIENT_FROM_HIDDEN = 2048
"""Models this wide use ttml's memory-efficient runner (recomputes activations) even without
``training.activation_checkpointing``, as tt-train's tinyllama.yaml does (``runner_type:
memory_efficient``, ``configs/model_configs/tinyllama.yaml`` @ 7ffb830c7d73e04c7b0b504a1853fb2c35be84fc)."""


def ttml_recomputes(spec: ModelSpec, activation_checkpointing: bool) -> bool:
    """Whether the ttml backend runs ``spec`` with tt-train's memory-efficient runner, which
    recomputes each block in backward: when asked, or from :data:`MEMORY_EFFICIENT_FROM_HIDDEN`."""
    return bool(activation_checkpointing) or spec.hidden_dim >= MEMORY_EFFICIENT_FROM_HIDDEN


FP32 = 4
INT64 = 8


@dataclass(frozen=True)
class LoraShape:
    """The adapter part of ``cfg.adapter`` that decides memory: rank and target modules."""

    r: int
    target_modules: tuple[str, ...]


def linear_shapes(spec: ModelSpec) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each Llama linear layer of one block, by HF name."""
    h, kv, m = spec.hidden_dim, spec.num_kv_heads * spec.head_dim, spec.mlp_dim
    return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
            "gate_proj": (h, m), "up_proj": (h, m), "down_proj": (m, h)}


def lora_params(spec: ModelSpec, lora: LoraShape) -> int:
    """Trainable LoRA parameters: ``sum over layers and targets of r * (in + out)``.

    PEFT adds ``lora_A`` (r x in) and ``lora_B`` (out x r) to each target (Hu et al. 2021,
    arXiv:2106.09685); Llama's linears have no bias, so ``bias`` adds nothing.

    Raises:
        ValueError: a target is not one of :data:`LORA_TARGETS`.
    """
    shapes = linear_shapes(spec)
    unknown = [t for t in lora.target_modules if t not in shapes]
    if unknown:
        raise ValueError(f"adapter.target_modules has {unknown}, which are not Llama linear "
                         f"layers; use names from {list(LORA_TARGETS)}")
    per_layer = sum(lora.r * (shapes[t][0] + shapes[t][1]) for t in set(lora.target_modules))
    return per_layer * spec.num_layers


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device of one run (see the module docstring); totals pick the checkpointing
    setting the run uses."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    """Saved for backward by one micro-step without activation checkpointing."""
    activations_checkpointed: int
    """The same with one checkpoint per decoder layer (layer inputs + one recomputed layer)."""
    activation_checkpointing: bool
    total_params: int
    trainable_params: int
    profile: str

    @property
    def activations_used(self) -> int:
        """The activation bytes of the setting this run uses."""
        return self.activations_checkpointed if self.activation_checkpointing else self.activations

    @property
    def total(self) -> int:
        """weights + gradients + optimizer + activations (of the setting used), bytes."""
        return self.weights + self.gradients + self.optimizer + self.activations_used

    def to_dict(self) -> dict[str, Any]:
        """For result.json: every field plus ``total``."""
        return {**asdict(self), "total": self.total}


def _norm(b: int, s: int, h: int, p: PrecisionProfile, trainable: bool) -> int:
    """RMSNorm's saved tensors: input and rsqrt always; the normalised input only when the norm
    weight is trained (the product with a frozen weight keeps the weight instead)."""
    return b * s * h * p.residual * (2 if trainable else 1) + b * s * FP32


def _linear_inputs(b: int, s: int, width: int, p: PrecisionProfile, keepers: int) -> int:
    """The input that ``keepers`` matmuls keep: one shared tensor in plain precision, one bf16
    copy each under autocast."""
    if keepers == 0:
        return 0
    return b * s * width * (p.matmul * keepers if p.autocast else p.residual)


def attention_bytes(spec: ModelSpec, b: int, s: int, p: PrecisionProfile) -> int:
    """What scaled-dot-product attention keeps, o_proj's input included.

    Flash / memory-efficient kernels: q, k, v (k and v at ``num_kv_heads``), the output (which
    is o_proj's input) and a float32 log-sum-exp per head and position. With dropout on torch's
    CPU, SDPA takes the math path in float32: q, k, v expanded to every head, and three
    ``b x heads x s x s`` float32 tensors (softmax output, dropout mask, dropped probabilities):
    Korthikanti et al.'s ``5as/h`` term (there in 16-bit and a 1-byte mask), plus o_proj's input.
    """
    h, kv, a = spec.hidden_dim, spec.num_kv_heads * spec.head_dim, spec.num_heads
    if p.dropout_math and spec.dropout > 0:
        return 3 * b * s * h * FP32 + 3 * b * a * s * s * FP32 + b * s * h * p.matmul
    return (2 * b * s * h + 2 * b * s * kv) * p.matmul + b * a * s * FP32


def layer_bytes(spec: ModelSpec, b: int, s: int, p: PrecisionProfile,
                lora: Optional[LoraShape], first: bool = False) -> int:
    """Bytes one decoder layer saves for backward (micro-batch ``b``, sequence ``s``).

    ``lora`` None is full fine-tuning. ``first``: under LoRA the first layer's input comes from
    the frozen embedding, so its attention norm and frozen q/k/v projections keep nothing.
    """
    h, m = spec.hidden_dim, spec.mlp_dim
    shapes = linear_shapes(spec)
    keeps = {t: lora is None or t in lora.target_modules for t in shapes}
    grad_in = not (first and lora is not None)  # does the layer's input require grad?
    n = _norm(b, s, h, p, lora is None) if grad_in else 0
    n += _linear_inputs(b, s, h, p, sum(keeps[t] for t in ("q_proj", "k_proj", "v_proj")))
    n += attention_bytes(spec, b, s, p)
    n += _norm(b, s, h, p, lora is None)
    n += _linear_inputs(b, s, h, p, keeps["gate_proj"] + keeps["up_proj"])
    n += b * s * m * p.matmul * (3 + keeps["down_proj"])  # gate, SiLU, up outputs; their product
    if p.autocast:  # the bf16 copies of the weights whose matmul needs them in backward
        n += 2 * sum(i * o for t, (i, o) in shapes.items() if grad_in or t not in ("q_proj", "k_proj", "v_proj"))
    if lora is not None:
        for t in set(lora.target_modules):
            i, o = shapes[t]
            n += b * s * lora.r * p.matmul  # lora_A's output, kept by lora_B
            n += 2 * lora.r * (i + o) if p.autocast else 0
    return n


def outer_bytes(spec: ModelSpec, b: int, s: int, p: PrecisionProfile, full: bool) -> int:
    """Bytes saved outside the decoder layers: token ids, RoPE tables, final norm, LM head input
    (and its bf16 weight copy under autocast), float32 log-probabilities, targets."""
    h, v = spec.hidden_dim, spec.vocab_size
    n = b * s * INT64 * (2 if full else 1) + 2 * s * spec.head_dim * FP32
    n += _norm(b, s, h, p, full) + _linear_inputs(b, s, h, p, 1 if full else 0)
    n += 2 * v * h if p.autocast else 0
    return n + b * s * v * FP32


def activation_bytes(spec: ModelSpec, b: int, s: int, p: PrecisionProfile,
                     lora: Optional[LoraShape], checkpointing: bool) -> int:
    """Bytes saved for backward by one micro-step of ``b`` sequences of ``s`` tokens.

    Without checkpointing: the outer tensors plus every layer's (:func:`layer_bytes`). With one
    checkpoint per decoder layer: the outer tensors, each layer's input (the residual stream),
    and the largest layer's saved tensors, recomputed during backward one layer at a time.
    """
    layers = [layer_bytes(spec, b, s, p, lora, first=(i == 0)) for i in range(spec.num_layers)]
    outer = outer_bytes(spec, b, s, p, lora is None)
    if not checkpointing:
        return outer + sum(layers)
    return outer + spec.num_layers * b * s * spec.hidden_dim * p.residual + max(layers)


def estimate_memory(spec: ModelSpec, micro_batch_size: int, seq_len: int,
                    profile: PrecisionProfile, lora: Optional[LoraShape] = None,
                    checkpointing: bool = False) -> MemoryEstimate:
    """Bytes per device for training ``spec`` with AdamW (see the module docstring).

    Args:
        spec: the model shape.
        micro_batch_size: sequences per device per micro-step.
        seq_len: tokens per sequence (the longest a batch can hold: ``model.max_seq_len``).
        profile: bytes per element for this backend and precision.
        lora: rank and targets when only LoRA adapters are trained; None = full fine-tuning.
        checkpointing: whether the run recomputes activations (the total uses that figure).

    Raises:
        ValueError: a LoRA target is not a Llama linear layer.
    """
    total = param_breakdown(spec).total
    adapter = lora_params(spec, lora) if lora is not None else 0
    trainable = adapter if lora is not None else total
    return MemoryEstimate(
        weights=(total + adapter) * profile.weight,
        gradients=trainable * profile.grad,
        optimizer=2 * trainable * profile.moment,
        activations=activation_bytes(spec, micro_batch_size, seq_len, profile, lora, False),
        activations_checkpointed=activation_bytes(spec, micro_batch_size, seq_len, profile,
                                                  lora, True),
        activation_checkpointing=checkpointing,
        total_params=total + adapter, trainable_params=trainable, profile=profile.name,
    )


def lora_shape(adapter: Any) -> Optional[LoraShape]:
    """The :class:`LoraShape` of the ``adapter`` config section, or None for ``adapter=none``."""
    name = getattr(adapter.name, "value", adapter.name)
    if name != "lora":
        return None
    targets: Sequence[str] = adapter.target_modules
    return LoraShape(r=int(adapter.r), target_modules=tuple(str(t) for t in targets))


def gib(n: int) -> str:
    """``n`` bytes as GiB with two decimals (1 GiB = 2**30 bytes), or MiB below 0.1 GiB."""
    if n < 2**30 // 10:
        return f"{n / 2**20:.1f} MiB"
    return f"{n / 2**30:.2f} GiB"
