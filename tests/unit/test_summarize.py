"""experiments.md from files on disk: swept columns, parsed values, the best run, failed rows,
the journal, the resume check, and the tracker fan-out of RunRecord. No training here: the sweeps
are written by hand in the layout Hydra and ttexp leave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ttexp.sweeps import summarize
from ttexp.record.job import parse_overrides, run_display_name, swept_keys
from ttexp.sweeps.sweep import completed_result, sweep_command

GRID = [(1e-4, 8), (1e-4, 16), (3e-4, 8), (3e-4, 16)]


def make_sweep(root: Path, losses: list[float | None], statuses: list[str] | None = None) -> Path:
    """A sweep directory as Hydra + ttexp leave it: multirun.yaml, and per job .hydra/overrides.yaml,
    result.json and metrics.jsonl (a job with status None never wrote a result)."""
    sweep = root / "sweep"
    sweep.mkdir(parents=True)
    task = ["model=nano", "training.learning_rate=1e-4,3e-4", "training.batch_size=8,16"]
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(
        {"hydra": {"overrides": {"hydra": ["hydra.mode=MULTIRUN", "hydra/launcher=joblib"], "task": task}}}))
    statuses = statuses or ["completed"] * len(losses)
    for num, ((lr, bs), loss, status) in enumerate(zip(GRID, losses, statuses)):
        job = sweep / str(num)
        (job / ".hydra").mkdir(parents=True)
        overrides = ["model=nano", f"training.learning_rate={lr}", f"training.batch_size={bs}"]
        (job / ".hydra/overrides.yaml").write_text(yaml.safe_dump(overrides))
        if status is None:
            continue
        (job / "result.json").write_text(json.dumps({
            "status": status, "error": None if status == "completed" else "ConfigError: broken",
            "overrides": overrides, "best_val_loss": loss, "final_val_loss": loss,
            "best_val_step": 10, "tokens_per_s": 1234.5, "wall_s": 75.0,
            "started_at": f"2026-11-21T10:0{num}:00+0000"}))
        lines = [{"step": s, "train/loss": 5.0 - s * 0.1} for s in range(1, 11)]
        lines.append({"step": 10, "val/loss": loss, "val/ppl": 1.0})
        (job / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return sweep


def table_rows(markdown: str) -> list[list[str]]:
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows if "---" not in row]


def test_overrides_are_parsed_as_hydra_does():
    parsed = parse_overrides(["training.learning_rate=1e-4", "training.batch_size=8", "model=nano",
                              "+tag=x", "training.compile=true", "a=1,2"])
    assert parsed["training.learning_rate"] == pytest.approx(1e-4)
    assert isinstance(parsed["training.batch_size"], int) and parsed["model"] == "nano"
    assert parsed["tag"] == "x" and parsed["training.compile"] is True and parsed["a"] == "1,2"


def test_swept_keys_come_from_the_sweep_command_and_differing_values(tmp_path):
    sweep = make_sweep(tmp_path, [2.0, 1.9, 1.8, 1.7])
    jobs = [{"model": "nano", "training.seed": s} for s in (1, 2)]
    assert swept_keys(sweep, jobs) == ["training.learning_rate", "training.batch_size", "training.seed"]


def test_sweep_table_has_a_column_per_swept_key_and_marks_the_best(tmp_path):
    losses = [2.1, 1.95, 1.80, 1.99]
    sweep = make_sweep(tmp_path, losses)
    summary = summarize.write_sweep_summary(sweep)
    text = (sweep / "experiments.md").read_text()
    header, *rows = table_rows(text)
    assert header[1:4] == ["job", "training.learning_rate", "training.batch_size"]
    assert len(rows) == 4 and [r[1] for r in rows] == ["0", "1", "2", "3"]
    assert [r[2] for r in rows] == ["0.0001", "0.0001", "0.0003", "0.0003"]
    assert [r[3] for r in rows] == ["8", "16", "8", "16"]
    best = losses.index(min(losses))
    assert [r[0] for r in rows] == ["★" if i == best else "" for i in range(4)]
    assert summary.best.job == str(best) and f"**Best: job {best}**" in text
    assert rows[best][header.index("tokens/s")] == "1,234" and rows[0][header.index("wall")] == "1m 15s"
    assert "[dir](2/)" in rows[2][-1]
    assert (sweep / "sweep_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "![curves of every run](sweep_curves.png)" in text


def test_failed_and_unfinished_jobs_are_rows_and_never_the_best(tmp_path):
    sweep = make_sweep(tmp_path, [2.0, 0.5, 1.9, None], ["completed", "failed", "completed", None])
    summary = summarize.write_sweep_summary(sweep, plot=False)
    rows = table_rows((sweep / "experiments.md").read_text())[1:]
    assert "**failed**: ConfigError: broken" in rows[1]
    assert "no result" in rows[3][-2]
    assert summary.best.job == "2" and [r.job for r in summary.failed] == ["1", "3"]
    assert "sweep.resume=true" in (sweep / "experiments.md").read_text()


def test_sweep_command_and_its_resume_form(tmp_path):
    sweep = make_sweep(tmp_path, [2.0])
    assert sweep_command(sweep) == ("python -m ttexp -m hydra/launcher=joblib model=nano "
                                    "training.learning_rate=1e-4,3e-4 training.batch_size=8,16")
    assert sweep_command(sweep, resume=True).endswith(f"hydra.sweep.dir={sweep} sweep.resume=true")


def test_journal_lists_sweeps_and_single_runs_and_keeps_the_teams_notes(tmp_path):
    make_sweep(tmp_path / "outputs", [2.0, 1.5])
    single = tmp_path / "outputs/runs/r1"
    single.mkdir(parents=True)
    (single / "result.json").write_text(json.dumps({"status": "failed", "name": "solo", "overrides": [],
                                                    "error": "DataError: no file"}))
    copy = single / "wandb/offline-run-1/files"  # W&B's copy of the record is not another run
    copy.mkdir(parents=True)
    (copy / "result.json").write_text((single / "result.json").read_text())
    journal = tmp_path / "experiments/experiments.md"
    summarize.write_journal(journal, [tmp_path / "outputs"])
    text = journal.read_text()
    assert summarize.GENERATED_MARKER in text and "## Sweep" in text and "## Single runs" in text
    assert "[dir](../outputs/sweep/1/)" in text and "**failed**: DataError: no file" in text
    assert text.count("DataError: no file") == 1
    notes = "# Our journal\n\nConclusion: batch 16 wins.\n"
    journal.write_text(notes + summarize.GENERATED_MARKER + "\nold tables\n")
    summarize.write_journal(journal, [tmp_path / "outputs"])
    text = journal.read_text()
    assert text.startswith(notes) and "old tables" not in text and "## Sweep" in text


def test_journal_is_only_refreshed_for_runs_under_the_outputs_root(tmp_path):
    sweep = make_sweep(tmp_path / "outputs", [2.0])
    journal = tmp_path / "journal.md"
    assert summarize.refresh_journal(str(journal), str(tmp_path / "elsewhere"), sweep) is None
    assert not journal.exists()
    assert summarize.refresh_journal(None, str(tmp_path / "outputs"), sweep) is None
    assert summarize.refresh_journal(str(journal), str(tmp_path / "outputs"), sweep) == journal
    assert journal.is_file()


def test_summarize_command_by_hand(tmp_path, capsys):
    sweep = make_sweep(tmp_path, [2.0, 1.9, 1.8, 1.7], ["completed", "completed", "failed", "completed"])
    assert summarize.main([str(tmp_path), "--journal", str(tmp_path / "j.md"), "--no-plot"]) == 1
    out = capsys.readouterr().out
    assert "| ★ | 3 |" in out and (sweep / "experiments.md").is_file() and (tmp_path / "j.md").is_file()
    with pytest.raises(SystemExit) as exc:
        summarize.main([str(tmp_path / "missing")])
    assert exc.value.code == 2 and "is not a directory" in capsys.readouterr().err


def test_resume_skips_only_the_same_completed_job(tmp_path):
    sweep = make_sweep(tmp_path, [2.0, 1.9], ["completed", "failed"])
    job0 = ["model=nano", "training.learning_rate=0.0001", "training.batch_size=8"]
    assert completed_result(sweep / "0", job0 + ["sweep.resume=true"]).best_val_loss == 2.0
    assert completed_result(sweep / "1", job0) is None  # failed: runs again
    assert completed_result(sweep / "0", job0[:2] + ["training.batch_size=32"]) is None  # other job
    assert completed_result(tmp_path / "nothing", job0) is None


def test_readable_run_name_shows_the_swept_values():
    overrides = ["data.path=/a/b.txt", "training.learning_rate=0.0001", "training.batch_size=8", "logger=wandb"]
    assert run_display_name("nano_cpu", overrides, ["training.learning_rate"]) == "nano_cpu learning_rate=0.0001"
    assert run_display_name("nano_cpu", overrides) == "nano_cpu learning_rate=0.0001 batch_size=8"
