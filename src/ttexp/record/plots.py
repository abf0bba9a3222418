"""training_curves.png: loss (train per step, validation where it was measured) and learning rate."""

from __future__ import annotations

from pathlib import Path


def plot_training_curves(path: Path, history: dict[str, list[tuple[int, float]]], title: str) -> None:
    """Two panels: train loss with validation loss markers at their real steps; learning rate.

    Args:
        path: PNG file to write.
        history: ``{"train/loss": [(step, value)], "val/loss": [...], "train/lr": [...]}``.
        title: figure title (the run name).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(
        2, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    train = history.get("train/loss", [])
    val = history.get("val/loss", [])
    if train:
        ax_loss.plot(*zip(*train), label="train loss", linewidth=1.0, alpha=0.8)
    if val:
        ax_loss.plot(*zip(*val), "o-", label="validation loss", markersize=4)
    ax_loss.set_ylabel("loss (nats/token)")
    ax_loss.set_title(title)
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    lr = history.get("train/lr", [])
    if lr:
        ax_lr.plot(*zip(*lr), color="tab:green")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimizer step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_sweep_curves(path: Path, runs: list[dict], title: str) -> None:
    """Overlay every run of a sweep: training loss (smoothed) and validation loss, one colour per run.

    Args:
        path: PNG file to write.
        runs: one dict per run with ``label`` (str), ``train`` and ``val`` (lists of
            ``(step, loss)``), ``best`` (bool: drawn thicker) and ``ok`` (bool: False draws dashed).
        title: figure title (the sweep).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    colours = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")
    for i, run in enumerate(runs):
        style = {"color": colours(i % colours.N), "linewidth": 2.6 if run["best"] else 1.2,
                 "linestyle": "-" if run["ok"] else "--"}
        label = ("★ " if run["best"] else "") + run["label"]
        if run["train"]:
            steps, losses = zip(*run["train"])
            ax_train.plot(steps, _smooth(list(losses)), label=label, alpha=0.9, **style)
        if run["val"]:
            ax_val.plot(*zip(*run["val"]), marker="o", markersize=3, label=label, **style)
    ax_train.set_title("training loss (moving average)")
    ax_val.set_title("validation loss")
    ax_train.set_ylabel("loss (nats/token)")
    for ax in (ax_train, ax_val):
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    handles, labels = ax_val.get_legend_handles_labels()
    if not handles:
        handles, labels = ax_train.get_legend_handles_labels()
    if handles:
        ax_val.legend(handles, labels, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _smooth(values: list[float]) -> list[float]:
    """Trailing moving average over about 2% of the run (at least 1 point), so curves separate."""
    window = max(1, len(values) // 50)
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_loss_grid(path: Path, xs: list[str], ys: list[str], grid: list[list], x_label: str,
                   y_label: str, title: str) -> None:
    """A heat map of best validation loss: one cell per (x, y) value, its loss written in it.

    Args:
        path: PNG file to write.
        xs, ys: the tick labels of the two swept keys (columns, rows), in ascending order.
        grid: ``grid[row][col]`` = the loss in nats/token at (xs[col], ys[row]); None = no run.
        x_label, y_label: the swept keys.
        title: figure title (the sweep).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=float)
    fig, ax = plt.subplots(figsize=(1.4 * len(xs) + 3, 1.0 * len(ys) + 2.5))
    image = ax.imshow(values, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(xs)), xs)
    ax.set_yticks(range(len(ys)), ys)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    low = np.nanmin(values)
    for r, row in enumerate(grid):
        for c, v in enumerate(row):
            if v is not None:
                ax.text(c, r, f"{v:.3f}" + (" ★" if v == low else ""), ha="center", va="center",
                        color="white" if v > np.nanmean(values) else "black", fontsize=9)
    fig.colorbar(image, ax=ax, label="best validation loss (nats/token)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
