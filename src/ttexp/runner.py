"""Run one task from a composed config: validate, plan, build, train, record.

Hydra-free: it takes a config object and an output directory, so the Hydra entry point, tests
and worker processes all call the same function. Every run ends with a ``result.json`` whose
``status`` is completed, failed, diverged or interrupted, whatever happened.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any, Callable


from ttexp.errors import TtexpError
from ttexp.record.run_record import RunRecord
from ttexp.config.schema import choice

log = logging.getLogger("ttexp")


def _task_function(task: str) -> Callable[[Any, RunRecord], None]:
    """The function that runs ``task`` (imported lazily: each pulls in torch and transformers).

    Raises:
        TtexpError: the task is not available in this version.
    """
    if task == "scratch":
        from ttexp.tasks.scratch import run_scratch

        return run_scratch
    if task == "finetune":
        from ttexp.tasks.finetune import run_finetune

        return run_finetune
    if task == "eval":
        from ttexp.tasks.eval import run_eval

        return run_eval
    raise TtexpError(f"task={task} is not available; use task=scratch, finetune or eval.")


def run(cfg: Any, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run ``cfg`` in ``cfg.output_dir`` and return the final result.json contents.

    Never raises for a failed run: the error goes to the log and into ``result.json``
    (``status: failed`` / ``diverged`` / ``interrupted``), and the caller decides the exit code.
    With ``plan.processes > 1`` this process (the controller) starts the ranks and waits for them;
    rank 0 writes the record and the controller adopts its result.
    """
    from ttexp.preflight import earlier_run_message

    clash = None if cfg.resume else earlier_run_message(str(cfg.output_dir))
    if clash:  # refuse before touching the earlier run's files
        log.error("%s", clash)
        return {"status": "failed", "error": clash}
    record = RunRecord(Path(cfg.output_dir), cfg, overrides or [], fresh=not cfg.resume)
    return _guarded(record, lambda: _run_task(cfg, record))


def run_worker(cfg: Any, record: Any) -> dict[str, Any]:
    """The body of one rank of a multi-process run (see :mod:`ttexp.worker`); rank 0 (the one
    with a real record) also feeds the trackers."""
    def body() -> None:
        if isinstance(record, RunRecord):
            _attach_trackers(cfg, record)
        _task_function(_task_name(cfg))(cfg, record)

    return _guarded(record, body)


def _attach_trackers(cfg: Any, record: RunRecord) -> None:
    from ttexp.record.trackers import attach_trackers

    attach_trackers(cfg, record)  # W&B when logger.wandb.enabled; never raises


def _task_name(cfg: Any) -> str:
    return choice(cfg.task.name)


def _run_task(cfg: Any, record: RunRecord) -> None:
    from ttexp.train.plan import make_plan
    from ttexp.config.validate import config_warnings, validate_config

    validate_config(cfg)
    for warning in config_warnings(cfg):
        log.warning("%s", warning)
    task_fn = _task_function(_task_name(cfg))
    plan = make_plan(cfg)
    if plan.processes == 1:
        _attach_trackers(cfg, record)
        task_fn(cfg, record)
        return
    from ttexp.train.ranks import LaunchInterrupted, launch
    from ttexp.record.job import save_job_context

    save_job_context(record.dir)  # rank 0's W&B run names its sweep and job from it

    log.info("Starting %d ranks (torch.distributed) for hardware=%s; rank 0 writes the record.",
             plan.processes, plan.hardware)
    try:
        failure = launch(record.dir, plan.processes)
    except LaunchInterrupted as exc:
        record.adopt()
        message = record.result.get("error") if record.result.get("status") == "interrupted" else None
        raise _RankOutcome("interrupted", message or (
            f"Stopped by {exc}; continue with resume=auto hydra.run.dir={record.dir} "
            "(and the same overrides).")) from None
    record.adopt()
    status, rank0_error = record.result.get("status"), record.result.get("error")
    if status in ("diverged", "interrupted"):  # every rank stopped together, as rank 0 reports
        raise _RankOutcome(status, rank0_error or "")
    if failure:
        detail = f" Rank 0 reported: {rank0_error}" if rank0_error else ""
        raise TtexpError(f"The run failed: {failure}.{detail}")
    if status == "failed":
        raise _RankOutcome(status, rank0_error or "")


class _RankOutcome(TtexpError):
    """A multi-process run ended as rank 0 recorded it (its message was already logged)."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def _guarded(record: Any, body: Callable[[], None]) -> dict[str, Any]:
    """Run ``body`` and close the record with the status its outcome implies."""
    status, error = "failed", None
    try:
        body()
        status = "completed"
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted by the user (Ctrl-C)"
        log.warning("Interrupted. The record in %s is kept.", record.dir)
    except _RankOutcome as exc:
        status, error = exc.status, str(exc)
    except TtexpError as exc:
        from ttexp.train.loop import Diverged, Interrupted

        status = {Diverged: "diverged", Interrupted: "interrupted"}.get(type(exc), "failed")
        error = str(exc)
        (log.warning if status == "interrupted" else log.error)("%s", exc)
    except Exception as exc:  # an unexpected bug: keep the traceback in the log
        error = f"{type(exc).__name__}: {exc}"
        log.error("The run failed: %s\n%s", error, traceback.format_exc())
    finally:
        record.close(status, error)
    return record.result
