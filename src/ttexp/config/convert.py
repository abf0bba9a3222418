"""The composed config, converted: to the schema's dataclasses once, at the start of a run, and
back to YAML or plain dicts for the record (``resolved.yaml``, checkpoints, W&B)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from ttexp.config.schema import RunConfig


def to_run_config(cfg: Any) -> RunConfig:
    """The composed config (a ``DictConfig`` from Hydra, or ``resolved.yaml`` loaded) as the
    schema's dataclasses, interpolations resolved and choices as Enums: done once, at the start of
    a run; everything after it is typed.

    Raises:
        omegaconf.errors.OmegaConfBaseException: a value does not fit the schema (a YAML file
            edited by hand), or an interpolation cannot be resolved.
    """
    if isinstance(cfg, RunConfig):
        return cfg
    if not (isinstance(cfg, DictConfig) and OmegaConf.get_type(cfg) is RunConfig):
        cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), cfg)
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def config_yaml(cfg: RunConfig) -> str:
    """``cfg`` as YAML (choices as their values): what ``resolved.yaml`` and checkpoints hold."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def config_dict(cfg: Any) -> dict:
    """``cfg`` (a :class:`RunConfig`, a section of one, or a ``DictConfig`` loaded from YAML) as
    plain dicts and lists, choices as their string values: for comparing configs key by key."""
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg)
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)  # type: ignore[return-value]
