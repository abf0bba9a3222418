"""Weights between Hugging Face Llama names and tt-train's ttml Llama parameters (pure NumPy).

A checkpoint on disk always has Hugging Face names and layout (``model.safetensors``), so a model
trained on ttml loads in the torch backend and in ``transformers``, and TinyLlama's weights load
into ttml. This module only renames, reorders rows and concatenates; it never touches a device.

What differs between the two layouts (reference/ttml_api.md §3c; tt-train
``ttml/models/llama/safetensors_loader.py`` @ d781911cdd38216f60d49f5b75e9e859a6534f83 and the
later fused version, ``hf_exporter.py`` @ 94b9a112bf9f7c18483b7720acbdd7322ec15cac):

- **RoPE row order.** HF rotates the two halves of each head (``rotate_half``: element ``i`` pairs
  with ``i + head_dim/2``); ttml rotates interleaved pairs (``2i`` with ``2i+1``). So the rows of
  ``q_proj`` and ``k_proj`` are reordered per head: ttml row ``2i`` = HF row ``i``, ttml row
  ``2i+1`` = HF row ``half + i``. ``v_proj`` is not rotated and keeps its order.
- **Fused projections.** ttml has ``kv_linear = [K | V]`` (rows) next to ``q_linear``, or in the
  newest versions one ``qkv_linear = [Q | K | V]``; its MLP is ``w1`` (gate), ``w3`` (up),
  ``w2`` (down), or in the newest versions ``w_gate_up = [gate | up]`` with ``w2``.
- **Names.** Python Llama: ``Llama/tok_emb/weight``, ``Llama/fc/weight``, ``Llama/ln_fc/gamma``,
  ``Llama/blocks/{i}/...``; C++ Llama (Gen A): ``llama/...`` and ``llama/llama_block_{i}/...``.
  With weight tying the one matrix is ``fc/weight``.
- **Shapes.** ttml stores every parameter 4-D: a matrix ``[1, 1, out, in]``, a norm ``[1, 1, 1, n]``.
  The vocabulary is padded to a multiple of 32 rows; the padded rows are zero here (their logits
  are masked by the backend) and are cropped on the way back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from ttexp.errors import TtexpError
from ttexp.models.spec import ModelSpec

TILE = 32
"""ttml tensors are tiled 32 x 32: vocabulary and sequence lengths are padded to this."""


def round_up_to_tile(n: int, tile: int = TILE) -> int:
    """Smallest multiple of ``tile`` that is >= ``n`` (tt-train's ``round_up_to_tile``)."""
    return (int(n) + tile - 1) // tile * tile


@dataclass(frozen=True)
class TtmlLayout:
    """How a ttml Llama names and packs its parameters (see the module docstring)."""

    prefix: str = "Llama"
    block: str = "blocks/{}"
    fused_qkv: bool = False
    packed_mlp: bool = False
    tied: bool = False

    def name(self, suffix: str, layer: int | None = None) -> str:
        """Full parameter name, e.g. ``name("attention/q_linear/weight", 0)``."""
        if layer is None:
            return f"{self.prefix}/{suffix}"
        return f"{self.prefix}/{self.block.format(layer)}/{suffix}"

    def parameter_names(self, num_layers: int) -> set[str]:
        """Every parameter name a model with this layout and ``num_layers`` blocks has."""
        names = {self.name("fc/weight"), self.name("ln_fc/gamma")}
        if not self.tied:
            names.add(self.name("tok_emb/weight"))
        for i in range(num_layers):
            per = ["attention_norm/gamma", "mlp_norm/gamma", "attention/out_linear/weight",
                   "mlp/w2/weight"]
            per += (["attention/qkv_linear/weight"] if self.fused_qkv
                    else ["attention/q_linear/weight", "attention/kv_linear/weight"])
            per += ["mlp/w_gate_up/weight"] if self.packed_mlp else ["mlp/w1/weight", "mlp/w3/weight"]
            names.update(self.name(p, i) for p in per)
        return names


def detect_layout(names: Iterable[str], tied: bool) -> TtmlLayout:
    """Recognise the layout of a built ttml model from its parameter names.

    Args:
        names: the keys of ``model.parameters()``.
        tied: whether the model was built with weight tying.

    Raises:
        TtexpError: the names match no known layout (the message lists a few of them).
    """
    names = set(names)
    if any(n.startswith("llama/llama_block_") for n in names):
        prefix, block = "llama", "llama_block_{}"
    elif any(n.startswith("Llama/blocks/") for n in names):
        prefix, block = "Llama", "blocks/{}"
    else:
        shown = ", ".join(sorted(names)[:6])
        raise TtexpError(
            f"The ttml model's parameters ({shown}, ...) follow no Llama layout ttexp knows "
            "(Llama/blocks/{i}/... or llama/llama_block_{i}/...). Update ttexp's ttml_weights "
            "module for this tt-train version."
        )
    layout = TtmlLayout(
        prefix=prefix, block=block, tied=tied,
        fused_qkv=any(n.endswith("attention/qkv_linear/weight") for n in names),
        packed_mlp=any(n.endswith("mlp/w_gate_up/weight") for n in names),
    )
    return layout


def interleave_rope_rows(w: np.ndarray, num_heads: int) -> np.ndarray:
    """HF ``q_proj``/``k_proj`` rows (half-split per head) -> ttml rows (interleaved pairs).

    Args:
        w: ``[num_heads * head_dim, in]``.
        num_heads: query heads for ``q_proj``, key/value heads for ``k_proj``.

    Returns:
        ``[num_heads * head_dim, in]`` with row ``h*D + 2i`` = HF row ``h*D + i`` and row
        ``h*D + 2i + 1`` = HF row ``h*D + D/2 + i``.

    Raises:
        TtexpError: the rows do not split into heads of even size.
    """
    rows = w.shape[0]
    if rows % num_heads or (rows // num_heads) % 2:
        raise TtexpError(f"A projection with {rows} rows does not split into {num_heads} heads of "
                         "even size; the checkpoint does not fit the model config.")
    d = rows // num_heads
    return w.reshape(num_heads, 2, d // 2, -1).transpose(0, 2, 1, 3).reshape(w.shape)


def deinterleave_rope_rows(w: np.ndarray, num_heads: int) -> np.ndarray:
    """Inverse of :func:`interleave_rope_rows`: ttml interleaved rows -> HF half-split rows."""
    rows = w.shape[0]
    if rows % num_heads or (rows // num_heads) % 2:
        raise TtexpError(f"A projection with {rows} rows does not split into {num_heads} heads of "
                         "even size; the checkpoint does not fit the model config.")
    d = rows // num_heads
    return w.reshape(num_heads, d // 2, 2, -1).transpose(0, 2, 1, 3).reshape(w.shape)


def _pad_rows(w: np.ndarray, rows: int) -> np.ndarray:
    if w.shape[0] == rows:
        return w
    out = np.zeros((rows, w.shape[1]), dtype=w.dtype)
    out[: w.shape[0]] = w
    return out


def _as4d(w: np.ndarray) -> np.ndarray:
    w = np.ascontiguousarray(w, dtype=np.float32)
    return w.reshape(1, 1, 1, -1) if w.ndim == 1 else w.reshape(1, 1, *w.shape)


def _expected_hf_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    d, kv = spec.hidden_dim, spec.num_kv_heads * spec.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (spec.vocab_size, d), "model.norm.weight": (d,)}
    if not spec.tie_word_embeddings:
        shapes["lm_head.weight"] = (spec.vocab_size, d)
    for i in range(spec.num_layers):
        p = f"model.layers.{i}"
        shapes.update({
            f"{p}.input_layernorm.weight": (d,), f"{p}.post_attention_layernorm.weight": (d,),
            f"{p}.self_attn.q_proj.weight": (d, d), f"{p}.self_attn.k_proj.weight": (kv, d),
            f"{p}.self_attn.v_proj.weight": (kv, d), f"{p}.self_attn.o_proj.weight": (d, d),
            f"{p}.mlp.gate_proj.weight": (spec.mlp_dim, d), f"{p}.mlp.up_proj.weight": (spec.mlp_dim, d),
            f"{p}.mlp.down_proj.weight": (d, spec.mlp_dim),
        })
    return shapes


def check_hf_state(hf: Mapping[str, np.ndarray], spec: ModelSpec) -> None:
    """Check that ``hf`` holds exactly the tensors ``spec`` needs, with the right shapes.

    ``lm_head.weight`` is tolerated (and ignored) for a tied spec when it equals the embedding;
    ``rotary_emb.inv_freq`` buffers are ignored.

    Raises:
        TtexpError: every missing, unexpected or mis-shaped tensor, listed in one message.
    """
    expected = _expected_hf_shapes(spec)
    present = {k for k in hf if not k.endswith("rotary_emb.inv_freq")}
    if spec.tie_word_embeddings and "lm_head.weight" in present:
        present.discard("lm_head.weight")
    problems = [f"missing {k}" for k in expected if k not in present]
    problems += [f"unexpected {k}" for k in sorted(present - set(expected))]
    problems += [f"{k}: file has {tuple(hf[k].shape)}, model needs {s}"
                 for k, s in expected.items() if k in hf and tuple(hf[k].shape) != s]
    if problems:
        hint = ""
        if "missing lm_head.weight" in problems:
            hint = " An untied model needs lm_head.weight; a tied checkpoint needs model.tie_word_embeddings=true."
        shown = "; ".join(problems[:10]) + (" ..." if len(problems) > 10 else "")
        raise TtexpError(f"The weights do not fit model={spec.name} ({len(problems)} problems: "
                         f"{shown}).{hint} Use the model config they were trained with.")


def hf_to_ttml(hf: Mapping[str, np.ndarray], spec: ModelSpec, layout: TtmlLayout) -> dict[str, np.ndarray]:
    """Map a Hugging Face Llama state dict to ttml parameters.

    Args:
        hf: HF names -> arrays (``[out, in]`` matrices, ``[n]`` norms), any float dtype.
        spec: the architecture (heads, KV heads, vocabulary).
        layout: the ttml model's naming and packing (:func:`detect_layout`).

    Returns:
        ttml names -> float32 arrays of ttml's 4-D shape; vocabulary rows padded with zeros to a
        multiple of 32.

    Raises:
        TtexpError: ``hf`` does not fit ``spec`` (see :func:`check_hf_state`).
    """
    check_hf_state(hf, spec)
    f32 = {k: np.asarray(v, dtype=np.float32) for k, v in hf.items()}
    vocab = round_up_to_tile(spec.vocab_size)
    out = {layout.name("ln_fc/gamma"): _as4d(f32["model.norm.weight"])}
    emb = _pad_rows(f32["model.embed_tokens.weight"], vocab)
    if layout.tied:
        out[layout.name("fc/weight")] = _as4d(emb)
    else:
        out[layout.name("tok_emb/weight")] = _as4d(emb)
        out[layout.name("fc/weight")] = _as4d(_pad_rows(f32["lm_head.weight"], vocab))
    for i in range(spec.num_layers):
        p = f"model.layers.{i}"
        q = interleave_rope_rows(f32[f"{p}.self_attn.q_proj.weight"], spec.num_heads)
        k = interleave_rope_rows(f32[f"{p}.self_attn.k_proj.weight"], spec.num_kv_heads)
        v = f32[f"{p}.self_attn.v_proj.weight"]
        if layout.fused_qkv:
            out[layout.name("attention/qkv_linear/weight", i)] = _as4d(np.concatenate([q, k, v]))
        else:
            out[layout.name("attention/q_linear/weight", i)] = _as4d(q)
            out[layout.name("attention/kv_linear/weight", i)] = _as4d(np.concatenate([k, v]))
        gate, up = f32[f"{p}.mlp.gate_proj.weight"], f32[f"{p}.mlp.up_proj.weight"]
        if layout.packed_mlp:
            out[layout.name("mlp/w_gate_up/weight", i)] = _as4d(np.concatenate([gate, up]))
        else:
            out[layout.name("mlp/w1/weight", i)] = _as4d(gate)
            out[layout.name("mlp/w3/weight", i)] = _as4d(up)
        out[layout.name("mlp/w2/weight", i)] = _as4d(f32[f"{p}.mlp.down_proj.weight"])
        out[layout.name("attention/out_linear/weight", i)] = _as4d(f32[f"{p}.self_attn.o_proj.weight"])
        out[layout.name("attention_norm/gamma", i)] = _as4d(f32[f"{p}.input_layernorm.weight"])
        out[layout.name("mlp_norm/gamma", i)] = _as4d(f32[f"{p}.post_attention_layernorm.weight"])
    return out


def ttml_to_hf(params: Mapping[str, np.ndarray], spec: ModelSpec, layout: TtmlLayout) -> dict[str, np.ndarray]:
    """Map ttml parameters back to a Hugging Face Llama state dict (the inverse of :func:`hf_to_ttml`).

    Args:
        params: ttml names -> arrays in ttml's 4-D (or already squeezed 2-D/1-D) shapes.
        spec: the architecture.
        layout: the model's naming and packing.

    Returns:
        HF names -> float32 arrays; vocabulary padding cropped; a tied model stores the matrix
        once, as ``model.embed_tokens.weight`` (as the torch backend does).

    Raises:
        TtexpError: a parameter the layout needs is absent, or a shape does not fit ``spec``.
    """
    missing = sorted(layout.parameter_names(spec.num_layers) - set(params))
    if missing:
        raise TtexpError(f"The ttml model lacks {len(missing)} parameters the mapping needs "
                         f"({', '.join(missing[:5])}); the model does not match model={spec.name}.")

    def mat(name: str) -> np.ndarray:
        a = np.asarray(params[name], dtype=np.float32)
        return a.reshape(a.shape[-2], a.shape[-1])

    def vec(name: str) -> np.ndarray:
        return np.asarray(params[name], dtype=np.float32).reshape(-1)

    d, kv = spec.hidden_dim, spec.num_kv_heads * spec.head_dim
    v = spec.vocab_size
    if layout.tied:
        hf = {"model.embed_tokens.weight": mat(layout.name("fc/weight"))[:v]}
    else:
        hf = {"model.embed_tokens.weight": mat(layout.name("tok_emb/weight"))[:v],
              "lm_head.weight": mat(layout.name("fc/weight"))[:v]}
    hf["model.norm.weight"] = vec(layout.name("ln_fc/gamma"))
    for i in range(spec.num_layers):
        p = f"model.layers.{i}"
        if layout.fused_qkv:
            qkv = mat(layout.name("attention/qkv_linear/weight", i))
            q, k, val = qkv[:d], qkv[d:d + kv], qkv[d + kv:]
        else:
            q = mat(layout.name("attention/q_linear/weight", i))
            kvw = mat(layout.name("attention/kv_linear/weight", i))
            k, val = kvw[:kv], kvw[kv:]
        hf[f"{p}.self_attn.q_proj.weight"] = deinterleave_rope_rows(q, spec.num_heads)
        hf[f"{p}.self_attn.k_proj.weight"] = deinterleave_rope_rows(k, spec.num_kv_heads)
        hf[f"{p}.self_attn.v_proj.weight"] = val
        hf[f"{p}.self_attn.o_proj.weight"] = mat(layout.name("attention/out_linear/weight", i))
        if layout.packed_mlp:
            gu = mat(layout.name("mlp/w_gate_up/weight", i))
            gate, up = gu[: spec.mlp_dim], gu[spec.mlp_dim:]
        else:
            gate, up = mat(layout.name("mlp/w1/weight", i)), mat(layout.name("mlp/w3/weight", i))
        hf[f"{p}.mlp.gate_proj.weight"], hf[f"{p}.mlp.up_proj.weight"] = gate, up
        hf[f"{p}.mlp.down_proj.weight"] = mat(layout.name("mlp/w2/weight", i))
        hf[f"{p}.input_layernorm.weight"] = vec(layout.name("attention_norm/gamma", i))
        hf[f"{p}.post_attention_layernorm.weight"] = vec(layout.name("mlp_norm/gamma", i))
    check_hf_state(hf, spec)
    return {k: np.ascontiguousarray(a) for k, a in hf.items()}
