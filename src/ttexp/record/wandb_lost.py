"""A lost run's W&B run, closed as lost: a SIGKILLed run never calls ``wandb.finish``, so its W&B
run would read ``running`` (or ``crashed``) for ever.

When the summaries find a run ``lost`` (``python -m ttexp.summarize``, a sweep's experiments.md,
the journal, all through :attr:`ttexp.sweeps.summarize.JobRow.liveness`: a record still
``running`` whose writer is gone, or one its supervisor closed as ``lost``) they call
:func:`close_lost_wandb_run`: if the record names a W&B run (``result.json``'s ``wandb``: id,
project, entity, mode), that run is re-opened with W&B's own API (same id, ``resume="allow"``,
same mode, files under the same run directory, so offline works), its summary gets
``status: lost``, ``lost/last_step``, ``lost/last_checkpoint`` and ``lost/reason``, and it is
finished with exit code 1. Once per lost start of the run:
``<run dir>/wandb/lost.json`` records that it was done (or why it could not be), and the next start
of the run (:class:`ttexp.record.wandb_tracker.WandbTracker`) removes it. When that resumed run
completes, the same W&B run's summary reads ``status: completed`` (one W&B run per job).

Never raises and never fails the caller: a missing wandb, or any error of W&B's, is one warning line.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Optional

from filelock import FileLock, Timeout

from ttexp.files import write_json_atomic
from ttexp.record.liveness import busy_message, last_checkpoint, last_logged_step

LOST_MARK = Path("wandb") / "lost.json"
"""Written once the lost run's W&B run was closed as lost (or the attempt failed): never twice."""
INIT_TIMEOUT_S = 20.0
"""Bound on ``wandb.init`` here (a reader must not hang on an unreachable server; W&B's default is 90 s)."""

log = logging.getLogger("ttexp")


def close_lost_wandb_run(run_dir: Path, result: Any, reason: str = "") -> Optional[str]:
    """Close the W&B run of lost run ``run_dir`` as ``lost`` (see the module docstring).

    Args:
        run_dir: the run directory (holds result.json, wandb/, checkpoints/).
        result: its :class:`ttexp.record.result.RunResult` (None: nothing to do).
        reason: why the run is lost (e.g. "its process (pid 12 on host) is gone").

    Returns:
        What was done, as a sentence, or None when there was nothing to do (no W&B run in the
        record, ``mode=disabled``, done before, the directory is held by a live run).
    """
    info = getattr(result, "wandb", None) or {}
    run_dir = Path(run_dir)
    if not info.get("id") or info.get("mode") in (None, "disabled") or (run_dir / LOST_MARK).exists():
        return None
    if busy_message(run_dir):  # a live run (a resume) holds the directory: it owns the W&B run
        return None
    try:
        lock = FileLock(str(run_dir / "wandb" / ".lost.lock"), timeout=0)
        lock.acquire()
    except (Timeout, OSError):  # another reader is closing it right now
        return None
    try:
        if (run_dir / LOST_MARK).exists():
            return None
        step, ckpt = last_logged_step(run_dir), last_checkpoint(run_dir)
        mark = {"id": info["id"], "time": time.time(), "last_step": step,
                "last_checkpoint": ckpt.name if ckpt else None}
        try:
            _finish_as_lost(run_dir, info, step, ckpt.name if ckpt else None, reason)
            said = f"W&B run {info['id']} ({info['mode']}) marked lost at step {step}"
            log.info("%s.", said)
        except Exception as exc:  # noqa: BLE001 - wandb missing, no network, any W&B error
            said = (f"Could not mark W&B run {info['id']} lost ({type(exc).__name__}: {exc}); it keeps "
                    f"its last state. Delete {run_dir / LOST_MARK} to try again.")
            mark["error"] = f"{type(exc).__name__}: {exc}"
            log.warning("%s", said)
        write_json_atomic(run_dir / LOST_MARK, mark)
        return said
    finally:
        lock.release()


def _finish_as_lost(run_dir: Path, info: dict, step: Optional[int], ckpt: Optional[str],
                    reason: str) -> None:
    import wandb  # only here: the import alone costs over half a second

    run = wandb.init(id=info["id"], resume="allow", mode=info["mode"], dir=str(run_dir),
                     project=info.get("project") or None, entity=info.get("entity") or None,
                     reinit="create_new",  # never touches a run this process has open
                     settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S, console="off", silent=True,
                                             x_disable_stats=True))
    try:
        run.summary.update({"status": "lost", "lost/last_step": step, "lost/last_checkpoint": ckpt,
                            "lost/reason": reason or "its process stopped without closing the run"})
    finally:
        run.finish(exit_code=1)
