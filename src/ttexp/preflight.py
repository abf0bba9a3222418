"""A Hydra callback that checks the output directory before Hydra writes into it.

Hydra creates the run directory and its ``.hydra/`` before ttexp's code runs; an unwritable
location would end in a bare traceback. ``on_run_start`` / ``on_multirun_start`` run earlier,
and a ``SystemExit`` raised there passes through Hydra (reference/hydra_notes.md §1.5).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


def check_writable(directory: str, key: str) -> None:
    """Create ``directory`` if needed and write a probe file in it.

    Raises:
        SystemExit(2): with one line naming the directory, the reason, and the key to change.
    """
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        print(f"ERROR: cannot write the output directory {directory} "
              f"({exc.strerror or type(exc).__name__}). Choose another with {key}=DIR.",
              file=sys.stderr)
        raise SystemExit(2) from None


class OutputDirCheck(Callback):
    """Registered in conf/config.yaml under ``hydra.callbacks``."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        check_writable(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        check_writable(config.hydra.sweep.dir, "hydra.sweep.dir")
