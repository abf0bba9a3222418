"""Weights & Biases tracker (``logger=wandb``): one W&B run per ttexp run, finished at its end.

What a run sends: the full resolved config (resolved.yaml), group = the sweep, job_type = the task,
a readable name from the swept overrides, tags for model / hardware / task, every metrics.jsonl
line as history (``train/loss``, ``train/lr``, ``train/grad_norm``, ``train/tokens_per_s``,
``val/loss``, ``val/ppl``) at its optimizer step, the validation samples as a table
(``val/samples``), summary values (``val/loss`` is the minimum), training.log and result.json as
files, and final_model/ as a ``model`` artifact when ``logger.wandb.log_model=true``.

wandb is imported only here, when a run asks for it (the import alone costs over half a second).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ttexp.config.convert import config_dict
from ttexp.config.schema import RunConfig
from ttexp.record.job import hydra_job_context, run_display_name, sweep_id, swept_keys
from ttexp.record.result import RESULT_NAME, RunResult
from ttexp.record.run_record import RunRecord
from ttexp.record.wandb_lost import LOST_MARK

RUN_ID_PATH = Path("wandb") / "run_id.txt"
"""The W&B run id, kept in the run directory so that a resumed run continues the same W&B run."""

SUMMARY_KEYS = ("status", "final_train_loss", "final_val_loss", "best_val_loss", "best_val_step",
                "steps_done", "tokens", "tokens_per_s", "wall_s", "num_parameters", "backend", "device")


class WandbTracker:
    """Forwards a RunRecord's events to one W&B run. Create it with :meth:`start`."""

    name = "wandb"

    def __init__(self, run: Any, wandb: Any, record_dir: Path, log_model: bool):
        self.run, self._wandb, self._dir, self._log_model = run, wandb, record_dir, log_model
        self._table: Any = None  # the samples table, made at the first validation
        self._incremental = False

    @classmethod
    def start(cls, cfg: RunConfig, record: RunRecord) -> "WandbTracker":
        """Start the W&B run for ``record`` (its files go to ``<run dir>/wandb/``). A resumed run
        (``resume=...`` into this directory) continues the W&B run whose id the first start left
        in ``<run dir>/wandb/run_id.txt`` (``resume="allow"``); a fresh run starts a new one.

        Raises:
            RuntimeError: wandb is not installed (``pip install -e ".[wandb]"``).
            Exception: whatever ``wandb.init`` raises (no login, no network, timeout); the caller
                (:func:`ttexp.record.trackers.attach_trackers`) turns it into a warning.
        """
        try:
            import wandb
        except ImportError as exc:
            raise RuntimeError('wandb is not installed: pip install -e ".[wandb]"') from exc
        w = cfg.logger.wandb
        id_file = record.dir / RUN_ID_PATH
        run_id = id_file.read_text().strip() if cfg.resume and id_file.is_file() else None
        run = wandb.init(
            **init_arguments(cfg, record, os.environ), id=run_id or None, resume="allow",
            dir=str(record.dir), config=config_dict(cfg),
            reinit="finish_previous",  # never hand back the previous job's run (wandb#1314)
            settings=wandb.Settings(init_timeout=float(w.init_timeout_s), console="off"),
        )
        if getattr(run, "id", None):  # the resume of a killed run finds it here
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(f"{run.id}\n")
        (record.dir / LOST_MARK).unlink(missing_ok=True)  # this start may be lost again: mark it then
        run.define_metric("val/loss", summary="min")
        run.define_metric("val/ppl", summary="min")
        run.define_metric("train/loss", summary="last")
        return cls(run, wandb, record.dir, bool(w.log_model))

    def info(self) -> dict[str, Any]:
        """Facts for result.json: id, name, group, project, entity, mode, url (None offline) and
        local directory; what :func:`ttexp.record.wandb_lost.close_lost_wandb_run` re-opens."""
        run = self.run
        files = getattr(run, "dir", None)
        return {"id": getattr(run, "id", None), "name": getattr(run, "name", None),
                "group": getattr(run, "group", None), "project": getattr(run, "project", None),
                "entity": getattr(run, "entity", None) or None,
                "mode": getattr(getattr(run, "settings", None), "mode", None),
                "url": getattr(run, "url", None),
                "dir": str(Path(files).parent) if files else None}

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def log_validation(self, step: int, loss: float, samples: list[tuple[str, str]]) -> None:
        """The samples go to one INCREMENTAL table (each log sends only the new rows; wandb >=
        0.19), or with an older wandb to one table per validation holding that validation's rows."""
        if self._table is None or not self._incremental:
            self._table, self._incremental = self._new_table()
        for prompt, completion in samples:
            self._table.add_data(step, prompt, completion)
        self.run.log({"val/samples": self._table}, step=step)

    def _new_table(self) -> tuple[Any, bool]:
        columns = ["step", "prompt", "completion"]
        try:
            return self._wandb.Table(columns=columns, log_mode="INCREMENTAL"), True
        except (TypeError, AssertionError):  # wandb < 0.19: no log_mode
            return self._wandb.Table(columns=columns), False

    def finish(self, result: RunResult) -> None:
        """Summary values, files and (when asked) the final model, then ``run.finish`` always."""
        status = result.status
        try:
            for key in SUMMARY_KEYS:
                if getattr(result, key) is not None:
                    self.run.summary[key] = getattr(result, key)
            for name in ("training.log", RESULT_NAME):
                if (self._dir / name).is_file():
                    self.run.save(str(self._dir / name), base_path=str(self._dir), policy="now")
            final_model = result.final_model
            if self._log_model and status == "completed" and final_model:
                artifact = self._wandb.Artifact(
                    name=f"model-{self.run.id}", type="model",
                    metadata={k: getattr(result, k) for k in ("best_val_loss", "steps_done", "num_parameters")})
                artifact.add_dir(final_model)
                self.run.log_artifact(artifact)
        finally:
            self.run.finish(exit_code=0 if status == "completed" else 1)


def init_arguments(cfg: RunConfig, record: RunRecord, environ: Mapping[str, str]) -> dict[str, Any]:
    """``wandb.init``'s project, entity, mode, group, name, job_type, tags and notes for this run.

    Precedence, as W&B users expect: a value set in the config (a preset or the command line,
    e.g. ``logger.wandb.mode=offline``) wins; else the W&B environment variable (WANDB_MODE,
    WANDB_PROJECT, WANDB_ENTITY, WANDB_RUN_GROUP, WANDB_NAME, WANDB_JOB_TYPE, WANDB_NOTES;
    WANDB_TAGS, comma-separated, adds tags); else ttexp's default (project ttexp, the sweep as
    group, a name from the swept overrides, the task as job type; mode None is wandb's own
    default, online).
    """
    w = cfg.logger.wandb
    ctx = hydra_job_context(record.dir)
    in_sweep = ctx is not None and ctx.multirun and ctx.sweep_dir is not None
    name = w.name or environ.get("WANDB_NAME")
    if not name:
        overrides = list(record.result.overrides)
        name = run_display_name(str(cfg.name), overrides, swept_keys(ctx.sweep_dir, []) if in_sweep else None)
        if in_sweep and ctx.num is not None:
            name = f"{name} #{ctx.num}"
    task = str(record.result.task)
    env_tags = [t.strip() for t in environ.get("WANDB_TAGS", "").split(",") if t.strip()]
    tags = list(dict.fromkeys([str(cfg.model.name), str(cfg.hardware.name), task, *w.tags, *env_tags]))
    return {
        "project": w.project or environ.get("WANDB_PROJECT") or "ttexp",
        "entity": w.entity or environ.get("WANDB_ENTITY") or None,
        # read here, not left to wandb: its settings singleton keeps the environment of its first use
        "mode": w.mode.value if w.mode is not None else (environ.get("WANDB_MODE") or None),
        "group": w.group or environ.get("WANDB_RUN_GROUP") or (sweep_id(ctx.sweep_dir) if in_sweep else None),
        "name": name, "job_type": environ.get("WANDB_JOB_TYPE") or task, "tags": tags,
        "notes": w.notes or environ.get("WANDB_NOTES") or None,
    }
