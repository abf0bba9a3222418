"""A sweep as it lies on disk: its job directories, their overrides as parsed values, the swept keys,
and the resume check.

Everything here reads files (``multirun.yaml``, ``<job>/.hydra/overrides.yaml``, ``result.json``)
rather than in-memory Hydra state, because launchers run jobs in other processes (joblib, SLURM)
and a sweep may be summarised long after it ran.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from ttexp.record import RESULT_NAME
from ttexp.schema import choice

log = logging.getLogger("ttexp")

MULTIRUN_NAME = "multirun.yaml"
OVERRIDES_PATH = Path(".hydra") / "overrides.yaml"
# Keys that say how to run or summarise a sweep, not what a job trains: never a swept column,
# never part of a job's identity when resuming.
_BOOKKEEPING_PREFIXES = ("sweep.", "hydra.", "hydra/")


def override_key(override: str) -> str:
    """The key of one override string: ``+training.lr=1`` -> ``training.lr``."""
    return override.split("=", 1)[0].lstrip("+~")


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


def _natural(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def is_sweep_dir(path: Path) -> bool:
    """A Hydra multirun directory: the sweeper wrote ``multirun.yaml`` into it."""
    return (path / MULTIRUN_NAME).is_file()


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a sweep, in job order: every folder below ``sweep_dir`` holding
    ``.hydra/overrides.yaml`` (a job that started) or ``result.json``."""
    found = {p.parent.parent for p in sweep_dir.rglob("overrides.yaml") if p.parent.name == ".hydra"}
    found |= {p.parent for p in sweep_dir.rglob(RESULT_NAME)}
    found.discard(sweep_dir)
    nested = {d for d in found if any(d != o and o in d.parents for o in found)}
    return sorted(found - nested, key=_natural)


def job_overrides(job_dir: Path) -> list[str]:
    """The job's overrides: ``.hydra/overrides.yaml``, else the ``overrides`` in result.json."""
    path = job_dir / OVERRIDES_PATH
    if path.is_file():
        return [str(x) for x in (yaml.safe_load(path.read_text()) or [])]
    result = read_result(job_dir)
    return list(result.get("overrides", [])) if result else []


def read_result(run_dir: Path) -> Optional[dict[str, Any]]:
    """``run_dir/result.json`` as a dict; None when missing or unreadable (a job still starting)."""
    try:
        return json.loads((run_dir / RESULT_NAME).read_text())
    except (OSError, ValueError):
        return None


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


def sweep_command(sweep_dir: Path, resume: bool = False) -> Optional[str]:
    """The command line that launched the sweep (from ``multirun.yaml``); with ``resume``, the one
    that re-runs it into the same directory, skipping completed jobs. None without multirun.yaml."""
    import shlex

    hydra_node = read_multirun(sweep_dir).get("hydra") or {}
    overrides = hydra_node.get("overrides") or {}
    if not overrides:
        return None
    task = [str(x) for x in overrides.get("task") or []]
    extra = [str(x) for x in overrides.get("hydra") or []
             if not str(x).startswith(("hydra.mode=", "hydra.sweep.dir="))]
    args = extra + task
    if resume:
        args = extra + [t for t in task if override_key(t) != "sweep.resume"]
        args += [f"hydra.sweep.dir={sweep_dir}", "sweep.resume=true"]
    return "python -m ttexp -m " + " ".join(shlex.quote(a) for a in args)


def _identity(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides if not _bookkeeping(override_key(o)))


def completed_result(run_dir: Path, overrides: list[str]) -> Optional[dict[str, Any]]:
    """The result of a completed earlier run of this same job in ``run_dir``, or None.

    Used by ``sweep.resume=true``: a job whose directory holds a ``completed`` result.json made by
    the same overrides (``sweep.*`` keys aside) is skipped. A different job in that directory (the
    grid changed) is reported and then replaced.
    """
    result = read_result(run_dir)
    if not result or result.get("status") != "completed":
        return None
    if _identity(list(result.get("overrides", []))) != _identity(overrides):
        log.warning("sweep.resume: %s held a different job (%s); it is run again and replaced.",
                    run_dir, " ".join(result.get("overrides", [])))
        return None
    return result


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
    import json
    from dataclasses import asdict

    ctx = hydra_job_context()
    if ctx is not None:
        d = asdict(ctx)
        d["sweep_dir"] = str(ctx.sweep_dir) if ctx.sweep_dir else None
        (Path(run_dir) / JOB_CONTEXT_NAME).write_text(json.dumps(d, indent=2) + "\n")


def hydra_job_context(run_dir: Optional[Path] = None) -> Optional[JobContext]:
    """The current job's context from Hydra; in a worker rank (no Hydra), the one the controller
    saved into ``run_dir`` (:func:`save_job_context`); None when there is neither."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        saved = Path(run_dir) / JOB_CONTEXT_NAME if run_dir is not None else None
        if saved is None or not saved.is_file():
            return None
        import json

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
        overrides=list(hc.overrides.task),
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


def pin_job_device(cfg: Any, job_num: int) -> Optional[str]:
    """Apply ``sweep.pin_devices`` to sweep job ``job_num`` (mutates ``cfg``); returns what was
    pinned, for the log, or None when pinning is off or the user already chose a device.

    torch: ``device=cuda:K`` with K = job_num mod pin_devices. ttml: ``hardware.device_ids=[K]``.

    A mesh of more than one device is left alone here; :func:`ttexp.validate.validate_config`
    rejects that combination with a message when the job runs.
    """
    from omegaconf import open_dict

    n = cfg.sweep.get("pin_devices")
    mesh = [int(x) for x in cfg.hardware.mesh_shape]
    if not n or n < 1 or mesh[0] * mesh[1] != 1:
        return None
    from ttexp.plan import choose_backend

    k = job_num % int(n)
    backend = choice(cfg.backend)
    if backend == "auto":  # what auto will pick on this machine
        backend, _ = choose_backend("auto", mesh)

    with open_dict(cfg):
        if backend == "ttml":
            if cfg.hardware.get("device_ids") is not None:
                return None
            cfg.hardware.device_ids = [k]
            return f"hardware.device_ids=[{k}]"
        if cfg.device:
            return None
        cfg.device = f"cuda:{k}"
        return f"device=cuda:{k}"
