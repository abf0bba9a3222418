"""A small torch implementation of tt-train's Llama, in ttml's own parameter layout.

Test code only. It computes what ttml's Python Llama computes (reference/ttml_api.md §3b;
tt-train ``ttml/models/llama/{__init__,transformer,gqattn}.py``): embedding, pre-norm blocks of
RMSNorm (eps 1e-5, ttml's fixed value) -> grouped-query attention with **interleaved** RoPE
(pairs ``2i, 2i+1``) -> residual -> RMSNorm -> SwiGLU ``w2(silu(w1 x) * w3 x)`` -> residual,
then RMSNorm and ``fc``. Parameters are read by ttml names from a dict of tensors shaped as ttml
stores them (``[1, 1, out, in]``, norms ``[1, 1, 1, n]``), packed as the layout says.

Fed the weights mapped by :mod:`ttexp.models.ttml_weights`, it must reproduce ``transformers``'
LlamaForCausalLM (which rotates halves, ``rotate_half``): that is what proves the q/k row
permutation without hardware. The strict ttml test double uses it as its model too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ttexp.models.ttml_weights import TtmlLayout

TTML_RMS_EPS = 1e-5


def rms_norm(x: torch.Tensor, gamma: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * gamma.reshape(-1)


def rope_interleaved(x: torch.Tensor, theta: float, positions: torch.Tensor) -> torch.Tensor:
    """Rotate pairs ``(x[..., 2i], x[..., 2i+1])`` by ``pos * theta**(-2i/D)``; x is [B, H, T, D]."""
    d = x.shape[-1]
    inv = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = positions.double()[:, None] * inv[None, :]  # [T, D/2]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def _mat(p: dict, name: str) -> torch.Tensor:
    w = p[name]
    return w.reshape(w.shape[-2], w.shape[-1])


def attention(p: dict, layout: TtmlLayout, layer: int, x: torch.Tensor, num_heads: int,
              num_kv_heads: int, theta: float, positions: torch.Tensor | None = None) -> torch.Tensor:
    """ttml's GroupedQueryAttention on x [B, T, d] (causal); returns [B, T, d]."""
    b, t, d = x.shape
    hd = d // num_heads
    kv_dim = num_kv_heads * hd
    if layout.fused_qkv:
        qkv = x @ _mat(p, layout.name("attention/qkv_linear/weight", layer)).T
        q, k, v = qkv[..., :d], qkv[..., d:d + kv_dim], qkv[..., d + kv_dim:]
    else:
        q = x @ _mat(p, layout.name("attention/q_linear/weight", layer)).T
        kv = x @ _mat(p, layout.name("attention/kv_linear/weight", layer)).T
        k, v = kv[..., :kv_dim], kv[..., kv_dim:]
    q = q.reshape(b, t, num_heads, hd).transpose(1, 2)
    k = k.reshape(b, t, num_kv_heads, hd).transpose(1, 2)
    v = v.reshape(b, t, num_kv_heads, hd).transpose(1, 2)
    pos = torch.arange(t) if positions is None else positions
    q, k = rope_interleaved(q, theta, pos), rope_interleaved(k, theta, pos)
    rep = num_heads // num_kv_heads
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    att = att.transpose(1, 2).reshape(b, t, d)
    return att @ _mat(p, layout.name("attention/out_linear/weight", layer)).T


def mlp(p: dict, layout: TtmlLayout, layer: int, x: torch.Tensor) -> torch.Tensor:
    if layout.packed_mlp:
        gu = _mat(p, layout.name("mlp/w_gate_up/weight", layer))
        half = gu.shape[0] // 2
        gate, up = x @ gu[:half].T, x @ gu[half:].T
    else:
        gate = x @ _mat(p, layout.name("mlp/w1/weight", layer)).T
        up = x @ _mat(p, layout.name("mlp/w3/weight", layer)).T
    return (F.silu(gate) * up) @ _mat(p, layout.name("mlp/w2/weight", layer)).T


def forward(p: dict, layout: TtmlLayout, tokens: torch.Tensor, num_layers: int, num_heads: int,
            num_kv_heads: int, theta: float, eps: float = TTML_RMS_EPS) -> torch.Tensor:
    """Logits [B, T, padded vocab] for tokens [B, T]."""
    emb = _mat(p, layout.name("fc/weight" if layout.tied else "tok_emb/weight"))
    h = emb[tokens]
    for i in range(num_layers):
        a = rms_norm(h, p[layout.name("attention_norm/gamma", i)], eps)
        h = h + attention(p, layout, i, a, num_heads, num_kv_heads, theta)
        m = rms_norm(h, p[layout.name("mlp_norm/gamma", i)], eps)
        h = h + mlp(p, layout, i, m)
    h = rms_norm(h, p[layout.name("ln_fc/gamma")], eps)
    return h @ _mat(p, layout.name("fc/weight")).T
