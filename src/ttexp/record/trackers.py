"""Trackers: services that receive a run's events beside the local record (W&B today).

The local record (:class:`ttexp.record.run_record.RunRecord`) is always written and owns the run directory's
files. A tracker gets the same events from it: every ``log_metrics`` line of metrics.jsonl, every
validation block of validation.txt, and ``finish`` with the final result.json contents. A tracker
that cannot start, or fails later, is dropped with a warning; the run and its local record go on.
"""

from __future__ import annotations

import logging
from typing import Protocol

from ttexp.config.schema import RunConfig
from ttexp.record.result import RunResult
from ttexp.record.run_record import RunRecord

log = logging.getLogger("ttexp")


class Tracker(Protocol):
    """What RunRecord calls on each tracker (every call may raise; RunRecord drops it then)."""

    name: str

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Metrics at optimizer step ``step``: ``train/loss``, ``train/lr``, ``train/grad_norm``,
        ``train/tokens_per_s`` every step; ``val/loss``, ``val/ppl`` at validations."""

    def log_validation(self, step: int, loss: float, samples: list[tuple[str, str]]) -> None:
        """The validation samples at ``step``: (prompt, completion) pairs."""

    def finish(self, result: RunResult) -> None:
        """The run ended (result.json contents, ``status`` included); release everything. Called
        once, before the next job of a sweep starts."""


def attach_trackers(cfg: RunConfig, record: RunRecord) -> None:
    """Start the trackers ``cfg.logger`` asks for and add them to ``record``. Never raises."""
    if not cfg.logger.wandb.enabled:
        return
    from ttexp.record.wandb_tracker import (
        WandbTracker,  # imports wandb: only when asked for
    )

    try:
        tracker = WandbTracker.start(cfg, record)
    except Exception as exc:  # noqa: BLE001 - W&B must never stop a run
        log.warning("W&B could not start (%s: %s). The run goes on with the local record only; "
                    "check `wandb login`, or use logger.wandb.mode=offline.", type(exc).__name__, exc)
        record.update(wandb={"error": f"{type(exc).__name__}: {exc}"})
        return
    record.add_tracker(tracker)
    record.update(wandb=tracker.info())
