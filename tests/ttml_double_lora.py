"""The strict double of tt-train's ``ttml.modules.lora`` (test code only; ``ttml_double.make``
exposes it as ``ttml.modules.lora`` unless ``lora=False``).

Declared from ``tt-train/sources/ttml/ttml/modules/lora.py`` @
16c4920e2fad5783a8d563c30d4b4d3ac2d2dccc:

- ``LoraConfig(rank=8, alpha=16.0, target_modules=[], use_rslora=False, is_bias_trainable=False,
  trainable_modules=[], lora_dropout=0.0)``, a dataclass: keyword names are strict (an unknown
  one is a TypeError, as a dataclass raises).
- ``LoraModel(model, config)``: sets ``requires_grad`` False on every ``model.named_parameters()``,
  then walks ``named_children()`` building dotted paths (``blocks.0.attention.q_linear``) and
  replaces each ``LinearLayer`` child whose path some ``re.search(pattern)`` matches by a
  ``LoraLinear`` under the same attribute name (``setattr``: register, else override). The wrapper
  registers the model as its child ``model`` and names itself after its class, so its own
  ``parameters()`` say ``LoraModel/model/...``; the wrapped model's own names are unchanged.
- ``LoraLinear``: keeps the frozen ``weight`` (and ``bias``), adds ``lora_A [1, 1, rank, in]``
  (uniform in +-1/sqrt(in), drawn with NumPy's global RNG) and ``lora_B [1, 1, out, rank]``
  (zeros), ``scaling = alpha / rank`` (``alpha / sqrt(rank)`` with ``use_rslora``); forward
  ``linear(x, W, b) + linear(linear(dropout(x), A), B) * scaling``.

The double computes ``x (W + s B A)^T``, equal without dropout; it refuses a training forward with
``lora_dropout > 0`` (``NotImplementedError``) rather than pretend to model ttml's dropout RNG.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import torch

import ttml_double as dbl


@dataclass
class LoraConfig:
    rank: int = 8
    alpha: float = 16.0
    target_modules: list = field(default_factory=list)
    use_rslora: bool = False
    is_bias_trainable: bool = False
    trainable_modules: list = field(default_factory=list)
    lora_dropout: float = 0.0


def _bf16_param(arr: np.ndarray) -> "dbl.Tensor":
    """A trainable bf16 TILE parameter (lora.py uploads ml_dtypes.bfloat16 arrays, TILE)."""
    value = torch.from_numpy(arr.astype(np.float32)).to(torch.bfloat16).float().requires_grad_(True)
    return dbl.Tensor(value, dbl.STATE, dbl.DataType.BFLOAT16, dbl.Layout.TILE)


class LoraLinear(dbl.ModuleBase):
    def __init__(self, linear: "dbl.LinearLayer", config: LoraConfig):
        super().__init__("LoraLinear")
        if not dbl.STATE.device_open:
            raise dbl.ApiViolation("LoraLinear uploads its tensors: open the device first")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.setattr("weight", linear.weight)
        self.weight.set_requires_grad(False)
        self.bias = linear.bias  # None on a Llama: not registered (None has no get_value)
        bound = 1.0 / np.sqrt(self.in_features)
        self.setattr("lora_A", _bf16_param(np.random.uniform(-bound, bound, (1, 1, config.rank, self.in_features))))
        self.setattr("lora_B", _bf16_param(np.zeros((1, 1, self.out_features, config.rank))))
        self.dropout_prob = config.lora_dropout
        self.scaling = config.alpha / (math.sqrt(config.rank) if config.use_rslora else config.rank)


class LoraModel:
    def __init__(self, model, config: LoraConfig):
        if not isinstance(config, LoraConfig):
            raise TypeError(f"LoraModel takes a LoraConfig, not {type(config).__name__}")
        self.model = model
        self.root = dbl.ModuleBase("LoraModel")
        self.root.setattr("model", model.root)
        for _, tensor in model.named_parameters():
            tensor.set_requires_grad(False)
        patterns = [re.compile(p) for p in config.target_modules]
        self._inject(model.root, "", patterns, config)

    def _inject(self, module, prefix, patterns, config):
        for name, child in list(module.named_children()):
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(child, dbl.LinearLayer) and any(p.search(full) for p in patterns):
                module.setattr(name, LoraLinear(child, config))
            elif isinstance(child, dbl.ModuleBase):
                self._inject(child, full, patterns, config)

    def parameters(self):
        return self.root.parameters()

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)


def effective_weights(root: "dbl.ModuleBase", training: bool) -> dict:
    """Parameter values by ``parameters()`` name, each LoRA linear's ``weight`` replaced by
    ``W + scaling * B @ A`` (differentiable in A and B)."""
    p = {k: v.value for k, v in root.parameters().items()}
    stack = [(root, root.get_name())]
    while stack:
        module, path = stack.pop()
        if isinstance(module, LoraLinear):
            if training and module.dropout_prob > 0 and dbl.STATE.grad_mode == dbl.GradMode.ENABLED:
                raise NotImplementedError("the ttml double does not model LoRA dropout; use lora_dropout=0")
            a, b = module.lora_A.value[0, 0], module.lora_B.value[0, 0]
            p[f"{path}/weight"] = module.weight.value + module.scaling * (b @ a)[None, None]
        stack += [(m, f"{path}/{n}") for n, m in module._modules.items()]
    return p
