"""RunRecord sends its events to every tracker and survives one that fails; a missing wandb
package is a warning, not a failed run. No training here."""

from __future__ import annotations

import sys

from conftest import compose_cfg
from ttexp.record.run_record import RunRecord
from ttexp.record.trackers import attach_trackers


class _Tracker:
    def __init__(self, name: str, fail_on: str | None = None):
        self.name, self.fail_on, self.events = name, fail_on, []

    def _event(self, event, *args):
        self.events.append((event, args))
        if event == self.fail_on:
            raise RuntimeError("service down")

    def log_metrics(self, step, metrics):
        self._event("log_metrics", step, metrics)

    def log_validation(self, step, loss, samples):
        self._event("log_validation", step, loss, samples)

    def finish(self, result):
        self._event("finish", result.status)


def test_record_fans_events_out_and_drops_a_failing_tracker(tmp_path, caplog):
    record = RunRecord(tmp_path / "run", compose_cfg([], tmp_path / "run"), [])
    good, bad = _Tracker("good"), _Tracker("bad", fail_on="log_metrics")
    record.add_tracker(good)
    record.add_tracker(bad)
    record.log_metrics(1, {"train/loss": 5.0})
    record.log_metrics(2, {"train/loss": 4.0})
    record.log_validation(2, 4.1, [("ROMEO:", " hi")])
    record.close("completed")
    assert [e for e, _ in good.events] == ["log_metrics", "log_metrics", "log_validation", "finish"]
    assert good.events[-1][1] == ("completed",) and len(bad.events) == 1
    assert "Tracker bad failed in log_metrics" in caplog.text
    assert len((tmp_path / "run/metrics.jsonl").read_text().splitlines()) == 2


def test_missing_wandb_package_is_a_warning_and_no_tracker(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    cfg = compose_cfg(["logger=wandb"], tmp_path / "run")
    record = RunRecord(tmp_path / "run", cfg, [])
    attach_trackers(cfg, record)
    assert record.trackers == [] and "wandb is not installed" in record.result.wandb["error"]
    assert "W&B could not start" in caplog.text and 'pip install -e ".[wandb]"' in caplog.text
    record.close("completed")


def test_local_logger_starts_no_tracker(tmp_path):
    cfg = compose_cfg([], tmp_path / "run")
    record = RunRecord(tmp_path / "run", cfg, [])
    attach_trackers(cfg, record)
    assert record.trackers == [] and record.result.wandb is None
    record.close("completed")


def test_worker_ranks_read_the_job_context_the_controller_saved(tmp_path, monkeypatch):
    """A rank of a multi-process sweep job has no Hydra; it reads job_context.json."""
    from ttexp.record import job
    from ttexp.record.job import JobContext, hydra_job_context, save_job_context

    ctx = JobContext(multirun=True, sweep_dir=tmp_path / "sweep", num=3, overrides=["a=1"])
    monkeypatch.setattr(job, "hydra_job_context", lambda run_dir=None: ctx)
    save_job_context(tmp_path)
    monkeypatch.undo()
    assert hydra_job_context(tmp_path) == ctx
    assert hydra_job_context(tmp_path / "elsewhere") is None
