"""Run one job: the flow of DESIGN.md, one step a line.

    config  -> resolve (the task's inputs decide the model shape) -> validate -> freeze -> write
    plan    -> computed once here (and once in each worker rank), handed down
    task    -> builds its inputs and trains or evaluates (ttexp.tasks)
    record  -> result.json closes with the run's status, whatever happened

Hydra-free: the Hydra entry point (:mod:`ttexp.__main__`), tests and worker ranks
(:mod:`ttexp.worker`) call the same functions. Every run ends with a ``result.json`` whose
``status`` is completed, failed, diverged or interrupted.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Callable, Optional

from omegaconf import DictConfig

from ttexp.config.convert import to_run_config
from ttexp.config.section import freeze
from ttexp.config.schema import RunConfig, TaskName
from ttexp.config.validate import config_warnings, validate_config
from ttexp.errors import Interrupted, JobLost, RunDirBusy, TtexpError, error_for_status
from ttexp.record.job import resume_command, save_job_context
from ttexp.record.liveness import RunLease, last_state
from ttexp.record.result import RunResult
from ttexp.record.run_record import NullRecord, RunRecord
from ttexp.record.trackers import attach_trackers
from ttexp.tasks import Task
from ttexp.tasks import eval as eval_task
from ttexp.tasks import finetune, scratch
from ttexp.train.checkpoint import earlier_run_message
from ttexp.train.launch import launch, supervise
from ttexp.train.plan import make_plan
from ttexp.train.ranks import Ranks

log = logging.getLogger("ttexp")

TASKS: dict[TaskName, Task] = {TaskName.scratch: scratch, TaskName.finetune: finetune,
                               TaskName.eval: eval_task}
"""The module that runs each task (each is a :class:`ttexp.tasks.Task`)."""


def run(cfg: DictConfig | RunConfig, overrides: Optional[list[str]] = None,
        isolate: bool = False) -> RunResult:
    """Run ``cfg`` (the composed config, or a :class:`RunConfig`) in ``cfg.output_dir``.

    Never raises for a failed run: the error goes to the log and into ``result.json``
    (``status: failed`` / ``diverged`` / ``interrupted`` / ``lost``), and the caller decides the
    exit code (:func:`ttexp.errors.exit_code`). The run holds the directory's lock and heartbeat
    (:class:`ttexp.record.liveness.RunLease`) throughout; a directory another process holds is
    refused (status ``usage``, nothing touched). With ``plan.processes > 1``, or ``isolate`` (a
    sweep job in a launcher's worker), this process supervises: it starts the ranks (or one child)
    and waits; rank 0 writes the record and this process adopts it, so a killed child ends the
    job ``lost`` or ``failed`` instead of killing the sweep.
    """
    cfg = to_run_config(cfg)
    try:
        lease = RunLease.acquire(Path(cfg.output_dir))
    except RunDirBusy as exc:
        log.error("%s", exc)
        return RunResult(status=exc.status, error=str(exc))
    try:
        clash = None if cfg.resume else earlier_run_message(str(cfg.output_dir))
        if clash:  # refuse before touching the earlier run's files
            log.error("%s", clash)
            return RunResult(status="failed", error=clash)
        record = RunRecord(Path(cfg.output_dir), cfg, overrides or [], fresh=not cfg.resume)
        return _guarded(record, lambda: _run(cfg, record, isolate))
    finally:
        lease.release()


def prepare(cfg: RunConfig, record: RunRecord | NullRecord) -> RunConfig:
    """Resolve, validate, freeze and write the config: after this nothing changes it.

    ``resolved.yaml`` is written once, even when resolution or validation fails (then with the
    config as far as it got), so the record shows what was run.

    Raises:
        ConfigError: cross-field rules are broken (all of them listed).
        TtexpError: the task cannot resolve its inputs (e.g. no pretrained weights).
    """
    try:
        cfg = TASKS[cfg.task.name].resolve(cfg, record.result.overrides)
        record.update(name=cfg.name, model=cfg.model.name)  # eval: named after the model it evaluates
        validate_config(cfg)
        for warning in config_warnings(cfg):
            log.warning("%s", warning)
        return freeze(cfg)
    finally:
        record.write_config(cfg)


def _run(cfg: RunConfig, record: RunRecord, isolate: bool = False) -> None:
    cfg = prepare(cfg, record)
    plan = make_plan(cfg)
    if plan.memory is not None:  # refuse a run that cannot fit before anything loads
        record.update(memory=plan.memory.to_dict())
        plan.memory.check()
    if plan.processes == 1 and not isolate:
        attach_trackers(cfg, record)
        TASKS[cfg.task.name].run(cfg, plan, Ranks.single(), record)
        return
    save_job_context(record.dir)  # rank 0's W&B run names its sweep and job from it
    if plan.processes > 1:
        log.info("Starting %d ranks (torch.distributed) for hardware=%s; rank 0 writes the record.",
                 plan.processes, plan.hardware)
    try:
        failure = launch(record.dir, plan.processes) if plan.processes > 1 else supervise(record.dir)
    except Interrupted as exc:
        record.adopt()
        rank0 = record.result.error if record.result.status == "interrupted" else None
        raise Interrupted(rank0 or f"{exc}; continue with: "
                          f"{resume_command(record.dir, record.result.overrides)}") from None
    record.adopt()
    status, rank0_error = record.result.status, record.result.error or ""
    if status in ("diverged", "interrupted"):  # every rank stopped together, as rank 0 reports
        raise error_for_status(status, rank0_error)
    if failure and plan.processes == 1 and status == "running":  # died without closing its record
        raise JobLost(f"The job's {failure}; {last_state(record.dir)}. Continue it with: "
                      f"{resume_command(record.dir, record.result.overrides)}")
    if failure:
        detail = f" Rank 0 reported: {rank0_error}" if rank0_error else ""
        raise TtexpError(f"The run failed: {failure}.{detail}")
    if status == "failed":
        raise error_for_status(status, rank0_error)


def run_rank(cfg: RunConfig, ranks: Ranks, record: RunRecord | NullRecord) -> RunResult:
    """The body of one rank of a multi-process run (see :mod:`ttexp.worker`): the controller has
    resolved, validated and written the config; rank 0 (the one with a real record) also feeds
    the trackers."""
    def body() -> None:
        frozen = freeze(cfg)
        plan = make_plan(frozen, ranks)
        if isinstance(record, RunRecord):
            attach_trackers(frozen, record)
        TASKS[frozen.task.name].run(frozen, plan, ranks, record)

    return _guarded(record, body)


def _guarded(record: RunRecord | NullRecord, body: Callable[[], None]) -> RunResult:
    """Run ``body`` and close the record with the status its outcome implies (an error carries
    its own status; Ctrl-C is ``interrupted``; anything else is a bug, logged with its traceback)."""
    status, error = "failed", None
    try:
        body()
        status = "completed"
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted by the user (Ctrl-C)"
        log.warning("Interrupted. The record in %s is kept.", record.dir)
    except TtexpError as exc:
        status, error = exc.status, str(exc)
        if not exc.reported:
            (log.warning if status == "interrupted" else log.error)("%s", exc)
    except Exception as exc:  # an unexpected bug: keep the traceback in the log
        error = f"{type(exc).__name__}: {exc}"
        log.error("The run failed: %s\n%s", error, traceback.format_exc())
    finally:
        record.close(status, error)
    return record.result
