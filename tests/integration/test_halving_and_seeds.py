"""Sweeps that decide honestly, on real tiny runs: successive halving over exact resume (the
survivor's curve is an uninterrupted run's, the others stop at their rung, the table says how far
each got) and a seed sweep grouped into mean ± std rows with a verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import logging_restored, run_in_process
from ttexp.__main__ import main

pytestmark = pytest.mark.slow


def multirun(sweep_dir: Path, *overrides: str) -> None:
    """``python -m ttexp -m debug=fast OVERRIDES`` in this process, through Hydra's sweep runner
    (callbacks included); only ``__enter__`` is used, because ``__exit__`` deletes the sweep."""
    from hydra.test_utils.test_utils import SweepTaskFunction

    task = SweepTaskFunction()
    task.calling_module, task.task_function = "ttexp.__main__", main
    task.config_path, task.config_name = "pkg://ttexp.conf", "config"
    task.temp_dir, task.overrides = str(sweep_dir), ["debug=fast", *overrides]
    with logging_restored():
        task.__enter__()


def table(markdown: str, first_column: str) -> list[list[str]]:
    """The markdown table whose header has ``first_column`` second, as rows of cells."""
    out, inside = [], False
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 1 and cells[1] == first_column:
            inside, out = True, [cells]
        elif inside and line.startswith("|"):
            if "---" not in line:
                out.append(cells)
        elif inside:
            break
    return out


def results(sweep_dir: Path) -> list[dict]:
    return [json.loads((sweep_dir / str(n) / "result.json").read_text()) for n in range(4)]


def losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]


def test_halving_keeps_the_best_half_per_rung_and_the_survivor_equals_an_uninterrupted_run(
        tmp_path, corpus):
    sweep = tmp_path / "halving"
    multirun(sweep, f"data.path={corpus}", "training.learning_rate=1e-4,3e-3",
             "training.batch_size=4,8", "sweep.halving.rungs=[1,2]", "sweep.halving.keep=0.5",
             "sweep.journal=null")
    res = results(sweep)
    assert all(r["status"] == "completed" and r["max_steps"] == 3 for r in res)
    steps = [r["steps_done"] for r in res]
    assert sorted(steps) == [1, 1, 2, 3]  # 4 jobs to step 1, the best 2 to step 2, the best 1 to 3
    # The jobs that went on were the best at the rung they left.
    at_rung1 = {n: json.loads((sweep / str(n) / "metrics.jsonl").read_text().splitlines()[1])["val/loss"]
                for n in range(4)}
    promoted = {n for n in range(4) if steps[n] >= 2}
    assert promoted == set(sorted(at_rung1, key=at_rung1.get)[:2])
    survivor = steps.index(3)
    # Exact resume with the final schedule: the survivor's curve is an uninterrupted run's.
    overrides = [o for o in res[survivor]["overrides"] if not o.startswith("sweep.")]
    assert "debug=fast" in overrides
    alone = run_in_process(overrides, tmp_path / "alone")
    assert alone["steps_done"] == 3
    assert losses(sweep / str(survivor)) == losses(tmp_path / "alone")
    assert res[survivor]["best_val_loss"] == alone["best_val_loss"]
    text = (sweep / "experiments.md").read_text()
    rows = table(text, "job")
    reached = rows[0].index("reached")
    assert [r[reached] for r in rows[1:]] == [f"{s}/3 (rung {s} of 3)" for s in steps]
    assert [r[1] for r in rows[1:] if r[0] == "★"] == [str(survivor)]
    assert "7 optimizer steps trained, 58% of the full grid's 12" in text


def test_a_seed_sweep_is_grouped_into_mean_and_std_rows_with_a_verdict(tmp_path, corpus):
    sweep = tmp_path / "seeds"
    multirun(sweep, f"data.path={corpus}", "training.learning_rate=1e-4,3e-3",
             "training.seed=1,2", "sweep.journal=null")
    res = results(sweep)
    text = (sweep / "experiments.md").read_text()
    rows = table(text, "training.learning_rate")
    assert [r[1:3] for r in rows[1:]] == [["0.003", "2"], ["0.0001", "2"]]  # best mean first
    by_lr = {0.0001: [res[0], res[1]], 0.003: [res[2], res[3]]}
    import statistics

    for row in rows[1:]:
        best = [r["best_val_loss"] for r in by_lr[float(row[1])]]
        assert row[3] == f"{statistics.fmean(best):.4f} ± {statistics.stdev(best):.4f}"
    fast, slow = ([r["best_val_loss"] for r in by_lr[k]] for k in (0.003, 0.0001))
    gap = statistics.fmean(slow) - statistics.fmean(fast)
    se = (statistics.variance(fast) / 2 + statistics.variance(slow) / 2) ** 0.5
    assert ("beats the runner-up" in text) == (gap > se)
    assert ("within noise" in text) == (gap <= se)
    assert (rows[1][0] == "★") == (gap > se)
