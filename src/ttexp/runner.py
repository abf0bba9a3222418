"""Run one task from a composed config: validate, plan, build, train, record.

Hydra-free: it takes a config object and an output directory, so the Hydra entry point, tests
and worker processes all call the same function. Every run ends with a ``result.json`` whose
``status`` is completed, failed, diverged or interrupted, whatever happened.
"""

from __future__ import annotations

import logging
import random
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ttexp.errors import TtexpError
from ttexp.record import RunRecord

log = logging.getLogger("ttexp")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices). Called before the model is built."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _task_function(task: str) -> Callable[[Any, RunRecord], None]:
    """The function that runs ``task`` (imported lazily: each pulls in torch and transformers).

    Raises:
        TtexpError: the task is not available in this version.
    """
    if task == "scratch":
        from ttexp.tasks.scratch import run_scratch

        return run_scratch
    raise TtexpError(f"task={task} is not available in this version of ttexp; use task=scratch.")


def run(cfg: Any, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run ``cfg`` in ``cfg.output_dir`` and return the final result.json contents.

    Never raises for a failed run: the error goes to the log and into ``result.json``
    (``status: failed`` / ``diverged`` / ``interrupted``), and the caller decides the exit code.
    """
    from ttexp.validate import config_warnings, validate_config

    record = RunRecord(Path(cfg.output_dir), cfg, overrides or [])
    status, error = "failed", None
    try:
        validate_config(cfg)
        for warning in config_warnings(cfg):
            log.warning("%s", warning)
        from ttexp.tracking import attach_trackers

        attach_trackers(cfg, record)  # W&B when logger.wandb.enabled; never raises
        task = getattr(cfg.task.name, "value", cfg.task.name)
        task_fn = _task_function(task)
        task_fn(cfg, record)
        status = "completed"
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted by the user (Ctrl-C)"
        log.warning("Interrupted. The record in %s is kept.", record.dir)
    except TtexpError as exc:
        from ttexp.loop import Diverged

        status = "diverged" if isinstance(exc, Diverged) else "failed"
        error = str(exc)
        log.error("%s", exc)
    except Exception as exc:  # an unexpected bug: keep the traceback in the log
        error = f"{type(exc).__name__}: {exc}"
        log.error("The run failed: %s\n%s", error, traceback.format_exc())
    finally:
        record.close(status, error)
    return record.result
