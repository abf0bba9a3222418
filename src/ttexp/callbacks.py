"""The Hydra callback that closes a sweep: experiments.md, the journal, and the exit code.

Registered in ``conf/config.yaml`` under ``hydra.callbacks.experiments``. It runs in the controller
process after every job of a multirun has returned, and reads the jobs' ``result.json`` files from
disk (with joblib or SLURM the jobs ran in other processes, so there is nothing in memory to read).

Each job's task function records a failure in its own ``result.json`` and returns normally, so
Hydra runs every job and reaches ``on_multirun_end``; this callback then exits with status 1 when
any job did not complete. Single runs refresh the journal in the task function itself
(:mod:`ttexp.__main__`), because a failed single run exits there.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class ExperimentsCallback(Callback):
    """``on_multirun_start``: make sure the sweep has its ``multirun.yaml``. ``on_multirun_end``: write ``<sweep>/experiments.md`` and ``sweep_curves.png``, regenerate the
    journal (``sweep.journal``), print where they are, and exit 1 if a job failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Save ``multirun.yaml`` (the sweep's command and config) if no sweeper writes it: the
        basic sweeper does (and overwrites this copy), the Optuna sweeper does not."""
        from omegaconf import OmegaConf

        from ttexp.record.job import MULTIRUN_NAME

        sweep_dir = Path(config.hydra.sweep.dir)
        if not (sweep_dir / MULTIRUN_NAME).exists():
            sweep_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(config, sweep_dir / MULTIRUN_NAME)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from ttexp.sweeps.summarize import SUMMARY_NAME, refresh_journal, write_sweep_summary
        from ttexp.sweeps.sweep import job_dirs, read_result

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            summary = write_sweep_summary(sweep_dir)
            failed = [(r.job, r.status, (r.result or {}).get("error")) for r in summary.failed]
            print(f"Sweep summary: {sweep_dir / SUMMARY_NAME}"
                  + (f" (best: job {summary.best.job}, best validation loss "
                     f"{summary.best.best_val_loss:.4f})" if summary.best else ""))
            journal = refresh_journal(config.sweep.journal, config.sweep.outputs_root, sweep_dir)
            if journal:
                print(f"Journal: {journal}")
        except Exception as exc:  # noqa: BLE001 - the exit code below must still reflect the jobs
            print(f"Could not write experiments.md ({type(exc).__name__}: {exc}); run "
                  f"`python -m ttexp.summarize {sweep_dir}`.", file=sys.stderr)
            failed = []
            for d in job_dirs(sweep_dir):
                r = read_result(d) or {}
                if r.get("status") != "completed":
                    failed.append((d.name, r.get("status", "no result"), r.get("error")))
        if failed:
            for job, status, error in failed:
                print(f"Job {job}: {status}" + (f": {error}" if error else ""), file=sys.stderr)
            print(f"{len(failed)} job(s) of the sweep did not complete.", file=sys.stderr)
            sys.exit(1)
