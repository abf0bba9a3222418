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

from pathlib import Path
from typing import Any

from ttexp.config.convert import config_dict
from ttexp.config.schema import RunConfig
from ttexp.record.job import hydra_job_context, run_display_name, sweep_id, swept_keys
from ttexp.record.result import RESULT_NAME, RunResult
from ttexp.record.run_record import RunRecord

SUMMARY_KEYS = ("status", "final_train_loss", "final_val_loss", "best_val_loss", "best_val_step",
                "steps_done", "tokens", "tokens_per_s", "wall_s", "num_parameters", "backend", "device")


class WandbTracker:
    """Forwards a RunRecord's events to one W&B run. Create it with :meth:`start`."""

    name = "wandb"

    def __init__(self, run: Any, wandb: Any, record_dir: Path, log_model: bool):
        self.run, self._wandb, self._dir, self._log_model = run, wandb, record_dir, log_model
        self._samples: list[list[Any]] = []

    @classmethod
    def start(cls, cfg: RunConfig, record: RunRecord) -> "WandbTracker":
        """Start the W&B run for ``record`` (its files go to ``<run dir>/wandb/``).

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
        ctx = hydra_job_context(record.dir)
        in_sweep = ctx is not None and ctx.multirun and ctx.sweep_dir is not None
        overrides = list(record.result.overrides)
        name = w.name or run_display_name(
            str(cfg.name), overrides, swept_keys(ctx.sweep_dir, []) if in_sweep else None)
        if in_sweep and not w.name and ctx.num is not None:
            name = f"{name} #{ctx.num}"
        task = str(record.result.task)
        tags = list(dict.fromkeys([str(cfg.model.name), str(cfg.hardware.name), task, *w.tags]))
        config = config_dict(cfg)
        run = wandb.init(
            project=w.project, entity=w.entity, mode=w.mode.value,
            dir=str(record.dir), config=config, name=name, job_type=task, tags=tags,
            group=w.group or (sweep_id(ctx.sweep_dir) if in_sweep else None), notes=w.notes,
            reinit="finish_previous",  # never hand back the previous job's run (wandb#1314)
            settings=wandb.Settings(init_timeout=float(w.init_timeout_s), console="off"),
        )
        run.define_metric("val/loss", summary="min")
        run.define_metric("val/ppl", summary="min")
        run.define_metric("train/loss", summary="last")
        return cls(run, wandb, record.dir, bool(w.log_model))

    def info(self) -> dict[str, Any]:
        """Facts for result.json: id, name, group, mode, url (None offline) and local directory."""
        run = self.run
        files = getattr(run, "dir", None)
        return {"id": getattr(run, "id", None), "name": getattr(run, "name", None),
                "group": getattr(run, "group", None), "project": getattr(run, "project", None),
                "mode": getattr(getattr(run, "settings", None), "mode", None),
                "url": getattr(run, "url", None),
                "dir": str(Path(files).parent) if files else None}

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def log_validation(self, step: int, loss: float, samples: list[tuple[str, str]]) -> None:
        self._samples += [[step, prompt, completion] for prompt, completion in samples]
        table = self._wandb.Table(columns=["step", "prompt", "completion"], data=list(self._samples))
        self.run.log({"val/samples": table}, step=step)

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
