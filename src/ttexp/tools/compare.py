"""``python -m ttexp.compare RUN_OR_SWEEP ...``: what differs between runs, and what it changed.

    python -m ttexp.compare outputs/sweeps/2026-11-21/10-12-03-123456/0 outputs/sweeps/.../1
    python -m ttexp.compare outputs/sweeps/2026-11-21/10-12-03-123456          # every job of a sweep
    python -m ttexp.compare RUN_A RUN_B --json > diff.json

For two or more runs (a sweep directory stands for its jobs) it prints only the config keys whose
values differ (from each run's ``resolved.yaml``), the metrics of each run with their difference
from the first (best and final validation loss, tokens/s, MFU, wall time, steps), the git commits
and package versions when they differ (``result.json``), and writes one overlay plot of the
curves (``compare_curves.png``; ``--plot PATH``, ``--no-plot``). ``--json`` prints the same facts
as JSON instead of tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ttexp.record.result import RESULT_NAME, RunResult
from ttexp.record.run_record import RESOLVED_NAME
from ttexp.sweeps.figures import plot_overlay
from ttexp.sweeps.summarize import JobRow
from ttexp.sweeps.sweep import is_sweep_dir, job_dirs

NOT_CONFIG = {"output_dir", "resume", "training.stop_at_step"}
"""Keys that say where and how far a run was driven, not what it trains (its steps are a metric)."""

METRICS = ("best_val_loss", "final_val_loss", "tokens_per_s", "mfu", "wall_s", "steps_done")


@dataclass
class Run(JobRow):
    """One run as compare reads it: a summary row (the overlay plot takes it as it is) plus its
    resolved config, flattened to dotted keys; ``params`` holds the keys that differ."""

    config: dict[str, Any] = field(default_factory=dict)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories for ``paths``: a run directory is itself, a sweep is its jobs in order.

    Raises:
        FileNotFoundError: a path that is neither a run (no result.json) nor a sweep.
    """
    out: list[Path] = []
    for path in paths:
        if is_sweep_dir(path):
            out += [d for d in job_dirs(path) if (d / RESULT_NAME).is_file()]
        elif (path / RESULT_NAME).is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"{path} holds no {RESULT_NAME} and is not a sweep directory; "
                                    "pass run directories (outputs/runs/...) or sweep directories.")
    return out


def load_run(run_dir: Path, label: str) -> Run:
    """A run's result.json and its resolved config, flattened (``{}`` when it has none)."""
    result = RunResult.read(run_dir) or RunResult(status="no result")
    try:
        config = flatten(yaml.safe_load((run_dir / RESOLVED_NAME).read_text()) or {})
    except (OSError, yaml.YAMLError):
        config = {}
    return Run(label, run_dir, {}, result, config)


def compare(runs: list[Run]) -> dict[str, Any]:
    """The facts of a comparison: config differences, metrics and deltas from the first run, git
    and package-version differences. JSON-able."""
    keys = sorted({k for r in runs for k in r.config} - NOT_CONFIG)
    differ = [k for k in keys if len({json.dumps(r.config.get(k), default=str) for r in runs}) > 1]
    for r in runs:
        r.params = {k: r.config.get(k) for k in differ}
    metrics = {}
    for name in METRICS:
        values = [getattr(r.result, name) for r in runs]
        base = values[0]
        metrics[name] = {"values": values, "delta": [
            v - base if isinstance(v, (int, float)) and isinstance(base, (int, float)) else None
            for v in values]}
    commits = [{"commit": r.result.git.get("commit"), "dirty": r.result.git.get("dirty")} for r in runs]
    packages = sorted({k for r in runs for k in r.result.versions})
    versions = {k: [r.result.versions.get(k) for r in runs] for k in packages
                if len({r.result.versions.get(k) for r in runs}) > 1}
    return {"runs": [{"label": r.job, "dir": str(r.dir), "status": r.status} for r in runs],
            "config_differences": {k: [r.config.get(k) for r in runs] for k in differ},
            "metrics": metrics,
            "git": {"same": len({json.dumps(c) for c in commits}) == 1, "runs": commits},
            "versions_differ": versions}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return "–" if value is None else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]


def render(facts: dict[str, Any]) -> str:
    """The comparison as plain-text tables."""
    labels = [r["label"] for r in facts["runs"]]
    out = ["Runs:"] + [f"  {r['label']}: {r['dir']} ({r['status']})" for r in facts["runs"]]
    diff = facts["config_differences"]
    out += ["", f"Config differences ({len(diff)} key{'s' if len(diff) != 1 else ''}):"]
    out += ["  " + x for x in _table(["key", *labels], [[k, *v] for k, v in diff.items()])] \
        if diff else ["  none: the runs have the same config"]
    rows = [[name, *m["values"], *m["delta"][1:]] for name, m in facts["metrics"].items()]
    out += ["", "Metrics (delta = run minus " + labels[0] + "):"]
    out += ["  " + x for x in _table(["metric", *labels, *[f"delta {x}" for x in labels[1:]]], rows)]
    git = facts["git"]
    out += ["", "Git: " + (f"same commit {git['runs'][0]['commit']} (dirty: {git['runs'][0]['dirty']})"
                           if git["same"] else "differs")]
    if not git["same"]:
        out += ["  " + x for x in _table(["run", "commit", "dirty"],
                                         [[lab, g["commit"], g["dirty"]] for lab, g in zip(labels, git["runs"])])]
    versions = facts["versions_differ"]
    out += ["Package versions: " + ("the same" if not versions else "differ")]
    if versions:
        out += ["  " + x for x in _table(["package", *labels], [[k, *v] for k, v in versions.items()])]
    return "\n".join(out)


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m ttexp.compare RUN_OR_SWEEP... [--json] [--plot PATH | --no-plot]``."""
    parser = argparse.ArgumentParser(prog="python -m ttexp.compare",
                                     description="Compare runs: config differences, metric deltas, "
                                                 "git and package versions, one overlay plot.")
    parser.add_argument("paths", nargs="+", type=Path, help="run directories or sweep directories")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.add_argument("--plot", type=Path, default=Path("compare_curves.png"),
                        help="where to write the overlay plot (default: ./compare_curves.png)")
    parser.add_argument("--no-plot", action="store_true", help="write no plot")
    args = parser.parse_args(argv)
    try:
        dirs = find_runs(args.paths)
    except FileNotFoundError as exc:
        parser.error(str(exc))
    if len(dirs) < 2:
        parser.error(f"{len(dirs)} run(s) found under {' '.join(map(str, args.paths))}; compare needs two or more.")
    runs = [load_run(d, chr(ord("A") + i) if i < 26 else str(i)) for i, d in enumerate(dirs)]
    facts = compare(runs)
    if not args.no_plot:
        title = "compare " + " vs ".join(r.job for r in runs)
        plotted = plot_overlay(args.plot, runs, list(facts["config_differences"]), None, title)
        facts["plot"] = str(plotted) if plotted else None
    print(json.dumps(facts, indent=2, default=str) if args.json else render(facts)
          + (f"\nPlot: {facts['plot']}" if facts.get("plot") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
