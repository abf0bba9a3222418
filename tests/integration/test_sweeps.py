"""Real sweeps on a tiny model: one directory and result.json per job, experiments.md with a
column per swept key and the best run marked, the overlay plot, the journal, failures that keep
the other jobs and exit non-zero, resume, and the joblib launcher."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import logging_restored, run_cli
from ttexp.__main__ import main

pytestmark = pytest.mark.slow

SHORT = ["debug=fast"]  # the tiny model, 3 steps, one validation at the end, no checkpoints


def multirun(sweep_dir: Path, *overrides: str) -> list:
    """Run ``python -m ttexp -m OVERRIDES`` in this process through Hydra's own sweep runner (the
    class behind the ``hydra_sweep_runner`` fixture); returns the jobs' return values. Its
    ``__exit__`` would delete ``sweep_dir``, so only ``__enter__`` (which runs the sweep) is used."""
    from hydra.test_utils.test_utils import SweepTaskFunction

    task = SweepTaskFunction()
    task.calling_module, task.task_function = "ttexp.__main__", main
    task.config_path, task.config_name = "pkg://ttexp.conf", "config"
    task.temp_dir, task.overrides = str(sweep_dir), [*SHORT, *overrides]
    with logging_restored():  # Hydra points the ttexp logger at the last job's training.log
        task.__enter__()
    return [r.return_value for batch in task.returns for r in batch]


def rows(markdown: str) -> list[list[str]]:
    lines = [x for x in markdown.splitlines() if x.startswith("|") and "---" not in x]
    return [[c.strip() for c in x.strip("|").split("|")] for x in lines]


@pytest.fixture(scope="module")
def four_jobs(tmp_path_factory, corpus):
    """A 2 x 2 sweep (learning rate x batch size) with the journal pointed into tmp."""
    tmp = tmp_path_factory.mktemp("sweep4")
    returns = multirun(tmp / "outputs/s", f"data.path={corpus}", "training.learning_rate=1e-4,3e-3",
                       "training.batch_size=4,8", f"sweep.outputs_root={tmp / 'outputs'}",
                       f"sweep.journal={tmp / 'experiments/experiments.md'}")
    return tmp, tmp / "outputs/s", returns


def test_every_job_has_its_own_directory_and_result(four_jobs):
    _, sweep_dir, returns = four_jobs
    results = [json.loads((sweep_dir / str(n) / "result.json").read_text()) for n in range(4)]
    assert [r["status"] for r in results] == ["completed"] * 4
    assert len({r["output_dir"] for r in results}) == 4
    overrides = [set(r["overrides"]) for r in results]
    assert {"training.learning_rate=0.0001", "training.batch_size=4"} <= overrides[0]
    assert {"training.learning_rate=0.003", "training.batch_size=8"} <= overrides[3]
    # The task returns the best validation loss: the value an Optuna sweeper minimises.
    assert returns == pytest.approx([r["best_val_loss"] for r in results])


def test_experiments_md_has_the_swept_columns_and_marks_the_best_run(four_jobs):
    _, sweep_dir, _ = four_jobs
    header, *body = rows((sweep_dir / "experiments.md").read_text())
    assert header[1:4] == ["job", "training.learning_rate", "training.batch_size"]
    for column in ("final val loss", "best val loss", "tokens/s", "wall", "status", "links"):
        assert column in header
    assert [(r[2], r[3]) for r in body] == [("0.0001", "4"), ("0.0001", "8"), ("0.003", "4"), ("0.003", "8")]
    best = [json.loads((sweep_dir / str(n) / "result.json").read_text())["best_val_loss"] for n in range(4)]
    marked = [r[1] for r in body if r[0] == "★"]
    assert marked == [str(best.index(min(best)))]
    assert all(r[header.index("status")] == "completed" for r in body)
    png = (sweep_dir / "sweep_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_the_journal_indexes_the_sweep(four_jobs):
    tmp, sweep_dir, _ = four_jobs
    journal = (tmp / "experiments/experiments.md").read_text()
    assert f"## Sweep `{sweep_dir.resolve()}`" in journal
    assert "[dir](../outputs/s/0/)" in journal and "| ★ |" in journal


def test_a_failing_job_is_a_failed_row_the_others_complete_and_the_command_exits_1(tmp_path, corpus):
    # num_heads=3 does not divide hidden_dim=32: that job fails validation, the others train.
    out = tmp_path / "sweep"
    proc = run_cli(["-m", *SHORT, f"data.path={corpus}", "model.num_heads=2,3,4",
                    f"hydra.sweep.dir={out}"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Job 1: failed" in proc.stderr and "1 job(s) of the sweep did not complete" in proc.stderr
    statuses = [json.loads((out / str(n) / "result.json").read_text())["status"] for n in range(3)]
    assert statuses == ["completed", "failed", "completed"]
    header, *body = rows((out / "experiments.md").read_text())
    assert header[2] == "model.num_heads" and [r[2] for r in body] == ["2", "3", "4"]
    status = header.index("status")
    assert body[1][status].startswith("**failed**") and "does not divide" in body[1][status]
    assert body[1][0] == "" and sum(r[0] == "★" for r in body) == 1
    assert "sweep.resume=true" in (out / "experiments.md").read_text()


def test_resume_skips_completed_jobs_and_reruns_the_rest(tmp_path, corpus):
    out = tmp_path / "sweep"
    multirun(out, f"data.path={corpus}", "training.learning_rate=1e-4,3e-4")
    first = (out / "0/metrics.jsonl").stat().st_mtime_ns
    result1 = json.loads((out / "1/result.json").read_text())
    (out / "1/result.json").write_text(json.dumps({**result1, "status": "failed"}))
    returns = multirun(out, f"data.path={corpus}", "training.learning_rate=1e-4,3e-4", "sweep.resume=true")
    assert (out / "0/metrics.jsonl").stat().st_mtime_ns == first  # skipped: untouched
    rerun = json.loads((out / "1/result.json").read_text())
    assert rerun["status"] == "completed" and rerun["started_at"] >= result1["started_at"]
    assert "sweep.resume=True" in rerun["overrides"]  # as Hydra normalises it
    assert all(math.isfinite(x) for x in returns)


def test_joblib_launcher_runs_jobs_in_worker_processes(tmp_path, corpus):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    out = tmp_path / "sweep"
    proc = run_cli(["-m", *SHORT, f"data.path={corpus}", "training.learning_rate=1e-4,3e-4",
                    "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={out}"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Joblib.Parallel" in proc.stdout + proc.stderr
    body = rows((out / "experiments.md").read_text())[1:]
    assert len(body) == 2 and all("completed" in r for r in body)


def test_optuna_search_survives_failed_trials(tmp_path, corpus):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason='pip install -e ".[optuna]"')
    out = tmp_path / "sweep"
    # num_heads=3 does not divide hidden_dim=32: every trial fails at once, yet the study finishes.
    proc = run_cli(["hparams_search=optuna_lr_batch", "hydra.sweeper.n_trials=2", *SHORT,
                    f"data.path={corpus}", "model.num_heads=3", f"hydra.sweep.dir={out}"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Best value: inf" in proc.stdout + proc.stderr
    header, *body = rows((out / "experiments.md").read_text())
    assert header[2:4] == ["training.learning_rate", "training.batch_size"] and len(body) == 2
    assert all(r[header.index("status")].startswith("**failed**") for r in body)


def test_each_job_logs_the_sweeps_progress_and_eta(four_jobs):
    _, sweep_dir, _ = four_jobs
    first = (sweep_dir / "0" / "training.log").read_text()
    last = (sweep_dir / "3" / "training.log").read_text()
    assert f"Sweep {sweep_dir}: 1/4 jobs done, 0 failed, 0 running, 3 to start | elapsed " in first
    assert f"Sweep {sweep_dir}: 4/4 jobs done, 0 failed, 0 running, 0 to start | elapsed " in last
    assert last.rstrip().endswith("| ETA 0m 00s")
