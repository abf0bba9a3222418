"""Which torch device a run uses and whether it computes in bf16 there (no model code)."""

from __future__ import annotations

import os
from typing import Any

import torch

from ttexp.backends.detect import cpu_speed_flags
from ttexp.errors import BackendUnavailable


def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises AVX512_BF16 or AMX-BF16 (Linux /proc/cpuinfo flags) and torch
    may use them: ATen's kernels run at AVX512 (``torch.backends.cpu.get_cpu_capability()``, which
    ``ATEN_CPU_CAPABILITY`` lowers) and oneDNN's ``ONEDNN_MAX_CPU_ISA``, when set, admits bf16
    (``AVX512_CORE_BF16``, an AMX or AVX10 level, or ``ALL``/``DEFAULT``).

    On CPUs without them bf16 autocast is emulated and can be many times slower than fp32
    (reference/perf_anchors.md §5), so ``precision=auto`` stays in fp32 there. The two caps let a
    bf16 machine run as an fp32-only one, e.g. ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI`` (a Cascade
    Lake Xeon's level).
    """
    flags = cpu_speed_flags()
    if "avx512_bf16" not in flags and "amx_bf16" not in flags:
        return False
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if isa and isa not in ("ALL", "DEFAULT") and not any(t in isa for t in ("BF16", "AMX", "AVX10")):
        return False
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def resolve_device(requested: str | None) -> torch.device:
    """``requested`` (e.g. 'cpu', 'cuda:1'), else CUDA when available, else CPU.

    Raises:
        BackendUnavailable: a CUDA device was requested and none is visible.
    """
    if requested:
        dev = torch.device(requested)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(
                f"device={requested} was requested but torch sees no CUDA device "
                f"(torch {torch.__version__}). Use device=cpu or install a CUDA build of torch."
            )
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype_for(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` ('auto', 'fp32', 'bf16') on ``device``; None = fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    native = (
        torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
    )
    return torch.bfloat16 if native else None


def make_adamw(model: torch.nn.Module, optimizer_cfg: Any, weight_decay: float,
               device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters of ``model``: matrices decay by ``weight_decay``,
    vectors (norm weights) not; lr 0 until each step sets it. ``optimizer_cfg.fused`` None means
    fused on CPU and CUDA: torch has fused AdamW kernels there (CPU since 2.4), one pass over each
    parameter instead of ~8 elementwise ops (the CPU default, foreach=False, loops them)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    fused = optimizer_cfg.fused
    if fused is None:
        fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=0.0,
        betas=(optimizer_cfg.beta1, optimizer_cfg.beta2),
        eps=optimizer_cfg.eps,
        fused=bool(fused),
    )
