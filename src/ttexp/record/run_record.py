"""The run record: every file a run leaves in its directory, written by one object.

Files (README, "What a run writes"): ``resolved.yaml`` (the resolved config, the one file other
processes read), ``metrics.jsonl`` (one JSON object per line, flushed per line), ``validation.txt``
(samples at each validation), ``training_curves.png``, ``result.json`` (the run's facts, rewritten
atomically whenever they change). ``training.log`` is written by the logging config and
``.hydra/`` by Hydra.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Optional

from ttexp.config.convert import config_yaml
from ttexp.config.schema import RunConfig
from ttexp.files import write_text_atomic
from ttexp.models.metrics import perplexity
from ttexp.record.provenance import package_versions, project_git_info
from ttexp.record.result import RunResult, timestamp

METRICS_NAME = "metrics.jsonl"
VALIDATION_NAME = "validation.txt"
CURVES_NAME = "training_curves.png"
RESOLVED_NAME = "resolved.yaml"

log = logging.getLogger("ttexp")


class RunRecord:
    """Owns the run directory's record files. Only the process that writes the record creates one.

    Args:
        output_dir: the run directory (created if missing).
        cfg: the run config; its name, task, model and hardware label the record. The config
            itself is written by :meth:`write_config`, once it is resolved and validated.
        overrides: the command-line overrides that made this run (Hydra's task overrides).
        fresh: truncate metrics.jsonl and validation.txt (a new run) instead of appending.
    """

    def __init__(self, output_dir: Path, cfg: RunConfig, overrides: list[str], fresh: bool = True):
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        self.result = RunResult(
            name=cfg.name, task=cfg.task.name.value, model=cfg.model.name,
            hardware=cfg.hardware.name, overrides=list(overrides),
            output_dir=str(self.dir.resolve()),
            started_at=timestamp(self.started),
            git=project_git_info(), versions=package_versions(),
            max_steps=cfg.training.max_steps if cfg.task.name.value != "eval" else None,
        )
        mode = "w" if fresh else "a"
        self._metrics = open(self.dir / METRICS_NAME, mode, buffering=1)
        self._validation = open(self.dir / VALIDATION_NAME, mode, buffering=1)
        self.history: dict[str, list[tuple[int, float]]] = {"train/loss": [], "val/loss": [], "train/lr": []}
        self.trackers: list[Any] = []  # ttexp.record.trackers.Tracker objects fed the same events
        self.write_result()

    def write_config(self, cfg: RunConfig) -> None:
        """Write ``resolved.yaml``: the config as the run really runs it (resolved, validated,
        frozen). Written once per run; worker ranks and resumed runs read it."""
        write_text_atomic(self.dir / RESOLVED_NAME, config_yaml(cfg))

    def add_tracker(self, tracker: Any) -> None:
        """Send this run's events to ``tracker`` too (a :class:`ttexp.record.trackers.Tracker`)."""
        self.trackers.append(tracker)

    def _notify(self, event: str, *args: Any) -> None:
        """Call ``event`` on every tracker; one that fails is dropped with a warning, never the run."""
        for tracker in list(self.trackers):
            try:
                getattr(tracker, event)(*args)
            except Exception as exc:  # noqa: BLE001 - a tracker must never stop training
                log.warning("Tracker %s failed in %s (%s: %s); it is switched off, the local record "
                            "goes on.", tracker.name, event, type(exc).__name__, exc)
                self.trackers.remove(tracker)

    # -- events --------------------------------------------------------------------------------

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Append one line to metrics.jsonl and keep the curves for the plot."""
        line = {"step": step, **{k: v if math.isfinite(v) else None for k, v in metrics.items()}}
        self._metrics.write(json.dumps(line) + "\n")
        for key in self.history:
            if key in metrics:
                self.history[key].append((step, float(metrics[key])))
        self._notify("log_metrics", step, metrics)

    def log_validation(self, step: int, loss: float, samples: list[tuple[str, str]]) -> None:
        """Append one block to validation.txt: the step, the loss, each prompt and its output."""
        out = [f"=== Step {step} | validation loss {loss:.4f} | perplexity {perplexity(loss):.2f} ==="]
        for prompt, completion in samples:
            shown = prompt.replace("\n", "\\n")  # a templated prompt spans lines: keep one header line
            out += [f"--- Prompt: {shown}", prompt + completion, ""]
        self._validation.write("\n".join(out) + "\n")
        self._notify("log_validation", step, loss, samples)

    def rewind(self, step: int) -> None:
        """Continue an earlier record at ``step`` (resume): keep metrics.jsonl lines up to
        ``step`` and drop what the interrupted run logged after its last checkpoint, reload the
        curves, and mark the resumption in validation.txt."""
        path = self.dir / METRICS_NAME
        self._metrics.close()
        kept = []
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if row.get("step", 0) <= step:
                kept.append(row)
        for key in self.history:
            self.history[key] = [(r["step"], r[key]) for r in kept if r.get(key) is not None]
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        self._metrics = open(path, "a", buffering=1)
        if step > 0:
            self._validation.write(f"=== Resumed from step {step} ===\n")

    def update(self, **facts: Any) -> None:
        """Set fields of result.json (:class:`~ttexp.record.result.RunResult`) and rewrite it.

        Raises:
            AttributeError: a key that result.json does not have.
        """
        self.result.update(**facts)
        self.write_result()

    def write_result(self) -> None:
        """Rewrite result.json (atomically) with the wall time so far."""
        self.result.wall_s = round(time.time() - self.started, 3)
        self.result.write(self.dir)

    def plot(self, title: str) -> Optional[Path]:
        """Write training_curves.png from the curves logged so far; None when there is nothing."""
        from ttexp.record.plots import (
            plot_training_curves,  # matplotlib: only when plotting
        )

        if not self.history["train/loss"]:
            return None
        path = self.dir / CURVES_NAME
        plot_training_curves(path, self.history, title)
        return path

    def adopt(self) -> None:
        """Take over result.json as rank 0 of a multi-process run wrote it (the controller's
        record keeps its own start time and overrides)."""
        written = RunResult.read(self.dir)
        if written is None:
            return
        written.started_at, written.overrides = self.result.started_at, self.result.overrides
        self.result = written

    def close(self, status: str, error: Optional[str] = None) -> None:
        """Final status (completed | failed | interrupted | diverged) and close the files."""
        self.update(status=status, error=error, ended_at=timestamp())
        self._metrics.close()
        self._validation.close()
        self._notify("finish", self.result)
        self.trackers.clear()


class NullRecord:
    """The record of a rank other than 0: the same interface, nothing written (rank 0 writes)."""

    def __init__(self, output_dir: Path):
        self.dir = Path(output_dir)
        self.result = RunResult()
        self.history: dict[str, list[tuple[int, float]]] = {}

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def log_validation(self, step: int, loss: float, samples: list[tuple[str, str]]) -> None:
        pass

    def rewind(self, step: int) -> None:
        pass

    def write_config(self, cfg: RunConfig) -> None:
        pass

    def update(self, **facts: Any) -> None:
        self.result.update(**facts)

    def plot(self, title: str) -> Optional[Path]:
        return None

    def close(self, status: str, error: Optional[str] = None) -> None:
        self.result.update(status=status, error=error)
