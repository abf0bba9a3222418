"""The decisions a sweep summary makes, without training: the seed verdict, the single-seed
resolution, halving's survivors, the heat map's keys, `python -m ttexp.compare`, and the git state
that ignores the journal part ttexp regenerates."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import compose_cfg
from ttexp.config.convert import config_yaml
from ttexp.record.provenance import JOURNAL_MARKER, git_info, package_versions
from ttexp.record.result import RunResult
from ttexp.sweeps.figures import heatmap_keys
from ttexp.sweeps.halving import rung_label, survivors
from ttexp.sweeps.stats import group_settings, single_seed_resolution, verdict
from ttexp.tools import compare


def jobs(losses: dict[float, list[float]]):
    return [(f"{lr}-{i}", {"training.learning_rate": lr, "training.seed": i}, x, x + 0.01)
            for lr, xs in losses.items() for i, x in enumerate(xs)]


def test_a_setting_is_best_only_when_it_beats_the_runner_up_by_more_than_the_combined_se():
    clear = group_settings(jobs({1e-3: [1.80, 1.81, 1.82], 2e-3: [1.90, 1.91, 1.92]}),
                           ["training.learning_rate"])
    assert [s.params["training.learning_rate"] for s in clear] == [1e-3, 2e-3]
    assert clear[0].n == 3 and clear[0].mean == pytest.approx(1.81)
    assert clear[0].std == pytest.approx(0.01) and clear[0].final_mean == pytest.approx(1.82)
    v = verdict(clear)
    assert v.best is clear[0] and "beats the runner-up" in v.text
    # Means 0.01 apart with a spread of 0.05: SE = sqrt(2) * 0.05 / sqrt(3) = 0.041 > 0.01.
    noisy = group_settings(jobs({1e-3: [1.75, 1.80, 1.85], 2e-3: [1.76, 1.81, 1.86]}),
                           ["training.learning_rate"])
    v = verdict(noisy)
    assert v.best is None and "within noise" in v.text and "0.0408" in v.text
    # One seed each: no spread, so nothing is declared.
    assert verdict(group_settings(jobs({1e-3: [1.7], 2e-3: [1.9]}), ["training.learning_rate"])).best is None


def test_failed_jobs_are_listed_but_not_counted():
    settings = group_settings(jobs({1e-3: [1.8, 1.9]}) + [("x", {"training.learning_rate": 1e-3}, None, None)],
                              ["training.learning_rate"])
    assert settings[0].n == 2 and settings[0].jobs == ["0.001-0", "0.001-1", "x"]


def test_single_seed_resolution_comes_from_repeated_settings_or_is_unknown():
    once = group_settings(jobs({1e-3: [1.8], 2e-3: [1.9]}), ["training.learning_rate"])
    assert single_seed_resolution(once) is None
    twice = group_settings(jobs({1e-3: [1.8, 1.9], 2e-3: [1.7]}), ["training.learning_rate"])
    assert single_seed_resolution(twice) == pytest.approx(math.sqrt(2) * 0.1 / math.sqrt(2))


def test_halving_keeps_the_best_fraction_rounded_up_and_never_a_failed_job():
    at = [(Path(str(i)), RunResult(status="completed", final_val_loss=loss))
          for i, loss in enumerate([2.0, 1.5, 1.7, 1.9, 1.6])]
    at.append((Path("5"), RunResult(status="failed")))
    assert survivors(at, 0.34) == [Path("1"), Path("4"), Path("2")]  # ceil(0.34 * 6) = 3
    assert survivors(at[:1] + at[5:], 0.1) == [Path("0")]  # at least one
    r = RunResult(status="completed", steps_done=300, max_steps=800)
    assert rung_label(r, [100, 300]) == "300/800 (rung 2 of 3)"


def test_a_heat_map_needs_exactly_two_numeric_keys_besides_the_seed():
    rows = [SimpleNamespace(params={"training.learning_rate": lr, "training.batch_size": b,
                                    "training.seed": s, "model": "nano"})
            for lr in (1e-3, 2e-3) for b in (8, 16) for s in (1, 2)]
    assert heatmap_keys(rows, ["training.learning_rate", "training.batch_size", "training.seed"]) == \
        ("training.learning_rate", "training.batch_size")
    assert heatmap_keys(rows, ["training.learning_rate"]) is None
    assert heatmap_keys(rows, ["training.learning_rate", "model"]) is None


def fake_run(directory: Path, lr: str, best: float, tps: float) -> Path:
    cfg = compose_cfg(["debug=fast", f"training.learning_rate={lr}"], directory)
    directory.mkdir(parents=True)
    (directory / "resolved.yaml").write_text(config_yaml(cfg))
    result = RunResult(status="completed", best_val_loss=best, final_val_loss=best + 0.1,
                       tokens_per_s=tps, steps_done=3, wall_s=2.0, git={"commit": "abc", "dirty": False},
                       versions=package_versions())
    (directory / "result.json").write_text(result.to_json())
    return directory


def test_compare_prints_exactly_the_key_that_differs_and_the_metric_deltas(tmp_path, capsys):
    a = fake_run(tmp_path / "a", "1e-3", 1.90, 1000.0)
    b = fake_run(tmp_path / "b", "2e-3", 1.85, 1100.0)
    assert compare.main([str(a), str(b), "--no-plot"]) == 0
    text = capsys.readouterr().out
    diff = text.split("Config differences (1 key):\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split() for line in diff] == [["key", "A", "B"], ["training.learning_rate", "0.001", "0.002"]]
    assert "Git: same commit abc" in text and "Package versions: the same" in text
    assert compare.main([str(a), str(b), "--json", "--plot", str(tmp_path / "c.png")]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["config_differences"] == {"training.learning_rate": [0.001, 0.002]}
    assert facts["metrics"]["best_val_loss"]["delta"][1] == pytest.approx(-0.05)
    assert facts["metrics"]["tokens_per_s"]["delta"] == [0.0, 100.0]
    assert facts["versions_differ"] == {}
    with pytest.raises(SystemExit):
        compare.main([str(a)])  # one run: nothing to compare


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                   check=True, capture_output=True)


def test_the_regenerated_journal_is_listed_as_ttexps_change_not_a_dirty_tree(tmp_path):
    git(tmp_path, "init", "-q")
    journal = tmp_path / "experiments" / "experiments.md"
    journal.parent.mkdir()
    journal.write_text(f"# notes\n{JOURNAL_MARKER}\nold table\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "journal")
    assert git_info(tmp_path)["dirty"] is False
    journal.write_text(f"# notes\n{JOURNAL_MARKER}\nnew table\n")  # what ttexp does after a run
    info = git_info(tmp_path)
    assert info["dirty"] is False and info["changed_by_ttexp"] == ["experiments/experiments.md"]
    journal.write_text(f"# notes, edited\n{JOURNAL_MARKER}\nnew table\n")  # the team's own change
    info = git_info(tmp_path)
    assert info["dirty"] is True and info["dirty_files"] == ["experiments/experiments.md"]
    assert info["changed_by_ttexp"] == []


def test_stop_at_step_and_halving_rungs_are_checked_against_max_steps():
    from ttexp.config.validate import validate_config
    from ttexp.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        validate_config(compose_cfg(["debug=fast", "training.stop_at_step=4",
                                     "sweep.halving.rungs=[2,1]", "sweep.halving.keep=1.0"]))
    text = str(err.value)
    assert "training.stop_at_step=4 must be in [1, training.max_steps=3]" in text
    assert "sweep.halving.rungs=[2, 1] must be increasing" in text
    assert "sweep.halving.keep=1.0 must be a fraction in (0, 1)" in text
    validate_config(compose_cfg(["debug=fast", "training.stop_at_step=2", "sweep.halving.rungs=[1,2]"]))
