"""Create the backend that the plan chose."""

from __future__ import annotations

from typing import Any

from ttexp.errors import BackendUnavailable
from ttexp.config.schema import choice


def create_backend(cfg: Any, plan: Any) -> Any:
    """Instantiate ``plan.backend`` for ``cfg``.

    Raises:
        BackendUnavailable: the backend cannot run here.
    """
    if plan.backend == "torch":
        import torch

        from ttexp.backends.torch_backend import TorchBackend, resolve_device
        from ttexp.train.ranks import current

        device = resolve_device(cfg.device)
        if device.type == "cuda" and current().enabled:
            device = torch.device("cuda", current().local_rank)
        return TorchBackend(
            device=device,
            precision=choice(cfg.training.precision),
            optimizer_cfg=cfg.optimizer,
            weight_decay=cfg.training.weight_decay,
            compile=cfg.training.compile,
        )
    if plan.backend == "ttml":
        from ttexp.backends.ttml.backend import TtmlBackend

        return TtmlBackend(
            mesh_shape=[int(n) for n in cfg.hardware.mesh_shape],
            enable_ddp=bool(cfg.hardware.enable_ddp),
            optimizer_cfg=cfg.optimizer,
            weight_decay=cfg.training.weight_decay,
            seed=cfg.training.seed,
            clip_grad_norm=bool(cfg.training.use_clip_grad_norm),
            device_ids=(list(cfg.hardware.device_ids)
                        if cfg.hardware.get("device_ids") is not None else None),
        )
    raise BackendUnavailable(f"backend={plan.backend} is not available in this version of ttexp.")
