"""Entry point: ``python -m ttexp [group=option ...] [key=value ...]`` (Hydra 1.3).

    python -m ttexp model=nano task=scratch
    python -m ttexp hardware=n300 model=nano task=scratch
    python -m ttexp experiment=nano_cpu
    python -m ttexp --cfg job experiment=nano_cpu      # print the composed config, run nothing
    python -m ttexp -m experiment=nano_cpu training.learning_rate=1e-4,3e-4   # a sweep

Hydra runs here, in this controller process only: it composes the config, creates the run
directory and configures logging; :func:`ttexp.runner.run` does the rest and writes the record.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from ttexp.config.overrides import override_problem
from ttexp.config.schema import register_configs
from ttexp.errors import exit_code, redact

register_configs()

@hydra.main(version_base="1.3", config_path="pkg://ttexp.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run one job and refresh experiments.md; in a single run, exit non-zero unless it completed.

    In a sweep it never raises or exits, so Hydra runs every job and its end-of-sweep callback
    (:mod:`ttexp.callbacks`) writes the summary and sets the exit code. Returns the best
    validation loss (+inf when there is none: the worst value), which an Optuna sweeper minimises.
    """
    from ttexp.record.job import is_multirun
    from ttexp.runner import run
    from ttexp.sweeps.summarize import refresh_after_job
    from ttexp.sweeps.sweep import completed_result, objective, pin_job_device
    from ttexp.train.slurm import restart_count, restart_resume

    hc = HydraConfig.get()
    # as typed: an override like x=${oc.env:TOKEN} is recorded as that text, never its value
    overrides = list(OmegaConf.to_container(hc.overrides.task, resolve=False))
    multirun = is_multirun(hc)
    lease = None
    if multirun and cfg.sweep.pin_devices:
        pinned, lease = pin_job_device(cfg, Path(hc.sweep.dir))
        if pinned:
            logging.getLogger("ttexp").info("sweep.pin_devices: job %s runs on %s", hc.job.num, pinned)
    if multirun and cfg.sweep.halving.rungs and cfg.training.stop_at_step is None:
        with open_dict(cfg):  # successive halving: the grid trains to the first rung
            cfg.training.stop_at_step = int(cfg.sweep.halving.rungs[0])
    result = completed_result(Path(cfg.output_dir), overrides) if cfg.sweep.resume else None
    if result is not None:
        logging.getLogger("ttexp").info("sweep.resume: %s already completed; skipped.", cfg.output_dir)
    else:
        if cfg.sweep.resume and not cfg.resume and (Path(cfg.output_dir) / "checkpoints").is_dir():
            with open_dict(cfg):
                cfg.resume = "auto"  # an interrupted job continues from its newest checkpoint
        if restart_resume(cfg.resume) != cfg.resume:  # SLURM requeued or preempted this job
            logging.getLogger("ttexp").info(
                "SLURM restart %d of this job: continuing %s with resume=auto.", restart_count(), cfg.output_dir)
            with open_dict(cfg):
                cfg.resume = "auto"
        if multirun:  # the sweep's table shows this job as started
            refresh_after_job(Path(cfg.output_dir), Path(hc.sweep.dir), None, "", plot=False)
        # A job in a launcher's worker process (joblib) trains in a child it supervises: a killed
        # child ends this job `lost` and the pool, and the sweep, go on (the worker survives).
        isolate = multirun and "joblib" in str(OmegaConf.select(hc, "launcher._target_") or "")
        try:
            result = run(cfg, overrides=overrides, isolate=isolate)
        finally:
            if lease is not None:
                lease.release()
    refresh_after_job(Path(cfg.output_dir), Path(hc.sweep.dir) if multirun else None,
                      cfg.sweep.journal, cfg.sweep.outputs_root)
    if multirun:
        from ttexp.sweeps.progress import sweep_progress

        sweep_dir = Path(hc.sweep.dir)
        logging.getLogger("ttexp").info("%s", sweep_progress(sweep_dir).line(sweep_dir))
    if not multirun and result.status != "completed":
        sys.exit(exit_code(result.status))
    if result.status == "interrupted":
        raise KeyboardInterrupt  # Ctrl-C stops the whole sweep, not only this job
    return objective(result)  # a failed or diverged trial is the worst (inf), never a good score


def cli() -> None:
    """``python -m ttexp`` and the ``ttexp`` command: refuse an override that names no key of the
    schema (with the closest known key, exit 2) before Hydra composes anything, run :func:`main`,
    then end the process at once (:func:`exit_now`)."""
    problem = override_problem(sys.argv[1:])
    if problem:
        print(redact(f"ERROR: {problem}"), file=sys.stderr)
        sys.exit(exit_code("usage"))
    try:
        main()
    except SystemExit as exc:
        exit_now(exc.code)
        raise
    exit_now(0)


def exit_now(code: object) -> None:
    """End the process with ``code`` without the interpreter's teardown, once everything is
    written: run the atexit hooks (logging's flush and close, W&B's, loky's), flush the standard
    streams, then ``os._exit``. With torch and transformers loaded, the teardown (module cleanup
    and freeing every object) took about 1 s of a 3.5 s debug run on 2 cores, after the last line
    was printed. Returns without exiting while another non-daemon thread is alive (Python would
    wait for it) or for an exit code that is not an int or None (Python prints a string code).
    """
    if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    if code is not None and not isinstance(code, int):
        return
    atexit._run_exitfuncs()  # noqa: SLF001 - what interpreter shutdown would run first
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code or 0)


if __name__ == "__main__":
    cli()
