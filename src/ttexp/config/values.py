"""Rules on single values that hostile or mistyped input breaks: non-finite floats, seeds out of
range, paths that would leave the run directory, and run names that are not file names.

    python -m ttexp training.learning_rate=nan        # refused: must be a finite number
    python -m ttexp training.seed=-1                  # refused: NumPy seeds are 0 .. 2**32 - 1
    python -m ttexp task=eval eval.results_file=../../x.txt   # refused: leaves the run directory
    python -m ttexp name=../../x                      # the run directory ends in _x

:func:`value_rules` is called by :func:`ttexp.config.validate.validate_config`; :func:`fs_name` is
the OmegaConf resolver ``ttexp_fs_name`` that ``hydra.run.dir`` (conf/config.yaml) passes ``name``
through, so the original name stays in ``resolved.yaml`` and ``result.json``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import fields, is_dataclass
from typing import Any, Iterator, List, Optional, Union

SEED_MAX = 2**32 - 1
"""The largest seed NumPy's legacy ``np.random.seed`` accepts (it takes 0 .. 2**32 - 1; torch takes
more, so NumPy's range is the one both accept)."""

NAME_MAX = 100
"""Characters of a run name kept in its directory name (file systems allow 255 bytes)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._,=+-]+")


def fs_name(name: Any) -> str:
    """``name`` as one safe path component: every run of characters other than letters, digits and
    ``. _ , = + -`` becomes ``-`` (so ``/`` cannot climb out of ``outputs/``), leading dots and
    dashes are dropped (no hidden or option-like names, no ``..``), at most :data:`NAME_MAX`
    characters; an empty result is ``run``."""
    safe = _UNSAFE.sub("-", str(name)).lstrip(".-")[:NAME_MAX].rstrip(".")
    return safe or "run"


def _floats(section: Any, prefix: str) -> Iterator[tuple[str, float]]:
    """Every float value in a config section, by dotted key (nested sections included)."""
    for f in fields(section):
        value = getattr(section, f.name)
        if is_dataclass(value):
            yield from _floats(value, f"{prefix}{f.name}.")
        elif isinstance(value, float):
            yield f"{prefix}{f.name}", value


def relative_inside(value: str, key: str, where: str) -> List[str]:
    """A problem (as a one-item list) when ``value`` is not a relative path that stays inside
    ``where``: absolute, starting with ``~`` or climbing out with ``..``."""
    norm = os.path.normpath(value) if value else ""
    if not value or os.path.isabs(value) or value.startswith("~") or norm == ".." or \
            norm.startswith(".." + os.sep) or norm == ".":
        return [f"{key}={value} must be a file name inside {where} (relative, without '..'), "
                f"e.g. {key}=eval_results.txt."]
    return []


def value_rules(cfg: Any) -> List[str]:
    """Problems with single values of ``cfg`` (a RunConfig), each naming its key and the fix.

    Every float must be finite (a NaN learning rate trains to "diverged"; a NaN max norm clips
    nothing); seeds must be in 0 .. :data:`SEED_MAX`; ``eval.results_file`` must stay in the run
    directory; ``sweep.journal`` must be a Markdown file (it is overwritten on every run).
    """
    errs = [f"{key}={value} must be a finite number." for key, value in _floats(cfg, "")
            if not math.isfinite(value)]
    for key, seed in (("training.seed", cfg.training.seed), ("generation.seed", cfg.generation.seed)):
        if not 0 <= seed <= SEED_MAX:
            errs.append(f"{key}={seed} must be in 0 .. {SEED_MAX} (the seeds NumPy and torch both "
                        "accept).")
    errs += relative_inside(cfg.eval.results_file, "eval.results_file", "the run directory")
    journal = cfg.sweep.journal
    if journal is not None and not str(journal).endswith(".md"):
        errs.append(f"sweep.journal={journal} must be a Markdown file (*.md): it is rewritten after "
                    "every run; null turns it off.")
    return errs


def compile_setting(value: Union[bool, str]) -> Optional[bool]:
    """``training.compile`` as True, False, or None for ``auto``.

    Hydra reads ``training.compile=true`` as a bool; ``auto`` (and a quoted ``'true'``) arrive as
    strings.

    Raises:
        ValueError: any other value (the message names the key and the three choices).
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("auto", "true", "false"):
        return None if text == "auto" else text == "true"
    raise ValueError(f"training.compile={value} is not a choice; use training.compile=auto, true "
                     "or false")
