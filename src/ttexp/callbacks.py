"""ttexp's Hydra callbacks (registered in ``conf/config.yaml`` under ``hydra.callbacks``).

:class:`OutputDirCheck` checks the output directory before Hydra writes into it: Hydra creates the
run directory and its ``.hydra/`` before ttexp's code runs, so an unwritable location or an
earlier run's directory would otherwise end in a traceback or a clobbered record. A
``SystemExit`` raised in ``on_run_start`` passes through Hydra (reference/hydra_notes.md §1.5).

:class:`ExperimentsCallback` closes a sweep: experiments.md, the journal, and the exit code. It runs in the controller
process after every job of a multirun has returned, and reads the jobs' ``result.json`` files from
disk (with joblib or SLURM the jobs ran in other processes, so there is nothing in memory to read).

Each job's task function records a failure in its own ``result.json`` and returns normally, so
Hydra runs every job and reaches ``on_multirun_end``; this callback then exits with status 1 when
any job did not complete. Single runs refresh the journal in the task function itself
(:mod:`ttexp.__main__`), because a failed single run exits there.
"""

from __future__ import annotations

import atexit
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ttexp.errors import exit_code, redact


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
        raise SystemExit(exit_code("usage")) from None


def continue_job(job_dir: Path, stop_at: Optional[int]) -> None:
    """Resume the sweep job in ``job_dir`` from its newest checkpoint (``resume=auto``) and train
    to step ``stop_at`` (None = ``training.max_steps``): one successive-halving promotion. The job
    keeps its own config (``resolved.yaml``), overrides and record; its log goes to its own
    ``training.log``, as when Hydra ran it."""
    import logging

    from ttexp.runner import run
    from ttexp.sweeps.sweep import job_overrides
    from ttexp.worker import load_resolved_config

    cfg = load_resolved_config(job_dir)
    cfg.resume, cfg.output_dir = "auto", str(job_dir)
    cfg.training.stop_at_step = stop_at
    logger = logging.getLogger("ttexp")
    files = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
    mine = logging.FileHandler(job_dir / "training.log", mode="a")
    mine.setFormatter(files[0].formatter if files else logging.Formatter(
        "%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    for h in files:
        logger.removeHandler(h)
    logger.addHandler(mine)
    try:
        run(cfg, overrides=job_overrides(job_dir))
    finally:
        logger.removeHandler(mine)
        mine.close()
        for h in files:
            logger.addHandler(h)


class OutputDirCheck(Callback):
    """Refuse an unwritable run or sweep directory, and a fresh run into a directory that holds an
    earlier run's checkpoints, before Hydra writes anything there."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # hydra.run.dir interpolates ``name``, which reads ${hydra:runtime.choices...}: the
        # resolver needs HydraConfig, which Hydra itself sets only when the job starts (after
        # this callback). Setting it now, from the same config, resolves the same directory.
        HydraConfig.instance().set_config(config)
        from ttexp.record.liveness import busy_message

        for directory, key in run_directories(config):
            busy = busy_message(Path(directory))
            if busy:  # a live run holds it: refuse before Hydra rewrites its .hydra/ and log
                print(redact(f"ERROR: {busy}"), file=sys.stderr)
                raise SystemExit(exit_code("usage"))
            if not OmegaConf.select(config, "resume", default=None):
                from ttexp.train.checkpoint import (
                    earlier_run_message,  # torch: only when a run starts
                )

                message = earlier_run_message(directory)
                if message:  # before Hydra rewrites .hydra/ of that run
                    print(redact(f"ERROR: {message}"), file=sys.stderr)
                    raise SystemExit(exit_code("usage"))
            check_writable(directory, key)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(str(OmegaConf.select(config, "hydra.sweep.dir")), "hydra.sweep.dir")
        explicit = _explicit_output_dir(config)
        if explicit:
            check_writable(explicit, "output_dir")


def _explicit_output_dir(config: DictConfig) -> str | None:
    """``output_dir`` when the command line set it to a path of its own (not Hydra's directory)."""
    raw = OmegaConf.to_container(config, resolve=False).get("output_dir")
    if raw is None or "${hydra:" in str(raw):
        return None
    try:
        return str(config.output_dir)
    except Exception:  # noqa: BLE001 - an unresolvable value: the run reports it
        return None


def run_directories(config: DictConfig) -> list[tuple[str, str]]:
    """Every directory a single run writes, with the key that sets it: ``hydra.run.dir`` (Hydra's
    .hydra/ and training.log) and ``output_dir`` when set to another path (ttexp's record)."""
    dirs = [(str(config.hydra.run.dir), "hydra.run.dir")]
    explicit = _explicit_output_dir(config)
    if explicit and Path(explicit).resolve() != Path(dirs[0][0]).resolve():
        dirs.append((explicit, "output_dir"))
    return dirs


class ExperimentsCallback(Callback):
    """``on_multirun_start``: make sure the sweep has its ``multirun.yaml``. ``on_multirun_end``:
    with ``sweep.halving``, promote the best jobs rung by rung (:mod:`ttexp.sweeps.halving`); then
    write ``<sweep>/experiments.md`` and its plots, regenerate the journal (``sweep.journal``),
    print where they are, and exit 1 if a job failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Save ``multirun.yaml`` (the sweep's command and config) if no sweeper writes it: the
        basic sweeper does (and overwrites this copy), the Optuna sweeper does not."""
        from omegaconf import OmegaConf

        from ttexp.record.job import MULTIRUN_NAME

        sweep_dir = Path(config.hydra.sweep.dir)
        if not (sweep_dir / MULTIRUN_NAME).exists():
            sweep_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(config, sweep_dir / MULTIRUN_NAME)
        self._ended = False
        atexit.register(self._if_aborted, sweep_dir)

    def _if_aborted(self, sweep_dir: Path) -> None:
        """At exit of a sweep that never reached ``on_multirun_end`` (a launcher crashed, e.g.
        joblib's TerminatedWorkerError once ``sweep.recoveries`` pools broke, or Ctrl-C): rewrite
        experiments.md from the records on disk, so it shows each job as it really ended (lost,
        not running), and print the command that continues the sweep."""
        if self._ended:
            return
        from ttexp.sweeps.summarize import SUMMARY_NAME, write_sweep_summary
        from ttexp.sweeps.sweep import sweep_command

        time.sleep(1.0)  # the other jobs' processes die with their workers; let their pids go
        try:
            write_sweep_summary(sweep_dir)
        except Exception as exc:  # noqa: BLE001 - the message below matters more
            print(f"Could not write experiments.md ({type(exc).__name__}: {exc}).", file=sys.stderr)
        print(f"The sweep stopped before all its jobs ended; {sweep_dir / SUMMARY_NAME} shows each "
              f"job as it ended. Continue it (completed jobs are skipped, the others resume from "
              f"their checkpoints): {sweep_command(sweep_dir, resume=True)}", file=sys.stderr)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._ended = True
        from ttexp.sweeps.summarize import (
            SUMMARY_NAME,
            refresh_journal,
            write_sweep_summary,
        )
        from ttexp.sweeps.sweep import job_dirs, read_result

        sweep_dir = Path(config.hydra.sweep.dir)
        rungs = [int(r) for r in OmegaConf.select(config, "sweep.halving.rungs", default=[]) or []]
        if rungs:
            from ttexp.sweeps.halving import run_halving

            run_halving(sweep_dir, rungs, float(config.sweep.halving.keep), continue_job)
        try:
            summary = write_sweep_summary(sweep_dir)
            failed = [(r.job, r.status, r.result.error if r.result else None) for r in summary.failed]
            print(f"Sweep summary: {sweep_dir / SUMMARY_NAME}"
                  + (f" (best: job {summary.best.job}, best validation loss "
                     f"{summary.best.best_val_loss:.4f})" if summary.best else ""))
            journal = refresh_journal(config.sweep.journal, config.sweep.outputs_root, sweep_dir)
            if journal:
                print(f"Journal: {journal}")
        except Exception as exc:  # noqa: BLE001 - the exit code below must still reflect the jobs
            print(f"Could not write experiments.md ({type(exc).__name__}: {exc}); run "
                  f"`python -m ttexp.summarize {shlex.quote(str(sweep_dir))}`.", file=sys.stderr)
            failed = []
            for d in job_dirs(sweep_dir):
                r = read_result(d)
                if r is None or r.status != "completed":
                    failed.append((d.name, r.status if r else "no result", r.error if r else None))
        if failed:
            for job, status, error in failed:
                print(f"Job {job}: {status}" + (f": {error}" if error else ""), file=sys.stderr)
            from ttexp.sweeps.sweep import sweep_command

            again = sweep_command(sweep_dir, resume=True)
            print(f"{len(failed)} job(s) of the sweep did not complete." + (
                f" Run them again (completed jobs are skipped, the others resume from their "
                f"checkpoints): {again}" if again else ""), file=sys.stderr)
            sys.exit(exit_code("failed"))
