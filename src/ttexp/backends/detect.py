"""Is Tenstorrent's ttml usable here? (Never confuse it with the unrelated PyPI package 'ttml'.)"""

from __future__ import annotations

import importlib
import platform
from pathlib import Path


def ttml_status() -> tuple[bool, str]:
    """Return (usable, reason). Usable means ``import ttml`` works and exposes
    ``ttml.autograd.AutoContext`` (tt-train's API; reference/ttml_api.md)."""
    try:
        ttml = importlib.import_module("ttml")
    except ImportError as exc:
        return False, f"ttml is not installed ({exc})"
    except Exception as exc:  # a broken tt-metal install raises all sorts of errors at import
        return False, f"ttml failed to import ({type(exc).__name__}: {exc})"
    autograd = getattr(ttml, "autograd", None)
    if autograd is None or not hasattr(autograd, "AutoContext"):
        origin = getattr(ttml, "__file__", "?")
        return False, (
            f"the 'ttml' at {origin} is not Tenstorrent's tt-train package (no "
            "ttml.autograd.AutoContext); uninstall it (pip uninstall ttml) and build tt-train"
        )
    return True, "ttml imports"


def ttml_device_status(mesh_shape: list[int]) -> tuple[bool, str]:
    """Return (usable, reason) for ``backend=auto``: ttml imports (:func:`ttml_status`), its API is
    one ttexp knows, and a device opens for ``mesh_shape``. The device is closed again at once.

    Opening costs a few seconds on hardware; it is done only when ttml imports at all.
    """
    ok, why = ttml_status()
    if not ok:
        return ok, why
    try:
        from ttexp.backends.ttml.api import detect_api, plan_mesh
        from ttexp.backends.ttml.mesh import close_mesh, open_mesh

        ttml = importlib.import_module("ttml")
        api = detect_api(ttml)
        mesh = plan_mesh(mesh_shape, enable_ddp=int(mesh_shape[0]) * int(mesh_shape[1]) > 1)
        ctx = ttml.autograd.AutoContext.get_instance()
        open_mesh(ttml, ctx, api, mesh)  # the same API the backend will use
        close_mesh(ttml, ctx, api)
    except Exception as exc:  # no device, a busy device, a wrong mesh: all mean "not here"
        return False, f"ttml imports but no device opened for mesh {list(mesh_shape)} ({type(exc).__name__}: {exc})"
    return True, f"ttml imports ({api.describe()}) and a device opened for mesh {list(mesh_shape)}"


def cpu_info() -> str:
    """The text of Linux's ``/proc/cpuinfo`` (its ``model name`` and ``flags`` lines), or '' where
    there is none (macOS, Windows)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    """This machine's CPU model as ``/proc/cpuinfo`` names it (e.g. 'Intel(R) Xeon(R) Processor'),
    else what :mod:`platform` says: part of every cache key whose figures depend on the CPU (the
    measured matmul peak, compile cost and gain)."""
    for line in cpu_info().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
               "amx_bf16", "amx_tile", "amx_int8")
"""The CPU flags that decide fp32 and bf16 matmul speed, named with every speed figure."""


def cpu_speed_flags() -> list[str]:
    """Which of :data:`SPEED_FLAGS` this CPU advertises (``/proc/cpuinfo``; [] elsewhere), in
    that order."""
    flags = set()
    for line in cpu_info().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return [f for f in SPEED_FLAGS if f in flags]
