"""The run plan: backend choice and the device/batch arithmetic, computed once, printed first.

Names (STYLE.md, rule 8): ``global_batch_size`` is ``training.batch_size``, the sequences of one
micro-step over all data-parallel devices; ``micro_batch_size`` is its share per device;
``effective_batch_size`` is ``global_batch_size * gradient_accumulation_steps``, the sequences
per optimizer step. Results depend on the effective batch, never on how the mesh splits it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from ttexp.backends.detect import ttml_device_status, ttml_status
from ttexp.config.schema import RunConfig, TaskName
from ttexp.config.validate import data_parallel_size
from ttexp.errors import BackendUnavailable
from ttexp.models.spec import (
    ModelSpec,
    ParamBreakdown,
    flops_per_token,
    param_breakdown,
)
from ttexp.train.memory import MemoryPlan, memory_plan
from ttexp.train.ranks import Ranks

log = logging.getLogger("ttexp")


@dataclass
class RunPlan:
    """Everything derived from the config before the run starts (read-only afterwards)."""

    backend: str
    backend_reason: str
    hardware: str
    mesh_shape: list[int]
    num_devices: int
    data_parallel_size: int
    global_batch_size: int
    micro_batch_size: int
    gradient_accumulation_steps: int
    effective_batch_size: int
    seq_len: int
    tokens_per_step: int
    max_steps: int
    flops_per_token: int
    spec: ModelSpec
    params: ParamBreakdown
    processes: int = 1
    """torch ranks sharing the data-parallel devices (1 = one process runs every shard)."""
    notes: list[str] = field(default_factory=list)
    memory: Optional[MemoryPlan] = None
    """Bytes per device against the device's memory (:mod:`ttexp.train.memory`)."""

    @property
    def process_batch_size(self) -> int:
        """Sequences per micro-step in this process: ``global_batch_size / processes``."""
        return self.global_batch_size // self.processes

    def to_dict(self) -> dict[str, Any]:
        """The plan for result.json (model spec and parameter counts summarised)."""
        d = asdict(self)
        d.pop("spec"), d.pop("params"), d.pop("memory")
        d["num_parameters"] = self.params.total
        return d


def choose_backend(requested: str, mesh_shape: list[int] | None = None) -> tuple[str, str]:
    """Resolve ``backend`` (auto | torch | ttml) to (backend, reason).

    ``auto`` picks ttml when it imports, is tt-train's package, and a device opens for
    ``mesh_shape`` (default ``[1, 1]``); otherwise torch, and the reason says why.

    Raises:
        BackendUnavailable: ``backend=ttml`` was asked for and ttml cannot be used here.
    """
    if requested == "torch":
        return "torch", "backend=torch"
    if requested == "ttml":
        ok, why = ttml_status()
        if not ok:
            raise BackendUnavailable(
                f"backend=ttml was requested but {why}. Build tt-train (TT_METAL_HOME/tt-train) "
                "and run inside its Python environment, or use backend=torch."
            )
        return "ttml", "backend=ttml"
    ok, why = ttml_device_status(list(mesh_shape or [1, 1]))
    if ok:
        return "ttml", f"backend=auto: {why}"
    return "torch", f"backend=auto: {why}, so torch"


def torch_processes(cfg: RunConfig, dp: int) -> int:
    """Ranks for the torch backend: ``hardware.processes`` if set, else one per CUDA device when
    the machine has at least ``dp`` of them (and no single device was requested), else 1."""
    if cfg.hardware.processes is not None:
        return int(cfg.hardware.processes)
    if dp > 1 and not cfg.device:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() >= dp:
            return dp
    return 1


def make_plan(cfg: RunConfig, ranks: Optional[Ranks] = None,
              backend: Optional[str] = None) -> RunPlan:
    """Compute the plan from a validated config, once per process (the runner and each worker
    rank), and hand it down; tasks and the loop only read it.

    Args:
        cfg: the validated run config.
        ranks: this process among the run's ranks; a rank started by the launcher always runs
            torch, and the launcher decides how many ranks there are (torchrun may start more
            than the config says).
        backend: use this backend instead of choosing one (``python -m ttexp.doctor`` plans
            the backend it expects without opening a device).

    Raises:
        BackendUnavailable: ``backend=ttml`` was asked for and cannot run here.
    """
    ranks = ranks or Ranks.single()
    mesh = [int(n) for n in cfg.hardware.mesh_shape]
    if ranks.enabled:
        backend, reason = "torch", f"rank {ranks.rank} of {ranks.world_size} torch ranks"
    elif backend:
        reason = f"backend={backend} (assumed)"
    else:
        backend, reason = choose_backend(cfg.backend.value, mesh)
    spec = ModelSpec.from_config(cfg.model)
    t = cfg.training
    dp = data_parallel_size(cfg.hardware)
    effective = t.batch_size * t.gradient_accumulation_steps
    if ranks.enabled:
        processes = ranks.world_size
    else:
        processes = torch_processes(cfg, dp) if backend == "torch" else 1
    plan = RunPlan(
        backend=backend,
        backend_reason=reason,
        hardware=cfg.hardware.name,
        mesh_shape=mesh,
        num_devices=cfg.hardware.num_devices,
        data_parallel_size=dp,
        global_batch_size=t.batch_size,
        micro_batch_size=t.batch_size // dp,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        effective_batch_size=effective,
        seq_len=spec.max_seq_len,
        tokens_per_step=effective * spec.max_seq_len,
        max_steps=t.max_steps,
        flops_per_token=flops_per_token(spec, spec.max_seq_len),
        spec=spec,
        params=param_breakdown(spec),
        processes=processes,
    )
    if cfg.task.name != TaskName.eval:  # evaluation keeps no gradients, optimizer state or graph
        plan.memory = plan_memory(cfg, plan, ranks)
    return plan


def plan_memory(cfg: RunConfig, plan: RunPlan, ranks: Optional[Ranks] = None) -> MemoryPlan:
    """The memory plan for ``plan``'s backend: ttml per chip (its micro-batch); torch per process
    on its device (``ranks.device`` in a launched CUDA rank), CPU ranks sharing one machine's RAM.

    Raises:
        ValueError: a LoRA target is not a Llama linear layer.
    """
    ranks = ranks or Ranks.single()
    if plan.backend == "ttml":
        return memory_plan(cfg, "ttml", plan.micro_batch_size, spec=plan.spec)
    device = ranks.device if ranks.enabled and "cuda" in str(ranks.device) else cfg.device
    on_cpu = "cuda" not in str(device or ("cuda" if _cuda() else "cpu"))
    copies = plan.processes if on_cpu and not ranks.enabled else 1
    return memory_plan(cfg, "torch", max(1, plan.process_batch_size), copies=copies,
                       device=device, spec=plan.spec)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def plan_lines(plan: RunPlan, device_name: str, precision: str) -> list[str]:
    """The start-up block, in the lessons' wording where they have one (ct5: "Device mesh")."""
    dp = plan.data_parallel_size
    if plan.backend == "torch" and plan.processes > 1:
        how = (f"{plan.processes} torch ranks, {plan.process_batch_size} sequences each per "
               f"micro-step, on {device_name}")
    elif plan.backend == "torch" and dp > 1:
        how = f"torch runs the {dp} data-parallel shards in one process on {device_name}"
    else:
        how = device_name
    return [
        f"Backend: {plan.backend} on {device_name}, {precision} ({plan.backend_reason})",
        f"Device mesh: {plan.mesh_shape} (hardware={plan.hardware}"
        + (", data parallel)" if dp > 1 else ")"),
        f"Devices: {plan.num_devices} ({how})",
        f"Batch size: {plan.global_batch_size} (per-device: {plan.micro_batch_size})"
        f" x gradient accumulation {plan.gradient_accumulation_steps}"
        f" = effective batch {plan.effective_batch_size}",
        f"Tokens per step: {plan.tokens_per_step:,} ({plan.effective_batch_size} x {plan.seq_len})",
    ] + (plan.memory.lines() if plan.memory else [])
