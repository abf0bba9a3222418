"""The composed config, converted: to the schema's dataclasses once, at the start of a run, and
back to YAML or plain dicts for the record (``resolved.yaml``, checkpoints, W&B).

A value that came from the environment (``${oc.env:NAME}``, e.g. a token) is used resolved but
written back as its interpolation, never as the value: :func:`to_run_config` remembers which keys
they were (on each section, as ``_env``), and :func:`config_yaml` / :func:`config_dict` put the
interpolation back wherever the value is still the one the environment gave. A worker rank that
reads ``resolved.yaml`` resolves it again from the environment it inherited. Files that another run
wrote are read with :func:`load_yaml_literal`, which resolves nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from ttexp.config.section import ENV_ATTR
from ttexp.config.schema import RunConfig

_ENV_MARK = "oc.env"


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
    env = _env_interpolations(OmegaConf.to_container(cfg, resolve=False))
    run_cfg = OmegaConf.to_object(cfg)
    for key, raw in env.items():
        section, parts = run_cfg, key.split(".")
        value = _get(run_cfg, parts)
        for i in range(len(parts)):  # each section on the way knows its own relative key
            getattr(section, ENV_ATTR).update({".".join(parts[i:]): (raw, value)})
            section = getattr(section, parts[i], None)
            if not hasattr(section, ENV_ATTR):
                break
    return run_cfg  # type: ignore[return-value]


def _env_interpolations(container: Any, prefix: str = "") -> dict[str, str]:
    """Dotted key -> raw text of every value that interpolates ``oc.env`` (Hydra's own section
    aside)."""
    out: dict[str, str] = {}
    if isinstance(container, dict):
        for k, v in container.items():
            if not (prefix == "" and k == "hydra"):
                out.update(_env_interpolations(v, f"{prefix}{k}."))
    elif isinstance(container, str) and "${" in container and _ENV_MARK in container:
        out[prefix[:-1]] = container
    return out


def _get(obj: Any, parts: list[str]) -> Any:
    for p in parts:
        obj = obj.get(p) if isinstance(obj, dict) else getattr(obj, p, None)
    return obj


def _masked(cfg: Any, container: dict) -> dict:
    """``container`` (of ``cfg``) with each environment-given value put back as its interpolation."""
    for key, (raw, value) in getattr(cfg, ENV_ATTR, {}).items():
        *path, last = key.split(".")
        parent = _get(container, path) if path else container
        if isinstance(parent, dict) and last in parent and parent[last] == _plain(value):
            parent[last] = raw
    return container


def _plain(value: Any) -> Any:
    return value.value if hasattr(value, "value") and not isinstance(value, (str, int, float)) else value


def config_yaml(cfg: RunConfig) -> str:
    """``cfg`` as YAML (choices as their values): what ``resolved.yaml`` and checkpoints hold.
    Values from ``${oc.env:...}`` are written as that interpolation, never resolved."""
    node = OmegaConf.structured(cfg)
    if not getattr(cfg, ENV_ATTR, None):
        return OmegaConf.to_yaml(node)
    container = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    return OmegaConf.to_yaml(OmegaConf.create(_masked(cfg, container)))  # type: ignore[arg-type]


def config_dict(cfg: Any) -> dict:
    """``cfg`` (a :class:`RunConfig`, a section of one, or a ``DictConfig`` loaded from YAML) as
    plain dicts and lists, choices as their string values: for comparing configs key by key, and
    for W&B. Values from ``${oc.env:...}`` are given as that interpolation's text."""
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg)
    container = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    return _masked(cfg, container)  # type: ignore[arg-type]


def load_yaml_literal(path: Path) -> DictConfig:
    """A YAML file another run wrote (a checkpoint's config.yaml, a run's resolved.yaml) with every
    ``${...}`` kept as text: nothing in a file on disk makes ttexp read the environment or call a
    resolver. Raises OSError or ``yaml.YAMLError`` for a missing or malformed file."""
    def literal(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: literal(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [literal(v) for v in obj]
        return obj.replace("${", "\\${") if isinstance(obj, str) else obj

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return OmegaConf.create(literal(data if isinstance(data, dict) else {}))
