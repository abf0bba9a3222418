"""Create the backend that the plan chose."""

from __future__ import annotations

from ttexp.backends.base import Backend, Collectives
from ttexp.config.schema import RunConfig
from ttexp.errors import BackendUnavailable


def create_backend(cfg: RunConfig, backend: str, ranks: Collectives) -> Backend:
    """Instantiate ``backend`` ('torch' or 'ttml', as the run plan chose) for ``cfg``.

    Args:
        cfg: the validated run config (device, precision, optimizer, hardware).
        backend: the plan's backend name.
        ranks: the run's ranks; a torch rank on CUDA takes its own device (``ranks.device``).

    Raises:
        BackendUnavailable: the backend cannot run here.
    """
    # Each backend is imported when chosen: torch and transformers, or ttml, load only then.
    if backend == "torch":
        import torch

        from ttexp.backends.torch_backend import TorchBackend, resolve_device

        device = resolve_device(cfg.device)
        if device.type == "cuda" and ranks.world_size > 1:
            device = torch.device(ranks.device)
        return TorchBackend(
            device=device,
            precision=cfg.training.precision.value,
            optimizer_cfg=cfg.optimizer,
            weight_decay=cfg.training.weight_decay,
            compile=cfg.training.compile,
            ranks=ranks,
            activation_checkpointing=cfg.training.activation_checkpointing,
            planned_steps=min(cfg.training.stop_at_step or cfg.training.max_steps,
                              cfg.training.max_steps),
        )
    if backend == "ttml":
        from ttexp.backends.ttml.backend import TtmlBackend

        return TtmlBackend(
            mesh_shape=[int(n) for n in cfg.hardware.mesh_shape],
            enable_ddp=bool(cfg.hardware.enable_ddp),
            optimizer_cfg=cfg.optimizer,
            weight_decay=cfg.training.weight_decay,
            seed=cfg.training.seed,
            clip_grad_norm=bool(cfg.training.use_clip_grad_norm),
            device_ids=(list(cfg.hardware.device_ids)
                        if cfg.hardware.device_ids is not None else None),
            activation_checkpointing=cfg.training.activation_checkpointing,
        )
    raise BackendUnavailable(f"backend={backend} is not available in this version of ttexp.")
