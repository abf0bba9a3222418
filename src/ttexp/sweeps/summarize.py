"""experiments.md: tables of runs and sweeps, rebuilt from the ``result.json`` files on disk.

    python -m ttexp.summarize outputs/sweeps/2026-11-21/09-14-13      # one sweep
    python -m ttexp.summarize outputs --journal experiments/experiments.md

Each sweep directory gets ``experiments.md`` (one table: a column per swept key, final and best
validation loss, tokens/s, wall time, status, links; the best run marked with ★) and
``sweep_curves.png`` (every run's curves overlaid). The journal lists every sweep (newest first)
and the single runs under one folder. ttexp refreshes these after every job, run and sweep; this
command does the same by hand (after a crash, or for a SLURM sweep whose controller is gone).
"""

from __future__ import annotations

import argparse
from collections import Counter
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ttexp.files import write_text_atomic
from ttexp.record.job import (format_value, parse_overrides, read_multirun, resume_command,
                             short_key, swept_keys)
from ttexp.record.provenance import JOURNAL_MARKER
from ttexp.record.liveness import Liveness, last_state, liveness
from ttexp.record.result import RESULT_NAME, RunResult
from ttexp.record.run_record import CURVES_NAME
from ttexp.record.wandb_lost import close_lost_wandb_run
from ttexp.sweeps.figures import (
    HEATMAP_NAME,
    SWEEP_PLOT_NAME,
    plot_heatmap,
    plot_overlay,
)
from ttexp.sweeps.halving import rung_label
from ttexp.sweeps.markdown import (
    md_cell,
    md_duration,
    md_link,
    md_loss,
    md_settings_table,
    md_shown,
    md_status,
    md_verdict_lines,
)
from ttexp.sweeps.stats import SEED_KEY, Setting, Verdict, group_settings, verdict
from ttexp.sweeps.sweep import (
    expected_jobs,
    is_sweep_dir,
    job_dirs,
    job_overrides,
    read_result,
    sweep_command,
)

SUMMARY_NAME = "experiments.md"
# Text above this line in the journal is the team's own and is kept; below it is regenerated.
GENERATED_MARKER = JOURNAL_MARKER
JOURNAL_HEADER = """# Experiments

The team's journal. Write notes and conclusions above the marker line below; ttexp keeps them.
The tables under it are rebuilt from each run's `result.json` after every run and sweep, or by hand
with `python -m ttexp.summarize outputs --journal experiments/experiments.md`.
"""
MAX_SINGLE_RUNS = 50


@dataclass
class JobRow:
    """One run: its directory, its overrides (parsed) and its result.json (None if none yet)."""

    job: str
    dir: Path
    params: dict[str, Any]
    result: Optional[RunResult]

    @property
    def status(self) -> str:
        return self.liveness.status if self.result else "no result"

    @property
    def liveness(self) -> Liveness:
        """:func:`ttexp.record.liveness.liveness` of this row (read once: heartbeats move). A lost
        run's W&B run is closed as lost here, once (:mod:`ttexp.record.wandb_lost`)."""
        if "_live" not in self.__dict__:
            live = self.__dict__["_live"] = liveness(self.dir, str(self.result.status) if self.result else "")
            if live.status == "lost":
                close_lost_wandb_run(self.dir, self.result, live.reason or self.result.error or "")
        return self.__dict__["_live"]

    @property
    def note(self) -> Optional[str]:
        """A job that did not complete: its error, or why it is lost, where it stopped, the resume."""
        if self.status == "lost":
            return (f"{self.liveness.reason or self.result.error}; {last_state(self.dir)}; continue "
                    f"with: {resume_command(self.dir, list(self.result.overrides))}")
        return self.result.error if self.result else None

    @property
    def best_val_loss(self) -> Optional[float]:
        return self.result.best_val_loss if self.result else None


@dataclass
class SweepSummary:
    """A sweep's rows, swept keys and best run (lowest best validation loss among completed runs)."""

    dir: Path
    swept: list[str]
    rows: list[JobRow]
    best: Optional[JobRow] = None
    plot: Optional[Path] = None
    failed: list[JobRow] = field(default_factory=list)
    rungs: list[int] = field(default_factory=list)
    """sweep.halving.rungs of a successive-halving sweep; [] for a plain grid."""
    settings: list[Setting] = field(default_factory=list)
    """Settings of the non-seed keys, best first (several seeds each in a seed sweep)."""
    verdict: Optional[Verdict] = None
    """A seed sweep's verdict; None for a single-seed sweep."""
    heatmap: Optional[Path] = None


def collect_sweep(sweep_dir: Path) -> SweepSummary:
    """Read every job of ``sweep_dir`` from disk (no plotting, nothing written).

    The best run is the completed one with the lowest best validation loss; in a halving sweep only
    the jobs that reached the furthest step compete; in a seed sweep (``training.seed`` swept) no
    single job is best: the settings are compared (:func:`ttexp.sweeps.stats.verdict`) and the
    best job of the winning setting is named only when the setting wins by more than the noise.
    """
    sweep_dir = Path(sweep_dir)
    rows = [JobRow(job=str(d.relative_to(sweep_dir)), dir=d, params=parse_overrides(job_overrides(d)),
                   result=read_result(d)) for d in job_dirs(sweep_dir)]
    swept = swept_keys(sweep_dir, [r.params for r in rows])
    halving = ((read_multirun(sweep_dir).get("sweep") or {}).get("halving") or {}).get("rungs") or []
    done = [r for r in rows if r.status == "completed" and r.best_val_loss is not None]
    if halving and done:
        furthest = max(r.result.steps_done or 0 for r in done)
        done = [r for r in done if (r.result.steps_done or 0) == furthest]
    settings = group_settings([(r.job, r.params, r.best_val_loss if r in done else None,
                                r.result.final_val_loss if r.result else None) for r in rows],
                              [k for k in swept if k != SEED_KEY])
    best = min(done, key=lambda r: r.best_val_loss) if done else None
    judged = None
    if SEED_KEY in swept:
        judged = verdict(settings, _describe)
        best = min((r for r in done if r.job in judged.best.jobs), key=lambda r: r.best_val_loss,
                   default=None) if judged.best else None
    failed = [r for r in rows if r.status != "completed"]
    plot, heat = sweep_dir / SWEEP_PLOT_NAME, sweep_dir / HEATMAP_NAME
    return SweepSummary(sweep_dir, swept, rows, best, plot if plot.is_file() else None, failed,
                        [int(x) for x in halving], settings, judged,
                        heat if heat.is_file() else None)


def _describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{short_key(k)}={format_value(v)}" for k, v in params.items()) or "the one setting"


def plot_sweep(summary: SweepSummary) -> Optional[Path]:
    """Write ``sweep_curves.png`` (every run's curves overlaid) and, when exactly two numeric keys
    vary, ``sweep_heatmap.png``; returns the overlay's path (None when no run logged a step)."""
    title = f"sweep {summary.dir}"
    summary.plot = plot_overlay(summary.dir / SWEEP_PLOT_NAME, summary.rows, summary.swept,
                                summary.best, title)
    summary.heatmap = plot_heatmap(summary.dir / HEATMAP_NAME, summary.rows, summary.swept, title)
    return summary.plot


# -- markdown -------------------------------------------------------------------------------------


def _links(row: JobRow, base: Path) -> str:
    links = [f"[dir]({md_link(row.dir, base)}/)"]
    if (row.dir / CURVES_NAME).is_file():
        links.append(f"[curves]({md_link(row.dir / CURVES_NAME, base)})")
    url = ((row.result.wandb if row.result else None) or {}).get("url")
    if url:
        links.append(f"[W&B]({url})")
    return " · ".join(links)


def _result_cells(row: JobRow, best: bool) -> list[str]:
    r = row.result or RunResult(status=row.status)
    best_loss = md_loss(r.best_val_loss)
    if r.best_val_step is not None and best_loss != "–":
        best_loss += f" (step {r.best_val_step})"
    if best:
        best_loss = f"**{best_loss}**"
    tps = r.tokens_per_s
    return [md_loss(r.final_val_loss), best_loss,
            f"{tps:,.0f}" if isinstance(tps, (int, float)) and tps else "–",
            md_duration(r.wall_s) if row.status not in ("running", "lost") else "–", md_status(row)]


def render_sweep(summary: SweepSummary, base: Path, level: int = 2) -> str:
    """The markdown section of one sweep; links are relative to ``base`` (the md file's folder)."""
    s = summary
    counts = Counter(row.status for row in s.rows)
    started = min((r.result.started_at or "" for r in s.rows if r.result), default="")
    out = [f"{'#' * level} Sweep `{md_shown(s.dir)}`", ""]
    if command := sweep_command(s.dir):
        out.append(f"- Command: `{command}`")
    total = expected_jobs(s.dir) or 0  # jobs not started yet are counted too, never hidden
    jobs = f"{len(s.rows)} of {total} started" if total > len(s.rows) else str(len(s.rows))
    out.append(f"- Jobs: {jobs} (" + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
               + ")" + (f", started {started}" if started else ""))
    out += md_verdict_lines(s)
    if s.failed:
        out.append("- Not completed: " + ", ".join(f"{r.job} ({r.status})" for r in s.failed)
                   + f". Once the sweep has ended, re-run them (completed jobs are skipped): "
                   f"`{sweep_command(s.dir, resume=True)}`")
    out.append("")
    if s.plot is not None:
        out += [f"![curves of every run]({md_link(s.plot, base)})", ""]
    if s.heatmap is not None:
        out += [f"![best validation loss over the two swept keys]({md_link(s.heatmap, base)})", ""]
    if s.verdict is not None:
        out += md_settings_table(s)
    rung = ["reached"] if s.rungs else []
    header = ["", "job", *s.swept, *rung, "final val loss", "best val loss", "tokens/s", "wall",
              "status", "links"]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "---|" * len(header))
    for row in s.rows:
        is_best = row is s.best
        cells = ["★" if is_best else "", row.job,
                 *[format_value(row.params[k]) if k in row.params else "–" for k in s.swept],
                 *([rung_label(row.result, s.rungs)] if s.rungs else []),
                 *_result_cells(row, is_best), _links(row, base)]
        out.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
    out.append("")
    return "\n".join(out)


def render_single_runs(run_dirs: list[Path], base: Path) -> str:
    """A table of single (non-sweep) runs, newest first, at most MAX_SINGLE_RUNS rows."""
    rows = [JobRow(d.name, d, parse_overrides(job_overrides(d)), read_result(d)) for d in run_dirs]
    rows.sort(key=lambda r: (r.result.started_at or "") if r.result else "", reverse=True)
    out = ["## Single runs", "",
           "| run | name | overrides | final val loss | best val loss | tokens/s | wall | status | links |",
           "|---|---|---|---|---|---|---|---|---|"]
    for row in rows[:MAX_SINGLE_RUNS]:
        overrides = " ".join(f"{k}={format_value(v)}" for k, v in row.params.items()
                             if "/" not in format_value(v) and not k.startswith("hydra"))
        cells = [row.job, (row.result.name or "–") if row.result else "–", overrides or "–",
                 *_result_cells(row, False), _links(row, base)]
        out.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
    if len(rows) > MAX_SINGLE_RUNS:
        out.append(f"\n{len(rows) - MAX_SINGLE_RUNS} older runs not shown.")
    out.append("")
    return "\n".join(out)


# -- writing --------------------------------------------------------------------------------------


def write_sweep_summary(sweep_dir: Path, plot: bool = True) -> SweepSummary:
    """Write ``<sweep_dir>/experiments.md`` (and ``sweep_curves.png`` when ``plot``); return the
    summary. Safe to call while jobs run and from several processes (files are replaced atomically)."""
    summary = collect_sweep(Path(sweep_dir))
    if plot:
        plot_sweep(summary)
    text = (f"# Experiments: sweep {summary.dir.name}\n\nGenerated {time.strftime('%Y-%m-%d %H:%M:%S')} "
            f"from the result.json files below (`python -m ttexp.summarize {shlex.quote(str(summary.dir))}`).\n\n"
            + render_sweep(summary, summary.dir))
    write_text_atomic(summary.dir / SUMMARY_NAME, text)
    return summary


def find_runs(roots: list[Path]) -> tuple[list[Path], list[Path]]:
    """(sweep directories, single-run directories) under ``roots``; a root may itself be either."""
    sweeps: set[Path] = set()
    singles: set[Path] = set()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a directory: pass run, sweep or outputs folders.")
        if is_sweep_dir(root):
            sweeps.add(root)
        sweeps |= {p.parent for p in root.rglob("multirun.yaml")}
    for root in roots:
        for result in Path(root).rglob(RESULT_NAME):
            run_dir = result.parent
            if not any(s == run_dir or s in run_dir.parents for s in sweeps):
                singles.add(run_dir)
    # A copy inside a run (W&B keeps result.json under <run>/wandb/) is not a run of its own.
    singles = {d for d in singles if not any(p in singles for p in d.parents)}
    return sorted(sweeps, key=str, reverse=True), sorted(singles, key=str)


def write_journal(journal: Path, roots: list[Path]) -> Path:
    """Regenerate the journal from every sweep and single run under ``roots``.

    Text above :data:`GENERATED_MARKER` in an existing journal is kept. Each sweep section links its
    own ``sweep_curves.png`` (written by :func:`write_sweep_summary`; nothing is plotted here).
    """
    journal = Path(journal)
    kept = JOURNAL_HEADER
    if journal.is_file():
        old = journal.read_text(encoding="utf-8")
        if GENERATED_MARKER in old:
            kept = old.split(GENERATED_MARKER, 1)[0].rstrip() + "\n"
    sweeps, singles = find_runs(roots)
    base = journal.parent.resolve()
    parts = [kept, GENERATED_MARKER, "",
             f"Regenerated {time.strftime('%Y-%m-%d %H:%M:%S')} from the runs under "
             f"{', '.join(md_shown(r) for r in roots)}: {len(sweeps)} sweep(s), {len(singles)} single "
             f"run(s).", ""]
    for sweep in sweeps:
        summary = collect_sweep(sweep)
        summary.dir = summary.dir.resolve()
        for row in summary.rows:
            row.dir = row.dir.resolve()
        if summary.plot is not None:
            summary.plot = summary.plot.resolve()
        parts.append(render_sweep(summary, base))
    if singles:
        parts.append(render_single_runs([d.resolve() for d in singles], base))
    write_text_atomic(journal, "\n".join(parts))
    return journal


def refresh_journal(journal: Optional[str], outputs_root: str, target: Path) -> Optional[Path]:
    """Regenerate the journal when ``target`` (a run or sweep directory) lies under ``outputs_root``;
    None when there is no journal or the target lies elsewhere (tests, scratch directories)."""
    if not journal:
        return None
    root = Path(outputs_root).resolve()
    target = Path(target).resolve()
    if target != root and root not in target.parents:
        return None
    return write_journal(Path(journal), [root])


def refresh_after_job(run_dir: Path, sweep_dir: Optional[Path], journal: Optional[str],
                      outputs_root: str, plot: bool = True) -> None:
    """After one job: refresh its sweep's experiments.md (in a sweep) or the journal (a single run).

    Never raises: a summary problem is logged as a warning and the job's own result stands.
    """
    import logging

    try:
        if sweep_dir is not None:
            write_sweep_summary(sweep_dir, plot=plot)
        else:
            refresh_journal(journal, outputs_root, run_dir)
    except Exception as exc:  # noqa: BLE001 - the run itself is done and recorded
        logging.getLogger("ttexp").warning(
            "Could not refresh experiments.md (%s: %s); run `python -m ttexp.summarize %s`.",
            type(exc).__name__, exc, shlex.quote(str(sweep_dir or run_dir)))


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m ttexp.summarize DIR... [--journal FILE] [--no-plot]``; exit 1 if a run failed."""
    parser = argparse.ArgumentParser(
        prog="python -m ttexp.summarize",
        description="Rebuild experiments.md for sweeps and runs from their result.json files.")
    parser.add_argument("dirs", nargs="+", type=Path,
                        help="sweep directories, run directories, or folders holding them (e.g. outputs)")
    parser.add_argument("--journal", type=Path, default=None,
                        help="also write a journal of everything under DIRS to this file "
                             "(e.g. experiments/experiments.md)")
    parser.add_argument("--no-plot", action="store_true", help="skip the sweep_curves.png overlays")
    args = parser.parse_args(argv)
    try:
        sweeps, singles = find_runs(args.dirs)
    except FileNotFoundError as exc:
        parser.error(str(exc))
    if not sweeps and not singles:
        parser.error(f"no result.json under {' '.join(map(str, args.dirs))}: pass sweep or run folders.")
    not_completed = 0
    for sweep in sweeps:
        summary = write_sweep_summary(sweep, plot=not args.no_plot)
        not_completed += len(summary.failed)
        print(render_sweep(summary, Path.cwd()))
        print(f"Wrote {sweep / SUMMARY_NAME}" + (f" and {summary.plot}" if summary.plot else ""))
        print()
    if singles:
        print(render_single_runs(singles, Path.cwd()))
        for row in [JobRow(d.name, d, {}, read_result(d)) for d in singles]:
            if row.status != "completed":
                not_completed += 1
                print(f"{row.dir}: {row.status}" + (f": {row.note}" if row.note else ""))
    if args.journal:
        print(f"Wrote {write_journal(args.journal, args.dirs)}")
    if not_completed:
        print(f"Exit status 1: {not_completed} run(s) did not complete (failed, diverged, "
              "interrupted, lost or still running; listed above).", file=sys.stderr)
    return 1 if not_completed else 0


if __name__ == "__main__":
    sys.exit(main())
