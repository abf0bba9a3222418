"""The memory plan: the run's bytes per device against the device's memory, checked before
anything loads, with the cheapest changes that would fit.

    plan = memory_plan(cfg, backend="ttml", micro_batch_size=8)   # TinyLlama on n150
    plan.lines()          # the start-up block (and python -m ttexp.doctor)
    plan.check()          # raises MemoryTooSmall naming what fits

The torch backend is planned against the torch device it will run on (a CUDA device's total
memory, or the machine's RAM); the ttml backend against one chip of the hardware preset. Data
parallelism keeps a full copy of weights, gradients and optimizer state on every device.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ttexp.config.schema import RunConfig
from ttexp.errors import ConfigError
from ttexp.models.memory import (
    TORCH_BF16,
    TORCH_FP32,
    TTML_BF16,
    TTML_BF16_MOREH,
    LoraShape,
    MemoryEstimate,
    PrecisionProfile,
    estimate_memory,
    gib,
    lora_shape,
    ttml_recomputes,
)
from ttexp.models.spec import ModelSpec

GB = 10**9
CHIP_DRAM_BYTES = {"n150": 12 * GB, "n300": 12 * GB, "t3k": 12 * GB, "galaxy": 12 * GB,
                   "p150": 32 * GB}
"""DRAM per chip of each hardware preset, in bytes. Wormhole (n150, n300, T3K's four n300 cards,
Galaxy's 32 chips): 12 GB GDDR6 per chip (docs.tenstorrent.com/aibs/wormhole/specifications:
n150s/d "12 GB GDDR6", n300s/d "24 GB" for its two chips; reference/perf_anchors.md §6).
Blackhole p150: 32 GB GDDR6 (Tenstorrent's Blackhole p150 specification; reference/perf_anchors.md
§4.1). Counted as 10**9-byte GB, a little under the chips' 12 GiB / 32 GiB, which leaves room for
firmware, program and circular buffers."""

OTHER_PRESETS = {"p150": 1, "n300": 2, "t3k": 8, "galaxy": 32}
"""Hardware presets suggested when a run does not fit (ttml), cheapest first, with their
data-parallel devices (the global batch is split over them)."""


class MemoryTooSmall(ConfigError):
    """The run needs more memory per device than the device has; nothing was loaded."""


@dataclass
class Alternative:
    """One change that makes the run fit: the overrides and the total it would need."""

    overrides: str
    total: int


@dataclass
class MemoryPlan:
    """The estimate for this run, the device it is checked against and what would fit."""

    estimate: MemoryEstimate
    device: str
    capacity: Optional[int]
    """Bytes of memory of one device (None: unknown, the run is not checked)."""
    copies: int = 1
    """Full copies sharing ``capacity`` (torch ranks on one CPU share its RAM)."""
    alternatives: list[Alternative] = field(default_factory=list)
    checkpointing: str = ""
    """How the run's checkpointing setting came about, when not from the config."""

    @property
    def need(self) -> int:
        """Bytes this run needs of ``capacity``: the estimate's total times ``copies``."""
        return self.estimate.total * self.copies

    @property
    def fits(self) -> bool:
        return self.capacity is None or self.need <= self.capacity

    def lines(self) -> list[str]:
        """The start-up block: one line per part, then the verdict."""
        e = self.estimate
        ckpt = self.checkpointing or ("training.activation_checkpointing="
                                      + ("on" if e.activation_checkpointing else "off"))
        cap = gib(self.capacity) if self.capacity is not None else "unknown"
        verdict = "fits" if self.fits else "DOES NOT FIT"
        out = [f"Memory plan per device ({e.profile}; {e.trainable_params:,} of "
               f"{e.total_params:,} parameters trained):",
               f"  weights {gib(e.weights)}, gradients {gib(e.gradients)}, AdamW state "
               f"{gib(e.optimizer)}",
               f"  activations {gib(e.activations)} without checkpointing, "
               f"{gib(e.activations_checkpointed)} with ({ckpt})",
               f"  total {gib(self.need)}" + (f" ({self.copies} copies)" if self.copies > 1 else "")
               + f" of {cap} on {self.device}: {verdict}"]
        return out + [f"  fits with {a.overrides}: {gib(a.total)}" for a in self.alternatives]

    def check(self) -> None:
        """Raise unless the run fits.

        Raises:
            MemoryTooSmall: the total exceeds the device's memory; the message lists the
                cheapest changes that fit, each with its estimated total.
        """
        if self.fits:
            return
        fixes = "; ".join(f"{a.overrides} ({gib(a.total)})" for a in self.alternatives)
        raise MemoryTooSmall(
            f"The run needs about {gib(self.need)} per device but {self.device} has "
            f"{gib(self.capacity or 0)}: weights {gib(self.estimate.weights)}, gradients "
            f"{gib(self.estimate.gradients)}, AdamW state {gib(self.estimate.optimizer)}, "
            f"activations {gib(self.estimate.activations_used)}. "
            + (f"Changes that fit: {fixes}." if fixes else
               "No single change of adapter, micro-batch, checkpointing or hardware fits; "
               "use a smaller model or a larger device."))

    def to_dict(self) -> dict[str, Any]:
        """For result.json: the estimate, the device, its capacity and the verdict."""
        return {**self.estimate.to_dict(), "device": self.device, "capacity": self.capacity,
                "checkpointing_note": self.checkpointing,
                "copies": self.copies, "fits": self.fits,
                "alternatives": [dataclasses.asdict(a) for a in self.alternatives]}


def torch_profile(precision: str, device: str) -> PrecisionProfile:
    """fp32 or bf16 autocast, as :func:`ttexp.backends.torch_backend.autocast_dtype_for` decides;
    on CPU attention dropout makes SDPA keep its ``s x s`` probabilities."""
    import torch

    from ttexp.backends.torch_backend import autocast_dtype_for

    dev = torch.device(device)
    profile = TORCH_FP32 if autocast_dtype_for(dev, precision) is None else TORCH_BF16
    return dataclasses.replace(profile, dropout_math=dev.type == "cpu")


def torch_capacity(device: str) -> tuple[str, Optional[int]]:
    """The torch device's memory: a CUDA device's total (``torch.cuda.get_device_properties``),
    or the machine's RAM (``os.sysconf``: physical pages x page size)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        return f"{dev} ({props.name})", int(props.total_memory)
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return "cpu", None
    return "cpu RAM", int(ram)


def memory_plan(cfg: RunConfig, backend: str, micro_batch_size: int, copies: int = 1,
                device: Optional[str] = None, spec: Optional[ModelSpec] = None) -> MemoryPlan:
    """The memory plan of ``cfg`` on ``backend`` ('torch' or 'ttml').

    Args:
        cfg: the validated run config (model, adapter, training, optimizer, hardware).
        backend: the plan's backend; torch is planned against ``device``, ttml against one chip
            of ``cfg.hardware``.
        micro_batch_size: sequences per device (torch: per process) per micro-step.
        copies: full copies sharing one device's memory (torch ranks on one CPU).
        device: the torch device ('cpu', 'cuda:0'); None = CUDA when present, else CPU.
        spec: the model shape (default: from ``cfg.model``).

    Raises:
        ValueError: a LoRA target is not a Llama linear layer.
    """
    spec = spec or ModelSpec.from_config(cfg.model)
    if backend == "ttml":
        profile = TTML_BF16_MOREH if cfg.optimizer.use_moreh_adamw else TTML_BF16
        name = cfg.hardware.name
        label, capacity = f"one {name} chip", CHIP_DRAM_BYTES.get(name)
    else:
        import torch

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        profile = torch_profile(cfg.training.precision.value, device)
        label, capacity = torch_capacity(device)
    lora, ckpt = lora_shape(cfg.adapter), bool(cfg.training.activation_checkpointing)
    note = ""
    if backend == "ttml" and ttml_recomputes(spec, ckpt) and not ckpt:
        ckpt, note = True, "on: ttml's memory-efficient runner, as tt-train runs models this wide"

    def total(b: int, lo: Optional[LoraShape], ck: bool) -> int:
        return estimate_memory(spec, b, spec.max_seq_len, profile, lo, ck).total * copies

    plan = MemoryPlan(estimate_memory(spec, micro_batch_size, spec.max_seq_len, profile, lora, ckpt),
                      label, capacity, copies, checkpointing=note)
    if not plan.fits and capacity is not None:
        plan.alternatives = _alternatives(cfg, backend, micro_batch_size, lora, ckpt, total,
                                          capacity)
    return plan


def _alternatives(cfg: RunConfig, backend: str, b: int, lora: Optional[LoraShape], ckpt: bool,
                  total: Any, capacity: int) -> list[Alternative]:
    """The cheapest single changes that fit, in the order the issue names them: LoRA, a smaller
    micro-batch with more accumulation (same effective batch), checkpointing, another preset."""
    out: list[Alternative] = []
    default_lora = LoraShape(8, ("q_proj", "v_proj"))
    for lo, ck, text in ((lora or default_lora, ckpt, "adapter=lora"),
                         (lora or default_lora, True,
                          "adapter=lora training.activation_checkpointing=true")):
        if lora is None and total(b, lo, ck) <= capacity:
            out.append(Alternative(text, total(b, lo, ck)))
            break
    t = cfg.training
    for ck in ((ckpt, True) if not ckpt else (True,)):
        smaller = _smaller_batch(cfg, b, lambda mb: total(mb, lora, ck) <= capacity)
        if smaller:
            dp = b and t.batch_size // b
            acc = t.gradient_accumulation_steps * (b // smaller)
            extra = " training.activation_checkpointing=true" if ck and not ckpt else ""
            out.append(Alternative(f"training.batch_size={smaller * dp} "
                                   f"training.gradient_accumulation_steps={acc}{extra}",
                                   total(smaller, lora, ck)))
            break
    if not ckpt and total(b, lora, True) <= capacity:
        out.append(Alternative("training.activation_checkpointing=true", total(b, lora, True)))
    if backend == "ttml":
        for name, n in OTHER_PRESETS.items():
            if name == cfg.hardware.name or t.batch_size % n:
                continue
            need = total(t.batch_size // n, lora, ckpt)
            if need <= CHIP_DRAM_BYTES[name]:
                out.append(Alternative(f"hardware={name}", need))
                break
    return out


def _smaller_batch(cfg: RunConfig, b: int, fits: Any) -> Optional[int]:
    """The largest micro-batch below ``b`` that divides it (so accumulation keeps the effective
    batch) and fits; None if even 1 does not."""
    for mb in range(b - 1, 0, -1):
        if b % mb == 0 and fits(mb):
            return mb
    return None
