"""Where a job sits and what it is called: its overrides parsed, its sweep (if any), its display name.

Read from Hydra while it runs, from ``job_context.json`` in a worker rank, and from the files a
sweep leaves (``multirun.yaml``), so the W&B tracker and the summaries name runs the same way.
"""

from __future__ import annotations

import json
import logging
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

log = logging.getLogger("ttexp")

# Keys that say how to run or summarise a sweep, not what a job trains: never a swept column,
# never part of a job's identity when resuming.
_BOOKKEEPING_PREFIXES = ("sweep.", "hydra.", "hydra/")


MULTIRUN_NAME = "multirun.yaml"


def override_key(override: str) -> str:
    """The key of one override string: ``+training.lr=1`` -> ``training.lr``."""
    return override.split("=", 1)[0].lstrip("+~")


def resume_command(run_dir: Path, overrides: list[str]) -> str:
    """The command that continues the run in ``run_dir``: ``python -m ttexp``, the run's own
    overrides (its ``resume`` and ``hydra.run.dir`` replaced), ``resume=auto hydra.run.dir=DIR``,
    each argument shell-quoted (``shlex.quote``), so a directory or value with a space, ``;`` or
    ``$`` pastes as one argument and never as a shell command."""
    kept = [o for o in overrides if override_key(o) not in ("resume", "hydra.run.dir")]
    return shlex.join(["python", "-m", "ttexp", *kept, "resume=auto", f"hydra.run.dir={run_dir}"])


def _bookkeeping(key: str) -> bool:
    return key.startswith(_BOOKKEEPING_PREFIXES)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Map each override's key to its value as Hydra parses it (``1e-4`` -> 0.0001, ``8`` -> 8).

    A sweep override (``a=1,2``) maps to its text; an override Hydra cannot parse maps to the text
    after ``=``, so a summary never fails on an odd override.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out: dict[str, Any] = {}
    for text in overrides:
        try:
            (o,) = parser.parse_overrides([text])
        except Exception:  # noqa: BLE001 - fall back to the raw text
            out[override_key(text)] = text.split("=", 1)[1] if "=" in text else None
            continue
        if o.is_sweep_override():
            out[o.key_or_group] = text.split("=", 1)[1]
        elif o.is_delete():
            out[o.key_or_group] = None
        else:
            out[o.key_or_group] = o.value()
    return out


def read_multirun(sweep_dir: Path) -> dict[str, Any]:
    """``multirun.yaml`` as plain YAML (interpolations stay text); {} when missing."""
    try:
        return yaml.safe_load((sweep_dir / MULTIRUN_NAME).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def swept_keys(sweep_dir: Path, jobs: list[dict[str, Any]]) -> list[str]:
    """The keys a sweep varies, in command-line order.

    The sweep overrides of ``multirun.yaml`` (``lr=1e-4,3e-4``) and the sweeper's ``params`` (Optuna),
    then any other key whose value differs between ``jobs`` (each a :func:`parse_overrides` dict).
    """
    multirun = read_multirun(sweep_dir)
    hydra_node = multirun.get("hydra") or {}
    task = (hydra_node.get("overrides") or {}).get("task") or []
    keys: list[str] = []
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for text in task:
        try:
            (o,) = parser.parse_overrides([str(text)])
        except Exception:  # noqa: BLE001
            continue
        if o.is_sweep_override():
            keys.append(o.key_or_group)
    params = (hydra_node.get("sweeper") or {}).get("params") or {}
    if isinstance(params, dict):
        keys += [str(k) for k in params]
    all_keys = [k for job in jobs for k in job]
    for key in dict.fromkeys(all_keys):
        if len({repr(job.get(key)) for job in jobs}) > 1:
            keys.append(key)
    return [k for k in dict.fromkeys(keys) if not _bookkeeping(k)]


@dataclass
class JobContext:
    """Where the current Hydra job sits: a single run, or job ``num`` of the sweep in ``sweep_dir``."""

    multirun: bool
    sweep_dir: Optional[Path]
    num: Optional[int]
    overrides: list[str]


def is_multirun(hc: Any) -> bool:
    """True in a job of a multirun. ``hydra.mode`` says so on the command line; Hydra's in-process
    sweep runner (tests) leaves it null, and then a job number (set only by sweepers) decides."""
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    if hc.mode is not None:
        return hc.mode == RunMode.MULTIRUN
    return OmegaConf.select(hc, "job.num", default=None) is not None


JOB_CONTEXT_NAME = "job_context.json"
"""Written by the controller of a multi-process run for its ranks, which have no Hydra."""


def save_job_context(run_dir: Path) -> None:
    """Write this Hydra job's context into ``run_dir`` for worker ranks (no-op outside Hydra)."""
    ctx = hydra_job_context()
    if ctx is not None:
        d = asdict(ctx)
        d["sweep_dir"] = str(ctx.sweep_dir) if ctx.sweep_dir else None
        (Path(run_dir) / JOB_CONTEXT_NAME).write_text(json.dumps(d, indent=2) + "\n")


def hydra_job_context(run_dir: Optional[Path] = None) -> Optional[JobContext]:
    """The current job's context from Hydra; in a worker rank (no Hydra), the one the controller
    saved into ``run_dir`` (:func:`save_job_context`); None when there is neither."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        saved = Path(run_dir) / JOB_CONTEXT_NAME if run_dir is not None else None
        if saved is None or not saved.is_file():
            return None
        d = json.loads(saved.read_text())
        return JobContext(multirun=bool(d["multirun"]),
                          sweep_dir=Path(d["sweep_dir"]) if d.get("sweep_dir") else None,
                          num=d.get("num"), overrides=list(d.get("overrides", [])))
    hc = HydraConfig.get()
    multirun = is_multirun(hc)
    return JobContext(
        multirun=multirun,
        sweep_dir=Path(hc.sweep.dir) if multirun else None,
        num=int(hc.job.num) if multirun and hc.job.get("num") is not None else None,
        overrides=list(OmegaConf.to_container(hc.overrides.task, resolve=False)),
    )


def sweep_id(sweep_dir: Path) -> str:
    """A short, readable id for a sweep: its directory's last two parts (``2026-11-21_09-14-13``)."""
    parts = Path(sweep_dir).resolve().parts
    return "_".join(parts[-2:])


def short_key(key: str) -> str:
    """The last part of a dotted key: ``training.learning_rate`` -> ``learning_rate``."""
    return key.rsplit(".", 1)[-1]


def format_value(value: Any) -> str:
    """A parsed override value for tables and names: floats as ``%g`` (0.0001 -> 0.0001, 5e-05)."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "null"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def run_display_name(name: str, overrides: list[str], swept: Optional[list[str]] = None) -> str:
    """A readable run name: the run's name, then the swept overrides (or, outside a sweep, the
    overrides that are neither paths nor Hydra's), keys shortened: ``nano_cpu learning_rate=0.0001``."""
    parsed = parse_overrides(overrides)
    if swept:
        shown = [(k, parsed[k]) for k in swept if k in parsed]
    else:
        shown = [(k, v) for k, v in parsed.items()  # logger.* says where it goes, not what it is
                 if not _bookkeeping(k) and not k.startswith("logger") and "/" not in format_value(v)]
    tail = " ".join(f"{short_key(k)}={format_value(v)}" for k, v in shown)
    return f"{name} {tail}".strip()[:120]
