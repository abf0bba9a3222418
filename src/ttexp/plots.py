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
