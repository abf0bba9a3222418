"""Read-only preflight: can the configured run start on this machine?

    python -m ttexp.doctor                                  # the default config (nano, n150)
    python -m ttexp.doctor hardware=n300 backend=ttml       # any Hydra override works
    python -m ttexp.doctor experiment=nano_trickster data.path=~/data/tinyshakespeare.txt
    python -m ttexp.doctor --selftest [hardware=n300]        # run on the device: see tools/selftest.py

It reports Python, torch and CUDA; whether ttml imports and which API generation it is;
TT_METAL_HOME / TT_METAL_RUNTIME_ROOT; a stray PyPI ``ttml`` or ``ttnn``; visible Tenstorrent
devices against the configured mesh; TT_MESH_GRAPH_DESC_PATH for multi-chip meshes; the W&B login
state (without importing wandb); whether the configured data and weights exist; and the memory
plan a run prints (torch against the torch device, ttml against one chip). It changes
nothing and opens no device. Exit status: 0 when nothing blocks the configured run, 1 otherwise.
``--selftest`` instead runs the conformance steps on the device against torch on the host and
prints a table for a bug report (:mod:`ttexp.tools.selftest`; exit 69 when no device is present).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ttexp.backends.detect import ttml_status
from ttexp.config.compose import compose_run_config
from ttexp.config.schema import RunConfig
from ttexp.data.corpus import search_paths

TT_DEVICE_DIR = Path("/dev/tenstorrent")
"""Where the Tenstorrent kernel driver exposes one node per device."""

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"


@dataclass
class Check:
    """One line of the report: ``status`` is ok, warn, FAIL or info."""

    status: str
    name: str
    detail: str


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_python_torch() -> list[Check]:
    """Python (3.10 or later) and torch (importable; its version and CUDA devices)."""
    out = [Check(OK if sys.version_info >= (3, 10) else FAIL, "Python",
                 f"{platform.python_version()} ({sys.executable})")]
    try:
        import torch
    except ImportError as exc:
        return out + [Check(FAIL, "torch", f"not importable ({exc}); install torch first (README)")]
    cuda = (f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s)"
            if torch.cuda.is_available() else "no CUDA device")
    return out + [Check(OK, "torch", f"{torch.__version__}, {cuda}")]


def check_ttml(wants_ttml: bool) -> tuple[list[Check], bool]:
    """ttml import, API generation, stray PyPI packages. Returns the checks and whether ttml is usable."""
    ok, why = ttml_status()
    bad = FAIL if wants_ttml else INFO
    checks = []
    if ok:
        from ttexp.backends.ttml.api import detect_api

        try:
            api = detect_api(importlib.import_module("ttml"))
            checks.append(Check(OK, "ttml", f"imports; {api.describe()}"))
        except Exception as exc:
            ok = False
            checks.append(Check(bad, "ttml", f"imports, but {exc}"))
    else:
        checks.append(Check(bad, "ttml", why + ("" if wants_ttml else " (torch will be used)")))
    pypi_ttml = _dist_version("ttml")
    if pypi_ttml and not ok and "not Tenstorrent's" in why:
        checks.append(Check(bad, "stray ttml", f"the PyPI package 'ttml' {pypi_ttml} is installed and is "
                            "unrelated to tt-train; pip uninstall ttml, then build tt-train"))
    spec = importlib.util.find_spec("ttnn")
    ttnn_dist = _dist_version("ttnn")
    home = os.environ.get("TT_METAL_HOME")
    if spec and ttnn_dist and home and spec.origin and not str(spec.origin).startswith(str(Path(home).resolve())):
        checks.append(Check(WARN if not wants_ttml else FAIL, "stray ttnn",
                            f"a pip-installed ttnn {ttnn_dist} at {spec.origin} shadows the one built in "
                            f"TT_METAL_HOME={home}; pip uninstall ttnn"))
    return checks, ok


def check_tt_env(wants_ttml: bool) -> list[Check]:
    """TT_METAL_HOME / TT_METAL_RUNTIME_ROOT: set and a directory (FAIL when ttml needs them)."""
    checks = []
    found = False
    for var in ("TT_METAL_HOME", "TT_METAL_RUNTIME_ROOT"):
        val = os.environ.get(var)
        if val and Path(val).is_dir():
            found = True
            checks.append(Check(OK, var, val))
        elif val:
            checks.append(Check(FAIL if wants_ttml else WARN, var, f"{val} is not a directory"))
        else:
            checks.append(Check(INFO, var, "not set"))
    if wants_ttml and not found:
        checks.append(Check(FAIL, "tt-metal", "neither TT_METAL_HOME nor TT_METAL_RUNTIME_ROOT is set; "
                            "ttml needs them to find its kernels (export TT_METAL_RUNTIME_ROOT=<tt-metal>)"))
    return checks


def check_devices(mesh_shape: list[int], hardware: str, wants_ttml: bool) -> list[Check]:
    """Tenstorrent devices under /dev/tenstorrent against the mesh ``[rows, cols]`` the run opens."""
    need = int(mesh_shape[0]) * int(mesh_shape[1])
    visible = sorted(p.name for p in TT_DEVICE_DIR.iterdir()) if TT_DEVICE_DIR.is_dir() else []
    bad = FAIL if wants_ttml else INFO
    checks = []
    if not wants_ttml:  # torch runs any hardware= preset; the preset only splits the batch
        return [Check(INFO, "devices", f"{len(visible)} Tenstorrent device(s) visible; the torch backend "
                      f"needs none (hardware={hardware}, mesh {list(mesh_shape)})")]
    if len(visible) >= need:
        checks.append(Check(OK, "devices", f"{len(visible)} Tenstorrent device(s) visible; hardware={hardware} "
                            f"needs {need} (mesh {list(mesh_shape)})"))
    else:
        checks.append(Check(bad, "devices", f"{len(visible)} Tenstorrent device(s) visible in {TT_DEVICE_DIR}, "
                            f"but hardware={hardware} needs {need} (mesh {list(mesh_shape)}); "
                            + ("pick a smaller hardware= preset" if wants_ttml else
                               "the torch backend runs instead (hardware= sets only how the "
                               "batch is split)")))
    if need > 1:
        mgd = os.environ.get("TT_MESH_GRAPH_DESC_PATH")
        if mgd and Path(mgd).is_file():
            checks.append(check_mgd(Path(mgd), list(mesh_shape), bad))
        elif mgd:
            checks.append(Check(bad, "TT_MESH_GRAPH_DESC_PATH", f"{mgd} does not exist"))
        else:
            checks.append(Check(WARN if wants_ttml else INFO, "TT_MESH_GRAPH_DESC_PATH",
                                f"not set; a {need}-chip mesh may not open without the mesh graph "
                                "descriptor for this system (tt-train/configs/mgd/*.textproto)"))
    return checks


def mgd_dims(text: str) -> list[int] | None:
    """The ``dims`` of the ``device_topology`` block of a mesh graph descriptor (textproto), or
    None when absent. ttml compares them with the mesh shape before it opens a multi-chip mesh
    (``tt-train/sources/ttml/ttml/mesh.py`` @ e92a955c34bb4c0690b87315d75a5e9602280d9b)."""
    topo = re.search(r"device_topology\s*\{([^}]*)\}", text)
    dims = re.search(r"\bdims\s*:\s*\[([^\]]*)\]", topo.group(1)) if topo else None
    if not dims:
        return None
    try:
        return [int(d) for d in dims.group(1).replace(",", " ").split()]
    except ValueError:
        return None


def check_mgd(path: Path, mesh_shape: list[int], bad: str) -> Check:
    """TT_MESH_GRAPH_DESC_PATH against the mesh: ttml's ``open_device_mesh`` raises when the
    descriptor's dims differ from the mesh shape (one mesh only; multi-host files are not checked)."""
    text = path.read_text(errors="replace")
    if text.count("mesh_descriptors {") > 1:
        return Check(INFO, "TT_MESH_GRAPH_DESC_PATH", f"{path}: multi-host descriptor, dims not checked")
    dims = mgd_dims(text)
    if dims is None:
        return Check(WARN, "TT_MESH_GRAPH_DESC_PATH", f"{path}: no device_topology dims found; ttml "
                     "will skip its check (is this a mesh graph descriptor textproto?)")
    if dims != [int(n) for n in mesh_shape]:
        return Check(bad, "TT_MESH_GRAPH_DESC_PATH", f"{path} describes a {dims} mesh but the run opens "
                     f"{list(mesh_shape)}; point it at this system's descriptor "
                     "(tt-train/configs/mgd/*.textproto) or pick the matching hardware= preset")
    return Check(OK, "TT_MESH_GRAPH_DESC_PATH", f"{path} (dims {dims})")


def check_wandb(logger_name: str) -> list[Check]:
    """Login state from the environment and ~/.netrc only: wandb is never imported here."""
    installed = importlib.util.find_spec("wandb") is not None
    mode = os.environ.get("WANDB_MODE", "")
    netrc = Path(os.path.expanduser("~")) / ".netrc"
    if os.environ.get("WANDB_API_KEY"):
        state = "logged in (WANDB_API_KEY)"
    elif netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        state = "logged in (~/.netrc)"
    else:
        state = None
    wanted = logger_name == "wandb"
    if not installed:
        return [Check(FAIL if wanted else INFO, "W&B", "wandb is not installed (pip install -e '.[wandb]')")]
    if state:
        return [Check(OK, "W&B", state)]
    if mode in ("offline", "disabled"):
        return [Check(OK, "W&B", f"not logged in; WANDB_MODE={mode} needs no login")]
    return [Check(WARN if wanted else INFO, "W&B", "installed, not logged in (wandb login, or WANDB_MODE=offline)")]


def check_files(cfg: RunConfig) -> list[Check]:
    """The data the run will read (a prompt/response file, the shipped starter set included, is
    also validated; a corpus is looked for in ``data.path``, then
    :func:`ttexp.data.corpus.search_paths`, else downloaded) and the weights of ``init_from`` /
    ``model.pretrained_path``."""
    d = cfg.data
    checks = check_pairs(cfg) if d.format.value == "jsonl" else check_corpus(d)
    for key, value in (("init_from", cfg.init_from), ("model.pretrained_path", cfg.model.pretrained_path)):
        if not value:
            continue
        p = Path(str(value)).expanduser()
        if p.is_dir():
            has = any(p.glob("*.safetensors"))
            checks.append(Check(OK if has else FAIL, key, f"{p}" + ("" if has else " holds no *.safetensors")))
        elif str(value).startswith((".", "/", "~")) or p.exists():
            checks.append(Check(FAIL, key, f"{p} does not exist"))
        else:
            checks.append(Check(WARN, key, f"'{value}' is not a local directory; it is fetched from the "
                                "hub (needs network and the hub's cache)"))
    return checks


def check_memory(cfg: RunConfig, wants_ttml: bool) -> list[Check]:
    """The run's memory plan (:mod:`ttexp.train.memory`), the same block a run prints: the ttml
    backend against one chip of the preset, torch against the torch device it would use."""
    from ttexp.train.plan import make_plan

    try:
        plan = make_plan(cfg, backend="ttml" if wants_ttml else "torch").memory
    except (ValueError, ZeroDivisionError) as exc:
        return [Check(FAIL, "memory", f"cannot plan: {exc}")]
    if plan is None:
        return []
    lines = plan.lines()
    detail = "\n".join([lines[0]] + [" " * 9 + line for line in lines[1:]])
    return [Check(OK if plan.fits else FAIL, "memory", detail)]


def check_corpus(d: Any) -> list[Check]:
    """A text corpus: ``data.path``, else the search path, else a download."""
    if d.path:
        p = Path(str(d.path)).expanduser()
        return [Check(OK if p.is_file() else FAIL, "data", f"{p}" + ("" if p.is_file() else
                      " does not exist; fix data.path"))]
    places = search_paths(d.filename)
    hit = next((p for p in places if p.is_file()), None)
    if hit:
        return [Check(OK, "data", str(hit))]
    if d.url:
        return [Check(WARN, "data", f"{d.filename} not in {', '.join(map(str, places))}; it will be "
                      "downloaded (needs network), or set data.path / TTEXP_DATA_DIR")]
    return [Check(FAIL, "data", f"{d.filename} not found; set data.path=FILE")]


def check_pairs(cfg: RunConfig) -> list[Check]:
    """A prompt/response file (and ``data.val_path``), found as the run finds it (the shipped
    starter set when ``data.path`` is unset) and run through the validator with the byte tokenizer
    (or the local ``model.pretrained_path``'s) and ``model.max_seq_len``."""
    from ttexp.data.pair_check import validate_file
    from ttexp.data.pairs import resolve_pairs_file
    from ttexp.errors import TtexpError
    from ttexp.models.pretrained import load_tokenizer

    d, checks = cfg.data, []
    try:
        files = [("data", resolve_pairs_file(d))]
    except TtexpError as exc:
        return [Check(FAIL, "data", str(exc))]
    if d.val_path:
        files.append(("data.val_path", Path(str(d.val_path)).expanduser()))
    local = cfg.model.pretrained_path and Path(str(cfg.model.pretrained_path)).expanduser().is_dir()
    try:
        tokenizer = load_tokenizer(Path(str(cfg.model.pretrained_path)).expanduser() if local else None)
    except TtexpError:
        tokenizer = load_tokenizer(None)
    for key, path in files:
        if not path.is_file():
            checks.append(Check(FAIL, key, f"{path} does not exist; fix {key}"))
            continue
        report = validate_file(path, tokenizer, d.prompt_template, cfg.model.max_seq_len)
        status = FAIL if report.errors else WARN if report.warnings else OK
        detail = f"{path}: {len(report.pairs)} examples, {len(report.errors)} errors, {len(report.warnings)} warnings"
        checks.append(Check(status, key, detail + (f" (first: {report.errors[0]}; python -m ttexp."
                                                   f"validate_data {path})" if report.errors else "")))
    return checks


def run_checks(cfg: RunConfig) -> list[Check]:
    """Every check for the composed ``cfg``, in report order."""
    backend = cfg.backend.value
    checks = check_python_torch()
    ttml_checks, ttml_ok = check_ttml(wants_ttml=backend == "ttml")
    wants_ttml = backend == "ttml" or (backend == "auto" and ttml_ok)
    checks += ttml_checks + check_tt_env(wants_ttml)
    checks += check_devices(list(cfg.hardware.mesh_shape), cfg.hardware.name, wants_ttml)
    checks += check_wandb(str(cfg.logger.name)) + check_files(cfg)
    return checks + check_memory(cfg, wants_ttml)


def main(argv: list[str] | None = None) -> int:
    """Print the report for the config composed from ``argv`` (Hydra overrides); return 0 or 1."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    if "--selftest" in argv:
        from ttexp.tools.selftest import main as selftest

        return selftest([a for a in argv if a != "--selftest"])
    try:
        cfg = compose_run_config(argv)
    except Exception as exc:  # Hydra's errors (unknown key, bad value) name the override
        print(f"[FAIL] config: {exc}")
        return 1
    if cfg.task.name.value == "eval":  # the data and questions the model's own run recorded
        from ttexp.errors import TtexpError
        from ttexp.tasks import eval as eval_task

        try:
            cfg = eval_task.resolve(cfg, argv)
        except TtexpError as exc:
            print(f"[FAIL] eval.checkpoint: {exc}")
            return 1
    checks = run_checks(cfg)
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"[{c.status:>4}] {c.name:<{width}}  {c.detail}")
    failed = [c for c in checks if c.status == FAIL]
    backend = cfg.backend.value
    print(f"\n{len(failed)} problem(s) block backend={backend} hardware={cfg.hardware.name} model={cfg.model.name}."
          if failed else f"\nNothing blocks backend={backend} hardware={cfg.hardware.name} model={cfg.model.name}.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
