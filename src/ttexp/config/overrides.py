"""Command-line overrides checked against the schema before Hydra composes anything.

    python -m ttexp training.lr=1e-3      # "training.lr is not a key; did you mean training.learning_rate?"
    python -m ttexp +training.lr=1e-3     # refused: '+' cannot add a key to the typed section training

Hydra rejects an unknown key with "Key 'lr' not in 'TrainingConfig'" and suggests ``+training.lr``,
which it then accepts and ttexp would silently ignore (the typed config has no such field). This
module answers both with the closest known key instead (:func:`override_problem`, called by the
entry point).
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import fields, is_dataclass
from importlib import resources
from typing import Any, Optional

from ttexp.config.schema import RunConfig


def schema_keys(cls: Any = RunConfig, prefix: str = "") -> dict[str, bool]:
    """Every dotted key of the schema -> True when it is a section (a dataclass) with keys below."""
    hints = typing.get_type_hints(cls)
    out: dict[str, bool] = {}
    for f in fields(cls):
        kind = hints[f.name]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        kind = args[0] if typing.get_origin(kind) is typing.Union and len(args) == 1 else kind
        key = f"{prefix}{f.name}"
        out[key] = is_dataclass(kind)
        if is_dataclass(kind):
            out.update(schema_keys(kind, f"{key}."))
    return out


def config_groups() -> set[str]:
    """The config groups (folders of ttexp's conf/, e.g. model, debug, experiment) and ``hydra``."""
    conf = resources.files("ttexp.conf")
    return {p.name for p in conf.iterdir() if p.is_dir() and not p.name.startswith("_")} | {"hydra"}


def closest_key(key: str, known: dict[str, bool]) -> Optional[str]:
    """The known leaf key closest to ``key``: in the same section, one whose words' initials are
    the last part (``lr`` -> ``learning_rate``), else the most similar name there, else the most
    similar dotted key anywhere (difflib's ratio, at least 0.6)."""
    section, _, last = key.rpartition(".")
    leaves = [k for k, is_section in known.items() if not is_section]
    siblings = {k.rpartition(".")[2]: k for k in leaves if k.rpartition(".")[0] == section}
    for name, full in siblings.items():
        if len(last) > 1 and "".join(w[:1] for w in name.split("_")) == last.lower():
            return full
    close = difflib.get_close_matches(last, list(siblings), n=1, cutoff=0.6)
    if close:
        return siblings[close[0]]
    close = difflib.get_close_matches(key, leaves, n=1, cutoff=0.6)
    return close[0] if close else None


def _suggest(key: str, known: dict[str, bool]) -> str:
    close = closest_key(key, known)
    if close:
        return f"did you mean {close}?"
    section = key.rsplit(".", 1)[0]
    keys = sorted(k.rsplit(".", 1)[1] for k in known if k.startswith(section + ".") and
                  k.count(".") == section.count(".") + 1)
    return f"{section} has: {', '.join(keys)}." if keys else "see `python -m ttexp --cfg job`."


def _problem(key: str, kind: str, known: dict[str, bool], groups: set[str]) -> Optional[str]:
    """The message for one override (``kind`` is Hydra's OverrideType name), or None when fine."""
    top = key.split(".")[0].split("/")[0]
    if top in ("hydra",) or "/" in key or kind == "DEL":
        return None
    if key in known or (top in groups and "." not in key):
        return None
    parts = key.split(".")
    if any(key.startswith(k + ".") and not known[k] for k in known):
        return None  # an element of a list or dict value, e.g. generation.prompts.0
    if kind in ("ADD", "FORCE_ADD"):
        where = f"the typed section {parts[0]}" if parts[0] in known else "ttexp's typed config"
        return f"+{key}: '+' cannot add a key to {where} (ttexp would ignore it); {_suggest(key, known)}"
    return f"{key} is not a configuration key; {_suggest(key, known)}"


def override_problem(argv: list[str]) -> Optional[str]:
    """The first override in ``argv`` (``python -m ttexp`` arguments) that names no key of the
    schema, as a message with the closest known key; None when every override is known (or
    Hydra's own parser rejects the command line, which Hydra then reports itself)."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        args, extra = get_args_parser().parse_known_args(argv)
        # overrides after a flag (`a=1 -m b=2`) are left over by argparse; check them too
        overrides = list(args.overrides) + [a for a in extra if not a.startswith("-")]
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - a malformed command line: Hydra's message says more
        return None
    known, groups = schema_keys(), config_groups()
    for override in parsed:
        problem = _problem(override.key_or_group, override.type.name, known, groups)
        if problem:
            return problem
    return None


def user_set(overrides: "typing.Sequence[str]", key: str) -> bool:
    """True when a command-line override sets ``key`` (``generation.prompts``), a key inside it,
    or the group or section that holds it (``generation=shakespeare``, ``generation.prompts.0``).

    Args:
        overrides: Hydra's task overrides as typed (``key=value``, ``+key=value``, ``~key``).
        key: a dotted key of the schema.
    """
    for override in overrides:
        name = override.split("=", 1)[0].lstrip("+~")
        if name == key or key.startswith(name + ".") or name.startswith(key + "."):
            return True
    return False
