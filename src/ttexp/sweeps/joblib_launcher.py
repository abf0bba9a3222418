"""``hydra/launcher=joblib``: a joblib sweep that survives a killed worker process.

    python -m ttexp -m hydra/launcher=joblib hydra.launcher.n_jobs=2 training.learning_rate=1e-4,3e-4

hydra-joblib-launcher runs each job in a loky worker process, and ttexp trains each job in a child
of that worker (:func:`ttexp.train.launch.supervise`): a killed training process ends its job
``lost`` and the worker goes on. A killed *worker* (SIGKILL, the out-of-memory killer) breaks the
whole pool instead: loky raises ``TerminatedWorkerError``, kills every other worker with its
process tree, and the plugin's launcher ends the sweep. ttexp's ``RecoveringJoblibLauncher``
(``hydra_plugins/ttexp_joblib_launcher``; :mod:`ttexp.config.launchers` makes it
``hydra/launcher=joblib``, with the plugin's options) runs :func:`launch`, which goes on instead:

1. It keeps what every job that ended returned.
2. It tells the killed worker's job: that job's training process saw its supervisor die and wrote
   ``lost`` into its result.json as it stopped (:func:`ttexp.record.liveness.record_orphaned`);
   loky kills the other workers' trees children first, so their training processes never see
   that. The job stays ``lost`` (last step and checkpoint in its record) and is not re-run: what
   killed its worker, the out-of-memory killer say, would likely kill it again.
3. It re-dispatches every other unfinished job in a fresh pool with ``sweep.resume=true``: each
   continues from its last checkpoint (an exact resume) or starts, and a job that completed is
   skipped.
4. At most ``sweep.recoveries`` times; then the error stands and the sweep ends as an aborted one
   (:class:`ttexp.callbacks.ExperimentsCallback`: a truthful experiments.md and the
   ``sweep.resume=true`` command).

A worker killed before its job's training process had started leaves no such record; then no
job can be blamed and every unfinished job is re-dispatched.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Sequence

from filelock import FileLock, Timeout
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra_plugins.hydra_joblib_launcher import _core  # the plugin's job body and option parsing
from joblib import Parallel, delayed
from joblib.externals.loky.process_executor import BrokenProcessPool
from omegaconf import DictConfig, OmegaConf, open_dict

from ttexp.record.liveness import last_state, rank_lock_path
from ttexp.sweeps.summarize import write_sweep_summary
from ttexp.sweeps.sweep import RESUME, objective, read_result, with_resume

log = logging.getLogger(__name__)

ORPHAN_WAIT_S = 10.0
"""Seconds to wait, after the pool broke, for a job's training process to let go of its rank
lock (it stops within milliseconds of its worker's death, :func:`ttexp.train.launch.die_with_parent`)."""


def _execute(i: int, idx: int, overrides: Sequence[str], *args: Any) -> tuple[int, JobReturn]:
    """The plugin's job body, tagged with the job's position (results arrive as jobs end)."""
    return i, _core.execute_job(idx, overrides, *args)


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]],
           initial_job_idx: int) -> list[JobReturn]:
    """Run the jobs as hydra-joblib-launcher does (``launcher`` is its ``JoblibLauncher``, set
    up by Hydra); return one ``JobReturn`` per job, in job order.

    Raises:
        BrokenProcessPool: (loky's ``TerminatedWorkerError``) the pool broke again after
            ``sweep.recoveries`` recoveries.
    """
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    joblib_cfg = dict(launcher.joblib, backend="loky")  # the plugin's choice: threads break Hydra
    _core.process_joblib_cfg(joblib_cfg)
    log.info("Joblib.Parallel(%s) is launching %d jobs",
             ",".join(f"{k}={v}" for k, v in joblib_cfg.items()), len(job_overrides))
    log.info("Launching jobs, sweep output dir : %s", sweep_dir)
    for i, overrides in enumerate(job_overrides):
        log.info("\t#%d : %s", i, " ".join(filter_overrides(overrides)))
    recoveries = max(0, int(OmegaConf.select(launcher.config, "sweep.recoveries", default=0) or 0))
    returns: dict[int, JobReturn] = {}
    todo = {i: list(o) for i, o in enumerate(job_overrides)}
    for attempt in range(recoveries + 1):
        try:
            _dispatch(launcher, joblib_cfg, todo, initial_job_idx, returns)
            break
        except BrokenProcessPool as exc:
            log.warning("A joblib worker process died (%s); loky stopped the other workers.",
                        _exit_codes(exc))
            todo = _triage(launcher, todo, initial_job_idx, returns, sweep_dir)
            if attempt == recoveries:
                log.error("The sweep's process pool broke %d time(s) (sweep.recoveries=%d); "
                          "stopping the sweep.", attempt + 1, recoveries)
                raise
            log.warning("Recovery %d of %d (sweep.recoveries): re-dispatching job(s) %s in a "
                        "fresh pool with %s.", attempt + 1, recoveries,
                        _numbers(todo, initial_job_idx) or "none", RESUME)
        if not todo:
            break
    return [returns[i] for i in range(len(job_overrides))]


def _dispatch(launcher: Any, joblib_cfg: dict, todo: dict[int, list[str]], initial_job_idx: int,
              returns: dict[int, JobReturn]) -> None:
    """Run ``todo`` in one pool, filling ``returns`` as each job ends (so a broken pool keeps
    what already ended). Raises BrokenProcessPool when a worker dies."""
    state = Singleton.get_state()
    jobs = (delayed(_execute)(i, initial_job_idx + i, overrides, launcher.hydra_context,
                              launcher.config, launcher.task_function, state)
            for i, overrides in todo.items())
    for i, ret in Parallel(**joblib_cfg, return_as="generator_unordered")(jobs):
        returns[i] = ret


def _triage(launcher: Any, todo: dict[int, list[str]], initial_job_idx: int,
            returns: dict[int, JobReturn], sweep_dir: Path) -> dict[int, list[str]]:
    """After a broken pool: record a ``JobReturn`` for each job whose record is final (the
    killed worker's job reads ``lost``), rewrite experiments.md, and return the jobs to
    re-dispatch (with :data:`RESUME`)."""
    again, kept = {}, []
    for i, overrides in todo.items():
        if i in returns:
            continue
        cfg = _job_config(launcher, initial_job_idx + i, overrides)
        job_dir = _job_dir(cfg, sweep_dir, initial_job_idx + i)
        _wait_for_training_process(job_dir)
        result = read_result(job_dir)
        if result is None or result.status == "running":
            again[i] = with_resume(overrides)
            continue
        returns[i] = _ended_return(cfg, overrides, job_dir, objective(result))
        if result.status == "lost":
            log.warning("Job %d was on the killed worker: it stays lost and is not re-run (%s).",
                        initial_job_idx + i, last_state(job_dir))
        else:
            kept.append(f"job {initial_job_idx + i} ({result.status})")
    if kept:
        log.warning("Kept as they ended, not re-run: %s.", ", ".join(kept))
    try:
        write_sweep_summary(sweep_dir, plot=False)  # truthful now: the dead jobs read lost
    except Exception as exc:  # noqa: BLE001 - the jobs' own records stand
        log.warning("Could not rewrite experiments.md (%s: %s).", type(exc).__name__, exc)
    return again


def _job_config(launcher: Any, idx: int, overrides: Sequence[str]) -> DictConfig:
    """The job's config as the plugin composes it (:func:`_core.execute_job`)."""
    cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    with open_dict(cfg):
        cfg.hydra.job.id = f"{cfg.hydra.job.name}_{idx}"
        cfg.hydra.job.num = idx
    return cfg


def _exit_codes(exc: BaseException) -> str:
    """"exit codes {SIGKILL(-9)}" from loky's message, else the exception's first line."""
    found = re.search(r"exit codes of the workers are (\{[^}]*\})", str(exc))
    return f"exit codes {found.group(1)}" if found else (str(exc).strip().splitlines() or [""])[0]


def _numbers(todo: dict[int, list[str]], initial_job_idx: int) -> str:
    return ", ".join(str(initial_job_idx + i) for i in todo)


def _job_dir(cfg: DictConfig, sweep_dir: Path, idx: int) -> Path:
    """``hydra.sweep.dir/hydra.sweep.subdir`` of the job (``sweep_dir/idx`` if it cannot resolve)."""
    try:
        return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
    except Exception:  # noqa: BLE001 - a subdir that needs Hydra's runtime: ttexp's default layout
        return sweep_dir / str(idx)


def _wait_for_training_process(job_dir: Path) -> None:
    """Wait until no training process holds the job's rank lock (it has closed its record)."""
    path = rank_lock_path(job_dir, 0)
    if not path.exists():
        return
    lock = FileLock(str(path), timeout=ORPHAN_WAIT_S)
    try:
        lock.acquire()
        lock.release()
    except Timeout:
        log.warning("%s is still held by a training process after %.0f s.", job_dir, ORPHAN_WAIT_S)


def _ended_return(cfg: DictConfig, overrides: Sequence[str], job_dir: Path,
                  value: float) -> JobReturn:
    """The ``JobReturn`` of a job that ended in a pool that then broke, as ``run_job`` builds it
    (status COMPLETED: a sweep job records its own failure; an Optuna sweeper reads ``value``)."""
    task_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    ret = JobReturn(overrides=list(overrides), cfg=task_cfg,
                    hydra_cfg=OmegaConf.create({"hydra": cfg.hydra}), working_dir=str(job_dir),
                    task_name=str(cfg.hydra.job.name), status=JobStatus.COMPLETED)
    ret.return_value = value
    return ret
