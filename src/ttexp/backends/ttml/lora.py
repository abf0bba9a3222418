"""LoRA on the ttml backend, through tt-train's own ``ttml.modules.lora`` (feature-detected).

    python -m ttexp task=finetune backend=ttml adapter=lora model.pretrained_path=DIR

What tt-train's module does (``tt-train/sources/ttml/ttml/modules/lora.py`` @
16c4920e2fad5783a8d563c30d4b4d3ac2d2dccc): ``LoraModel(model, LoraConfig(rank, alpha,
target_modules, use_rslora, is_bias_trainable, trainable_modules, lora_dropout))`` freezes every
parameter, then replaces each Python ``LinearLayer`` whose dotted path (``blocks.0.attention.
kv_linear``) a target regex *searches* by a ``LoraLinear``: the frozen ``weight`` plus ``lora_A
[1, 1, r, in]`` and ``lora_B [1, 1, out, r]``, scaled by ``alpha / r``: PEFT's A, B and scaling
(``lora_alpha / r``) in ttml's 4-D shape. The patterns here are anchored (``(^|\\.)attention\\.
kv_linear$``), since ``kv_linear`` is a substring of ``qkv_linear``. The injection happens in place,
so the wrapped model keeps its parameter names and gains ``.../q_linear/lora_A`` and ``lora_B``;
the wrapper's own names would carry ``LoraModel/model/`` (it registers the model as its child
``model`` and names itself after its class, ``module_base.py`` @ 04a6c330), so ttexp reads the
wrapped model's. Only the Python Llama has Python ``LinearLayer`` children to replace; on the C++
Llama the injection finds nothing, and ttexp refuses.

Names on disk are PEFT's. ttml fuses projections that PEFT adapts separately: ``kv_linear = [K|V]``
(or ``qkv_linear = [Q|K|V]``) and ``w_gate_up = [gate|up]`` carry one adapter with one A. So the
adapter of a fused module is written as PEFT adapters of each member sharing that A, with B split
by rows (and q/k rows put back from ttml's interleaved RoPE order): exactly the same update
``s B A``. Loading goes the other way and needs the members' A to be equal, which holds for every
adapter ttml trained; an adapter that targets only some members of a fused module (``k_proj``
without ``v_proj``) cannot be expressed on ttml and is refused.
"""

from __future__ import annotations

import importlib
import json
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ttexp.backends.base import NamedState
from ttexp.config.schema import AdapterConfig
from ttexp.errors import BackendUnavailable, TtexpError
from ttexp.models.adapter import (
    ADAPTER_CONFIG_KEY,
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    FINAL_ADAPTER_DIR,
    ttml_module_names,
)
from ttexp.models.hf import write_tensors, write_weights
from ttexp.models.spec import ModelSpec
from ttexp.models.ttml_weights import (
    TtmlLayout,
    deinterleave_rope_rows,
    interleave_rope_rows,
    ttml_to_hf,
)

LORA_TENSORS = ("lora_A", "lora_B")


def lora_module(ttml: Any) -> Any | None:
    """``ttml.modules.lora`` when this ttml has it (with ``LoraConfig`` and ``LoraModel``), else
    None. The real package does not import the submodule from ``ttml/modules/__init__.py``
    (@ 04a6c330), so it is imported by name."""
    mod = getattr(getattr(ttml, "modules", None), "lora", None)
    if mod is None and isinstance(ttml, types.ModuleType):
        try:
            mod = importlib.import_module(f"{ttml.__name__}.modules.lora")
        except Exception:  # absent, or a broken install: both mean "no LoRA here"
            return None
    return mod if hasattr(mod, "LoraConfig") and hasattr(mod, "LoraModel") else None


@dataclass(frozen=True)
class Member:
    """One Hugging Face projection inside a ttml module: rows ``[start, stop)`` of its output;
    ``rope_heads`` > 0 when those rows are in ttml's interleaved RoPE order."""

    hf: str
    start: int
    stop: int
    rope_heads: int = 0


def module_members(spec: ModelSpec, layout: TtmlLayout) -> dict[str, list[Member]]:
    """ttml module (below a block, e.g. ``attention/kv_linear``) -> the HF projections it holds,
    rows stacked in Hugging Face order (:func:`ttexp.models.adapter.ttml_module_names`)."""
    d, kv, f = spec.hidden_dim, spec.num_kv_heads * spec.head_dim, spec.mlp_dim
    rows = {"q_proj": (d, spec.num_heads), "k_proj": (kv, spec.num_kv_heads), "v_proj": (kv, 0),
            "o_proj": (d, 0), "gate_proj": (f, 0), "up_proj": (f, 0), "down_proj": (d, 0)}
    out: dict[str, list[Member]] = {}
    for hf, module in ttml_module_names(layout.fused_qkv, layout.packed_mlp).items():
        members = out.setdefault(module, [])
        start = members[-1].stop if members else 0
        members.append(Member(hf, start, start + rows[hf][0], rows[hf][1]))
    return out


def ttml_target_modules(adapter: AdapterConfig, spec: ModelSpec, layout: TtmlLayout) -> dict[str, list[Member]]:
    """The ttml modules ``adapter.target_modules`` (HF names) select, with their members.

    Raises:
        BackendUnavailable: a fused module would be adapted for only some of its projections.
    """
    wanted, out, partial = set(adapter.target_modules), {}, []
    for module, members in module_members(spec, layout).items():
        hit = [m.hf for m in members if m.hf in wanted]
        if hit and len(hit) < len(members):
            partial.append(f"{'+'.join(hit)} without {'+'.join(m.hf for m in members if m.hf not in wanted)}"
                           f" (ttml's {module.split('/')[-1]} holds {', '.join(m.hf for m in members)})")
        elif hit:
            out[module] = members
    if partial:
        raise BackendUnavailable(
            f"adapter.target_modules={sorted(wanted)} cannot be built with ttml's LoRA: "
            f"{'; '.join(partial)}, and its one adapter spans the whole fused projection. Add the "
            "missing names to adapter.target_modules, or use backend=torch.")
    return out


def peft_key(layer: int, hf: str, tensor: str) -> str:
    """PEFT's file name of an adapter tensor (``get_peft_model_state_dict`` on a Llama)."""
    part = "self_attn" if hf in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
    return f"base_model.model.model.layers.{layer}.{part}.{hf}.{tensor}.weight"


def peft_config(adapter: AdapterConfig, base: str | None) -> dict[str, Any]:
    """``adapter_config.json`` as PEFT writes it for ``adapter`` on the base ``base``."""
    from peft import LoraConfig

    conf = LoraConfig(r=adapter.r, lora_alpha=adapter.lora_alpha, lora_dropout=adapter.lora_dropout,
                      target_modules=sorted(adapter.target_modules), bias=adapter.bias,
                      task_type="CAUSAL_LM", base_model_name_or_path=base).to_dict()
    return json.loads(json.dumps(conf, default=lambda v: sorted(v) if isinstance(v, (set, frozenset))
                                 else str(v)))


class TtmlLora:
    """An applied ttml LoRA: which modules carry it, and its tensors to and from PEFT's names.

    Args:
        ttml: the ttml module (or the test double).
        model: the built Python Llama (wrapped in place).
        spec, layout: its shape and parameter layout.
        adapter: the ``adapter`` section (HF target names).
        base: the base model's path, recorded in ``adapter_config.json``.

    Raises:
        BackendUnavailable: this ttml has no ``ttml.modules.lora``; the targets split a fused
            module; or the injection did not find every target (a C++ Llama).
    """

    def __init__(self, ttml: Any, model: Any, spec: ModelSpec, layout: TtmlLayout,
                 adapter: AdapterConfig, base: str | None):
        mod = lora_module(ttml)
        if mod is None:
            raise BackendUnavailable(
                "adapter=lora on backend=ttml needs tt-train's LoRA module (ttml.modules.lora, "
                "LoraConfig + LoraModel), which this ttml does not have. Update tt-train, or train "
                "the adapter with backend=torch.")
        if not callable(getattr(model, "named_children", None)):
            raise BackendUnavailable(
                "adapter=lora on backend=ttml needs tt-train's Python Llama (ttml.models.llama."
                "Llama): ttml's LoraModel replaces its Python LinearLayer modules, and this model "
                "(the C++ Llama) has none. Update tt-train, or use backend=torch.")
        self.spec, self.layout, self.adapter, self.base = spec, layout, adapter, base
        self.targets = ttml_target_modules(adapter, spec, layout)
        patterns = [rf"(^|\.){re.escape(m.replace('/', '.'))}$" for m in sorted(self.targets)]
        config = mod.LoraConfig(rank=adapter.r, alpha=adapter.lora_alpha, target_modules=patterns,
                                use_rslora=False, is_bias_trainable=adapter.bias != "none",
                                trainable_modules=[], lora_dropout=adapter.lora_dropout)
        self.wrapper = mod.LoraModel(model, config)  # freezes the base, injects in place
        self.scaling = adapter.lora_alpha / adapter.r
        names = set(model.parameters().keys())
        missing = [n for n in self.names() if n not in names]
        if missing:
            raise BackendUnavailable(
                f"ttml's LoraModel did not adapt {len(missing)} of the {len(self.names())} target "
                f"tensors (first: {missing[0]}): its injection replaces Python LinearLayer modules, "
                "which this model (the C++ Llama?) lacks. Use a tt-train with the Python Llama, "
                "or backend=torch.")

    def names(self) -> list[str]:
        """ttml names of the adapter tensors, e.g. ``Llama/blocks/0/attention/q_linear/lora_A``."""
        return [self.layout.name(f"{m}/{t}", i) for i in range(self.spec.num_layers)
                for m in sorted(self.targets) for t in LORA_TENSORS]

    def trainable(self, ttml: Any, params: Any) -> Any:
        """The adapter's tensors of ``params`` (``model.parameters()``) as ``ttml.NamedParameters``:
        what the optimizer, clipping and gradient sync see (never the frozen base)."""
        out = ttml.NamedParameters()
        for name in self.names():
            out[name] = params[name]
        return out

    def to_peft(self, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Adapter tensors under PEFT's names (``[r, in]`` A, ``[out, r]`` B) from ttml's host
        parameters (:meth:`TtmlBackend.parameters_numpy`)."""
        out = {}
        for i in range(self.spec.num_layers):
            for module, members in self.targets.items():
                a = params[self.layout.name(f"{module}/lora_A", i)][0, 0]
                b = params[self.layout.name(f"{module}/lora_B", i)][0, 0]
                for m in members:
                    rows = b[m.start:m.stop]
                    # a copy each: safetensors refuses tensors that share memory
                    out[peft_key(i, m.hf, "lora_A")] = a.copy()
                    out[peft_key(i, m.hf, "lora_B")] = np.ascontiguousarray(
                        deinterleave_rope_rows(rows, m.rope_heads) if m.rope_heads else rows)
        return out

    def from_peft(self, tensors: dict[str, Any], shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
        """ttml arrays (4-D) of the adapter from PEFT-named ``tensors``; ``shapes`` are the live
        tensors' shapes by ttml name.

        Raises:
            TtexpError: a tensor is missing, unexpected or of another shape, or the members of a
                fused module have different A (an adapter ttml did not train).
        """
        arr = {k: np.asarray(v.float().numpy() if hasattr(v, "numpy") else v, dtype=np.float32)
               for k, v in tensors.items()}
        want = set(self.to_peft_keys())
        problems = [f"missing {k}" for k in sorted(want - set(arr))]
        problems += [f"unexpected {k}" for k in sorted(set(arr) - want)]
        out: dict[str, np.ndarray] = {}
        for i in range(self.spec.num_layers):
            for module, members in self.targets.items() if not problems else ():
                a = arr[peft_key(i, members[0].hf, "lora_A")]
                if any(not np.array_equal(arr[peft_key(i, m.hf, "lora_A")], a) for m in members):
                    problems.append(f"layer {i}: {'/'.join(m.hf for m in members)} have different "
                                    f"lora_A, but ttml's {module} shares one")
                    continue
                bs = [arr[peft_key(i, m.hf, "lora_B")] for m in members]
                b = np.concatenate([interleave_rope_rows(x, m.rope_heads) if m.rope_heads else x
                                    for x, m in zip(bs, members)])
                for t, value in (("lora_A", a), ("lora_B", b)):
                    name = self.layout.name(f"{module}/{t}", i)
                    if (1, 1, *value.shape) != tuple(shapes[name]):
                        problems.append(f"{name}: saved {value.shape}, model {tuple(shapes[name])[2:]}")
                    out[name] = value.reshape(1, 1, *value.shape)
        if problems:
            raise TtexpError(f"The adapter does not fit this model's ttml LoRA ({len(problems)} "
                             f"problems: {'; '.join(problems[:6])}). Use the adapter settings "
                             "(adapter.r, adapter.target_modules) it was trained with, or load it "
                             "with backend=torch.")
        return out

    def to_peft_keys(self) -> list[str]:
        return [peft_key(i, m.hf, t) for i in range(self.spec.num_layers)
                for members in self.targets.values() for m in members for t in LORA_TENSORS]

    def state(self, params: dict[str, np.ndarray]) -> NamedState:
        """The adapter as :meth:`Backend.adapter_state` returns it."""
        return NamedState(self.to_peft(params), {ADAPTER_CONFIG_KEY: peft_config(self.adapter, self.base)})

    def merged(self, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """ttml host parameters with each target's ``weight`` replaced by ``W + (alpha/r) B A``
        (what ``merge_and_unload`` computes) and the adapter tensors left out."""
        out = {k: v for k, v in params.items() if k.rsplit("/", 1)[-1] not in LORA_TENSORS}
        for i in range(self.spec.num_layers):
            for module in self.targets:
                a = params[self.layout.name(f"{module}/lora_A", i)][0, 0].astype(np.float64)
                b = params[self.layout.name(f"{module}/lora_B", i)][0, 0].astype(np.float64)
                w = self.layout.name(f"{module}/weight", i)
                out[w] = (params[w].astype(np.float64) + self.scaling * (b @ a)).astype(np.float32)
        return out

    def save_merged(self, directory: Path, params: dict[str, np.ndarray]) -> None:
        """Write ``directory/model.safetensors`` (the merged weights, Hugging Face names) and
        ``directory/adapter/`` as PEFT's ``save_pretrained`` does (config + safetensors)."""
        write_weights(directory, ttml_to_hf(self.merged(params), self.spec, self.layout))
        state = self.state(params)
        target = Path(directory) / FINAL_ADAPTER_DIR
        target.mkdir(parents=True, exist_ok=True)
        write_tensors(target / ADAPTER_WEIGHTS_NAME, state.tensors)
        (target / ADAPTER_CONFIG_NAME).write_text(json.dumps(state.scalars[ADAPTER_CONFIG_KEY], indent=2))


def upload_adapter(lora: TtmlLora, tensors: dict[str, Any], params: Any,
                   upload: Callable[[np.ndarray], Any]) -> None:
    """Copy PEFT-named ``tensors`` into the live adapter ``params`` (``model.parameters()``)."""
    shapes = {n: tuple(getattr(params[n], "tensor", params[n]).shape()) for n in lora.names()}
    for name, arr in lora.from_peft(tensors, shapes).items():
        getattr(params[name], "tensor", params[name]).assign(upload(arr))
