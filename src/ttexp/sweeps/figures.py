"""A sweep's figures: every run's curves overlaid (``sweep_curves.png``) and, when exactly two
numeric keys vary, a heat map of the best validation loss over them (``sweep_heatmap.png``).

Both read the jobs from disk (``metrics.jsonl``, ``result.json``) and are written atomically, so
they can be redrawn while a sweep runs. Summaries pass their rows in: anything with ``job``,
``dir``, ``params``, ``result``, ``status`` and ``best_val_loss`` (a ``summarize.JobRow``).
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any, Optional

from ttexp.record.job import format_value, short_key
from ttexp.record.run_record import METRICS_NAME
from ttexp.sweeps.stats import SEED_KEY

SWEEP_PLOT_NAME = "sweep_curves.png"
HEATMAP_NAME = "sweep_heatmap.png"


def curves(run_dir: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(train loss, validation loss) points from metrics.jsonl; empty lists when there is none."""
    train, val = [], []
    try:
        lines = (Path(run_dir) / METRICS_NAME).read_text().splitlines()
    except OSError:
        return train, val
    for line in lines:
        try:
            m = json.loads(line)
        except ValueError:
            continue  # a line being written right now
        if m.get("train/loss") is not None:
            train.append((m["step"], m["train/loss"]))
        if m.get("val/loss") is not None:
            val.append((m["step"], m["val/loss"]))
    return train, val


def label(row: Any, swept: list[str]) -> str:
    """``3: learning_rate=0.001 batch_size=8``: the job and its swept values."""
    parts = [f"{short_key(k)}={format_value(row.params[k])}" for k in swept if k in row.params]
    return f"{row.job}: " + " ".join(parts) if parts else f"job {row.job}"


def plot_overlay(path: Path, rows: list[Any], swept: list[str], best: Any, title: str) -> Optional[Path]:
    """Write every row's curves overlaid into ``path``; None when no run logged a step."""
    from ttexp.record.plots import plot_sweep_curves  # matplotlib: only when plotting

    runs = []
    for row in rows:
        train, val = curves(row.dir)
        runs.append({"label": label(row, swept), "train": train, "val": val,
                     "best": row is best, "ok": row.status == "completed"})
    if not any(r["train"] or r["val"] for r in runs):
        return None
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.png")
    plot_sweep_curves(tmp, runs, title)
    os.replace(tmp, path)
    return path


def heatmap_keys(rows: list[Any], swept: list[str]) -> Optional[tuple[str, str]]:
    """The two swept keys of a heat map: exactly two keys other than the seed vary and both are
    numeric; None otherwise."""
    keys = [k for k in swept if k != SEED_KEY]
    if len(keys) != 2:
        return None
    for k in keys:
        values = [row.params.get(k) for row in rows]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
            return None
    return keys[0], keys[1]


def plot_heatmap(path: Path, rows: list[Any], swept: list[str], title: str) -> Optional[Path]:
    """Write the heat map of best validation loss (mean over seeds) over the two swept numeric
    keys (:func:`heatmap_keys`) into ``path``; None when there is no such pair or no loss."""
    from ttexp.record.plots import plot_loss_grid  # matplotlib: only when plotting

    keys = heatmap_keys(rows, swept)
    if keys is None:
        return None
    x_key, y_key = keys
    xs = sorted({row.params[x_key] for row in rows})
    ys = sorted({row.params[y_key] for row in rows})
    cells: dict[tuple[Any, Any], list[float]] = {}
    for row in rows:
        if row.status == "completed" and row.best_val_loss is not None:
            cells.setdefault((row.params[x_key], row.params[y_key]), []).append(row.best_val_loss)
    if not cells:
        return None
    grid = [[statistics.fmean(cells[(x, y)]) if (x, y) in cells else None for x in xs] for y in ys]
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.png")
    plot_loss_grid(tmp, [format_value(x) for x in xs], [format_value(y) for y in ys], grid,
                   x_key, y_key, title)
    os.replace(tmp, path)
    return path
