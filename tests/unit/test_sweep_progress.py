"""The sweep's console progress: jobs done / running / failed / to start, and its ETA."""

import os

import pytest
import yaml

from ttexp.record.result import RESULT_NAME, RunResult
from ttexp.sweeps.progress import planned_jobs, sweep_progress


def _job(sweep, num, status, wall_s=None):
    d = sweep / str(num)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"training.seed={num}"]))
    if status is not None:
        (d / RESULT_NAME).write_text(RunResult(status=status, wall_s=wall_s).to_json())


def test_progress_counts_each_state_and_estimates_the_rest(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "overrides": {"task": ["training.learning_rate=1e-3,2e-3,4e-3", "training.seed=1,2",
                               "model=nano"]},
        "launcher": {"n_jobs": 2}}}))
    os.utime(sweep / "multirun.yaml", (1000.0, 1000.0))
    _job(sweep, 0, "completed", 10.0)
    _job(sweep, 1, "completed", 30.0)
    _job(sweep, 2, "failed", 20.0)
    _job(sweep, 3, "running")
    _job(sweep, 4, None)  # started: Hydra wrote its overrides, no result yet
    p = sweep_progress(sweep, now=1130.0)
    assert (p.total, p.done, p.failed, p.running, p.to_start) == (6, 2, 1, 2, 1)
    assert p.elapsed_s == pytest.approx(130.0)
    # 3 unfinished jobs on 2 parallel workers = 2 rounds of the 20 s mean job
    assert p.eta_s == pytest.approx(40.0)
    assert p.line(sweep) == (f"Sweep {sweep}: 2/6 jobs done, 1 failed, 2 running, 1 to start "
                             "| elapsed 2m 10s | ETA 0m 40s")


def test_no_eta_before_a_job_ends_and_optuna_counts_its_trials(tmp_path):
    sweep = tmp_path / "s"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": {"n_trials": 5},
                                                                   "overrides": {"task": []}}}))
    _job(sweep, 0, "running")
    p = sweep_progress(sweep)
    assert p.total == 5 and p.eta_s is None and p.line(sweep).endswith("| ETA ?")
    assert planned_jobs({}) == 1  # no sweep overrides: a one-job sweep
