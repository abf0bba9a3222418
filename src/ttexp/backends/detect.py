"""Is Tenstorrent's ttml usable here? (Never confuse it with the unrelated PyPI package 'ttml'.)"""

from __future__ import annotations

import importlib


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
