"""The markdown pieces of experiments.md: cells, durations, links, and the lines that say how
sure a sweep is (the best run or setting, the seed verdict, the single-seed resolution, the
successive-halving cost) and the per-setting table of a seed sweep.

Rows and summaries come from :mod:`ttexp.sweeps.summarize` (``JobRow``, ``SweepSummary``); they are
read by attribute here, so this module does not import that one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional

from ttexp.record.job import format_value
from ttexp.sweeps.halving import total_steps
from ttexp.sweeps.stats import SEED_KEY, mean_std, single_seed_resolution


def md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_loss(x: Optional[float]) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) and math.isfinite(x) else "–"


def md_duration(seconds: Optional[float]) -> str:
    if not isinstance(seconds, (int, float)):
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


def md_status(row: Any) -> str:
    if row.status == "completed":
        return "completed"
    error = getattr(row, "note", None) if row.result else None
    if row.status == "running":
        return "running"
    return f"**{row.status}**" + (f": {error[:160]}" if error else "")


def md_link(target: Path, base: Path) -> str:
    """A relative link from the markdown file's folder ``base`` (forward slashes)."""
    return Path(os.path.relpath(target, base)).as_posix()


def md_shown(path: Path) -> str:
    """A path as a person would type it: relative to the current directory when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def md_verdict_lines(s: Any) -> list[str]:
    """The best run (or setting), and how far the sweep resolves differences at all."""
    out = []
    if s.best is not None:
        params = ", ".join(f"{k}={format_value(s.best.params[k])}" for k in s.swept if k in s.best.params)
        out.append(f"- **Best: job {s.best.job}** ({params or 'no swept keys'}): best validation loss "
                   f"{md_loss(s.best.best_val_loss)} at step {s.best.result.best_val_step}")
    elif s.verdict is None:
        out.append("- Best: none (no completed run with a validation loss)")
    if s.verdict is not None:
        seeds = sorted({s_.n for s_ in s.settings if s_.n})
        out.append(f"- Seeds: {'/'.join(map(str, seeds)) or 0} per setting. Verdict: {s.verdict.text}.")
    elif len([x for x in s.settings if x.n]) > 1:
        x = single_seed_resolution(s.settings)
        out.append("- 1 seed: differences below " + (
            f"~{x:.4f} are not resolved (the seed-to-seed spread of the repeated settings, x sqrt 2)"
            if x is not None else "~X are not resolved; X is unknown (no setting was repeated: "
            "sweep training.seed=1,2,3 too to measure it)") + ".")
    if s.rungs:
        done = [r.result for r in s.rows]
        full = len(s.rows) * max((r.max_steps or 0) for r in done if r) if any(done) else 0
        out.append(f"- Successive halving at steps {s.rungs}: {total_steps(done):,} optimizer steps "
                   f"trained, {total_steps(done) / full:.0%} of the full grid's {full:,}"
                   if full else f"- Successive halving at steps {s.rungs}")
    return out


def md_settings_table(s: Any) -> list[str]:
    """One row per setting of the non-seed keys: n and mean ± std over seeds, best first."""
    keys = [k for k in s.swept if k != SEED_KEY]
    out = ["| | " + " | ".join(keys or ["setting"]) + " | n | best val loss (mean ± std) | "
           "final val loss (mean ± std) | jobs |", "|" + "---|" * (len(keys or [1]) + 5)]
    for setting in s.settings:
        mark = "★" if s.verdict is not None and setting is s.verdict.best else ""
        values = [format_value(setting.params.get(k)) for k in keys] or ["–"]
        out.append("| " + " | ".join(md_cell(c) for c in [
            mark, *values, setting.n, mean_std(setting.mean, setting.std),
            mean_std(setting.final_mean, setting.final_std), ", ".join(setting.jobs)]) + " |")
    return out + [""]


