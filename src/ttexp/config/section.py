"""The mechanics of a config section: settable while the config is composed and resolved,
read-only once frozen, copied with changes (never mutated) while a task resolves it."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any


ENV_ATTR = "_env"
"""A section's ``{relative dotted key: (interpolation text, value)}`` for values that came from
``${oc.env:...}`` (set by ttexp.config.convert.to_run_config; never written resolved)."""


class Section:
    """Base of every config section: settable while Hydra composes and ttexp resolves the config,
    read-only once :func:`freeze` has run (after validation, before ``resolved.yaml`` is written)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, ENV_ATTR, {})

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_frozen"):
            raise AttributeError(
                f"The run config is frozen after validation: {type(self).__name__}.{name} cannot "
                "change. Resolve settings before ttexp.config.validate.validate_config.")
        object.__setattr__(self, name, value)


def freeze(section: Any) -> Any:
    """Make ``section`` and every section inside it read-only (lists too become tuples); returns it."""
    if isinstance(section, Section):
        for f in fields(section):  # type: ignore[arg-type]
            value = getattr(section, f.name)
            if isinstance(value, list):
                object.__setattr__(section, f.name, tuple(value))
            freeze(value)
        object.__setattr__(section, "_frozen", True)
    return section


def evolve(section: Any, **changes: Any) -> Any:
    """A copy of an unfrozen or frozen ``section`` with ``changes`` applied (the original is kept):
    how a task resolves its config before validation without mutating what it was given."""
    copy = replace(section, **changes)
    object.__setattr__(copy, "_frozen", False)
    object.__setattr__(copy, ENV_ATTR, dict(getattr(section, ENV_ATTR, {})))
    return copy
