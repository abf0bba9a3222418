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


def earlier_run_message(directory: str) -> str | None:
    """Why starting a fresh run in ``directory`` would clobber an earlier one (None if it would not):
    its checkpoints would be mixed with the new run's, and its record overwritten."""
    from ttexp.train.checkpoint import list_checkpoints

    steps = [s for s, _ in list_checkpoints(Path(directory) / "checkpoints")]
    if not steps:
        return None
    return (f"{directory} already holds a run with checkpoints (newest: step_{steps[-1]}). Continue "
            "it with resume=auto, or start a new run in another directory (hydra.run.dir=DIR).")


class OutputDirCheck(Callback):
    """Registered in conf/config.yaml under ``hydra.callbacks``."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        if not config.get("resume"):
            message = earlier_run_message(config.hydra.run.dir)
            if message:  # before Hydra rewrites .hydra/ of that run
                print(f"ERROR: {message}", file=sys.stderr)
                raise SystemExit(2)
        check_writable(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        check_writable(config.hydra.sweep.dir, "hydra.sweep.dir")
