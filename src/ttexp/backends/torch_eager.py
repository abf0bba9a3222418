"""Faster eager training on CPU: Llama blocks that move fewer bytes and launch fewer kernels.

On a CPU, the eager step of a small Llama is bound by memory traffic in its element-wise ops,
not by its matmuls: autograd keeps every intermediate of transformers' RMSNorm (upcast, square,
mean, rsqrt, two multiplies), of its RoPE (two multiplies, a negation and a concatenation per
tensor, each a pass over memory) and of its SwiGLU MLP (``silu(gate) * up`` on
``[tokens, mlp_dim]`` tensors larger than the cache), and reads each one back in backward.
Replacements, applied per model instance by :func:`use_fast_eager` and undone by
:func:`restore_stock`:

- RMSNorm as one ``torch.autograd.Function`` (:class:`RMSNormFunction`): saves one
  ``[tokens, D]`` tensor and the per-row ``rstd``; in fp32 its backward is ATen's fused
  LayerNorm backward kernel plus a per-row correction, else a closed form.
- RoPE as one ``torch.autograd.Function`` (:class:`RotaryFunction`): three kernels forward and
  three backward per tensor, saving only ``cos`` and ``sin``. Fusing the q, k and v projections
  (and gate with up) into one matmul over concatenated weights was measured too, and was slower
  at both nano 16 x 512 and cpu_quick's shape: the concatenations forward and backward cost
  more than the matmuls they merge.
- The MLP run over chunks of :func:`chunk_rows` tokens, so the ``[rows, mlp_dim]``
  intermediates of forward and backward stay in the CPU's cache (about :data:`CHUNK_BYTES`).

Each swapped module keeps its parameters and state-dict keys (only ``__class__`` changes, to a
subclass of the transformers class), so saving, LoRA and weight export see the same model.
The attention runs transformers' own forward when given a KV cache (generation), so only the
training and evaluation forward is replaced. ``torch.compile`` fuses these ops itself, so the
backend restores the stock classes before compiling.
"""

from __future__ import annotations

from typing import Any

import torch

CHUNK_BYTES = 6 * 2**20
"""Bytes of one ``[rows, mlp_dim]`` MLP intermediate per chunk (6 MiB: 2,048 tokens at
``mlp_dim`` 768 in fp32). Measured on a 2-core Xeon (AVX-512, torch 2.13), nano at 16 x 512 in
fp32, interleaved in one process: see the README's Speed section for the figures."""


class RMSNormFunction(torch.autograd.Function):
    """``weight * (x / sqrt(mean(x^2, -1) + eps))`` with the statistics in fp32, as transformers'
    ``LlamaRMSNorm`` computes it (upcast, normalise, cast back to ``x``'s dtype, times weight;
    the output dtype is the promotion of ``weight``'s and ``x``'s). RMSNorm: Zhang and Sennrich
    2019, "Root Mean Square Layer Normalization". Backward, by the chain rule through
    ``rstd = (mean(x^2) + eps)^-1/2``: ``dx = rstd * (g*w - xhat * mean(g*w * xhat, -1))`` in
    fp32, and ``dw = sum(g * xhat)`` over all rows.

    When ``x`` and ``weight`` are both fp32 (every eager fp32 run), backward is ATen's fused
    LayerNorm backward kernel given a zero mean and RMSNorm's ``rstd``: LayerNorm's gradient is
    ``rstd * (g*w - mean(g*w) - xhat * mean(g*w * xhat))`` (the CPU kernel's closed form,
    aten/src/ATen/native/cpu/layer_norm_kernel.cpp), so adding back ``rstd * mean(g*w)`` (one
    matrix-vector product) gives RMSNorm's, and ``dw`` is the same sum. One kernel where the
    element-wise form takes six passes over ``[tokens, D]``.

    Shapes: ``x`` [..., D], ``weight`` [D]; the output has ``x``'s shape.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        x32 = x.float()
        # transformers' very ops, so the output is bit-identical to LlamaRMSNorm's: generation
        # (which keeps this module) gives the same logits as the saved model in transformers
        rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)  # [..., 1], fp32
        xhat = (x32 * rstd).to(x.dtype)
        ctx.fused = x.dtype == weight.dtype == torch.float32
        if ctx.fused:
            ctx.save_for_backward(x, rstd, weight)
            return xhat.mul_(weight)  # xhat is a fresh fp32 tensor, not saved
        ctx.save_for_backward(xhat, rstd, weight)
        return weight * xhat

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, Any, None]:
        saved, rstd, weight = ctx.saved_tensors
        d = grad.shape[-1]
        if ctx.fused:
            need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            dx, dw, _ = torch.ops.aten.native_layer_norm_backward(
                grad, saved, [d], torch.zeros_like(rstd), rstd, weight, None, [need_dx, need_dw, False])
            if need_dx:
                gw_mean = (grad.reshape(-1, d) @ weight).view_as(rstd)  # [..., 1]: sum(g*w)
                dx.addcmul_(gw_mean, rstd, value=1.0 / d)
            return dx, dw, None
        xhat = saved
        dx = dw = None
        if ctx.needs_input_grad[1]:
            dw = (grad * xhat).reshape(-1, d).sum(0).to(weight.dtype)
        if ctx.needs_input_grad[0]:
            gw = (grad * weight).float()
            x32 = xhat.float()
            dot = (gw * x32).mean(-1, keepdim=True)
            dx = torch.addcmul(gw, x32, dot, value=-1).mul_(rstd).to(xhat.dtype)
        return dx, dw, None


class RotaryFunction(torch.autograd.Function):
    """transformers' ``x * cos + rotate_half(x) * sin`` (``rotate_half(x) = cat(-x2, x1)``, the
    halves ``x1, x2`` of the last dim; RoPE: Su et al. 2021, "RoFormer", in GPT-NeoX's half-split
    layout that transformers' Llama uses) in three kernels each way:
    ``out = x * cos``, ``out1 -= x2 * sin1``, ``out2 += x1 * sin2``; backward is the transposed
    rotation, ``dx = g * cos``, ``dx1 += g2 * sin2``, ``dx2 -= g1 * sin1``.

    Shapes: ``x`` [B, H, T, D] (D even), ``cos`` and ``sin`` broadcastable to it ([B, 1, T, D]).
    The output dtype is the promotion of ``x``'s and ``cos``'s, as transformers' (fp32 under bf16
    autocast, whose linears return bf16 while the rotary tables stay fp32); ``cos`` and ``sin``
    get no gradient.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = x.shape[-1] // 2
        out = x * cos
        out[..., :h].addcmul_(x[..., h:], sin[..., :h], value=-1)
        out[..., h:].addcmul_(x[..., :h], sin[..., h:])
        ctx.save_for_backward(cos, sin)
        ctx.x_dtype = x.dtype
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, None, None]:
        cos, sin = ctx.saved_tensors
        h = grad.shape[-1] // 2
        dx = grad * cos
        dx[..., :h].addcmul_(grad[..., h:], sin[..., h:])
        dx[..., h:].addcmul_(grad[..., :h], sin[..., :h], value=-1)
        return dx.to(ctx.x_dtype), None, None


def chunk_rows(mlp_dim: int, itemsize: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Tokens per MLP chunk: the rows whose ``[rows, mlp_dim]`` intermediate holds about
    ``chunk_bytes`` (at least 1).

    Args:
        mlp_dim: the MLP's intermediate size.
        itemsize: bytes per element of the intermediate (4 in fp32, 2 under bf16 autocast).
        chunk_bytes: target bytes per intermediate.
    """
    return max(1, chunk_bytes // (mlp_dim * itemsize))


class _FastRMSNorm:
    """Mixin: the RMSNorm forward through :class:`RMSNormFunction`."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return RMSNormFunction.apply(hidden_states, self.weight, self.variance_epsilon)


class _ChunkedMLP:
    """Mixin: the stock MLP forward over chunks of :func:`chunk_rows` tokens."""

    chunk_bytes = CHUNK_BYTES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        rows = chunk_rows(self.intermediate_size, dtype.itemsize, self.chunk_bytes)
        stock_forward = super().forward
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] <= rows:
            return stock_forward(x)
        parts = [stock_forward(c) for c in flat.split(rows)]
        return torch.cat(parts).view(*x.shape[:-1], -1)


class _FastAttention:
    """Mixin: transformers' ``LlamaAttention.forward`` with RoPE as :class:`RotaryFunction`; the
    projections and the attention itself (the configured transformers interface, SDPA by
    default) are called exactly as the stock forward calls them. With a KV cache (generation)
    it is the stock forward.

    Shapes: ``hidden_states`` [B, T, hidden]; ``position_embeddings`` (cos, sin) [B, T, head_dim].
    """

    def forward(self, hidden_states: torch.Tensor, position_embeddings: Any = None,
                attention_mask: Any = None, cache: Any = None, **kwargs: Any) -> tuple[Any, Any]:
        if cache is not None or kwargs.get("past_key_values") is not None or position_embeddings is None:
            return super().forward(hidden_states, position_embeddings, attention_mask, cache=cache, **kwargs)
        from transformers.models.llama import modeling_llama as ml

        input_shape = hidden_states.shape[:-1]
        shape = (*input_shape, -1, self.head_dim)
        q, k, v = (proj(hidden_states).view(shape).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        cos, sin = (t.unsqueeze(1) for t in position_embeddings)
        q, k = RotaryFunction.apply(q, cos, sin), RotaryFunction.apply(k, cos, sin)
        attention = ml.ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                             ml.eager_attention_forward)
        out, weights = attention(self, q, k, v, attention_mask,
                                 dropout=0.0 if not self.training else self.attention_dropout,
                                 scaling=self.scaling, **kwargs)
        return self.o_proj(out.reshape(*input_shape, -1).contiguous()), weights


_FAST: dict[type, type] = {}
"""Stock transformers class -> its fast subclass (made once per process)."""


def _fast_class(stock: type, mixin: type) -> type:
    """The subclass of ``stock`` whose forward is ``mixin``'s; also a module attribute, so
    it can be imported by its name like any class."""
    if stock not in _FAST:
        cls = type(f"Fast{stock.__name__}", (mixin, stock),
                   {"__module__": __name__, "stock_class": stock})
        _FAST[stock] = cls
        globals()[cls.__name__] = cls
    return _FAST[stock]


def _stock_mixins() -> dict[type, type]:
    from transformers.models.llama import modeling_llama as ml

    return {ml.LlamaRMSNorm: _FastRMSNorm, ml.LlamaMLP: _ChunkedMLP, ml.LlamaAttention: _FastAttention}


def use_fast_eager(model: torch.nn.Module) -> int:
    """Switch every transformers ``LlamaRMSNorm``, ``LlamaMLP`` and ``LlamaAttention`` in
    ``model`` (also under a PEFT wrapper) to its fast subclass, in place; returns how many modules
    were switched.

    Parameters, buffers and state-dict keys are unchanged. For eager mode on CPU only: the
    torch backend calls it for CPU devices when the model is not compiled.
    """
    mixins = _stock_mixins()
    switched = 0
    for module in model.modules():
        mixin = mixins.get(type(module))
        if mixin is not None:
            module.__class__ = _fast_class(type(module), mixin)
            switched += 1
    return switched


def restore_stock(model: torch.nn.Module) -> int:
    """Undo :func:`use_fast_eager` in place (before ``torch.compile``, which should see the
    stock modules); returns how many modules were switched back."""
    restored = 0
    for module in model.modules():
        if type(module) in _FAST.values():
            module.__class__ = type(module).stock_class
            restored += 1
    return restored
