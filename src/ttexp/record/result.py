"""``result.json``: the one schema of a run's facts, written by :class:`~ttexp.record.run_record.RunRecord`
and read back by summaries, trackers, the worker's controller and ``task=eval``.

Every key a run may record is a field here; :meth:`RunResult.update` refuses any other, so a typo
in a writer fails loudly instead of writing a key no reader knows. Reading is lenient: keys this
version does not know (a record written by a newer ttexp) are kept in ``extra`` and written back.
Units: seconds, tokens, bytes, FLOP/s; losses in nats per token.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ttexp.errors import redact
from ttexp.files import write_text_atomic

RESULT_NAME = "result.json"

STATUSES = ("running", "completed", "failed", "diverged", "interrupted", "lost")
"""``running`` while the run lives; the others are final (:data:`ttexp.errors.EXIT_CODES`).
``lost`` is never written by the run itself: readers show it for a ``running`` record whose
heartbeat stopped (:func:`ttexp.record.liveness.liveness`), a supervising process writes it
when the job's process was killed, and a sweep job's training process writes it as it stops
because its supervisor (a joblib worker) was killed (:func:`ttexp.record.liveness.record_orphaned`)."""


@dataclass
class RunResult:
    """The facts of one run (``result.json``). ``None`` = not measured (yet)."""

    status: str = "running"
    name: Optional[str] = None
    task: Optional[str] = None
    model: Optional[str] = None
    hardware: Optional[str] = None
    overrides: list[str] = field(default_factory=list)
    """The command-line overrides that made this run (Hydra's task overrides)."""
    output_dir: Optional[str] = None
    started_at: Optional[str] = None
    ended_at: Optional[str] = None
    wall_s: Optional[float] = None
    """Seconds from the record's creation to its last write."""
    git: dict[str, Any] = field(default_factory=dict)
    """``commit``, ``dirty``, ``dirty_files``, ``changed_by_ttexp`` and ``repo`` of the project the
    run was launched from, taken before the run wrote anything (:mod:`ttexp.record.provenance`)."""
    versions: dict[str, Any] = field(default_factory=dict)
    """Installed versions of python, torch, transformers, hydra-core, omegaconf, ttml, ttexp."""
    error: Optional[str] = None
    # -- the plan and the device
    backend: Optional[str] = None
    device: Optional[str] = None
    precision: Optional[str] = None
    plan: Optional[dict[str, Any]] = None
    """:meth:`ttexp.train.plan.RunPlan.to_dict`."""
    memory: Optional[dict[str, Any]] = None
    """The memory plan (:meth:`ttexp.train.memory.MemoryPlan.to_dict`): bytes per device of
    weights, gradients, AdamW state, activations with and without checkpointing, the device's
    capacity and whether the run fits."""
    num_parameters: Optional[int] = None
    trainable_parameters: Optional[int] = None
    """Fine-tunes: parameters the optimizer updates (the LoRA adapters alone with adapter=lora)."""
    data: Optional[dict[str, Any]] = None
    """Path, SHA-256 and sizes of the data the run read."""
    # -- training figures
    max_steps: Optional[int] = None
    """training.max_steps: the schedule's length. ``steps_done < max_steps`` in a completed run
    means it stopped at training.stop_at_step (a successive-halving rung)."""
    steps_done: Optional[int] = None
    final_train_loss: Optional[float] = None
    final_val_loss: Optional[float] = None
    best_val_loss: Optional[float] = None
    best_val_step: Optional[int] = None
    tokens: Optional[int] = None
    """Tokens the training steps computed (padding included)."""
    train_s: Optional[float] = None
    eval_s: Optional[float] = None
    checkpoint_s: Optional[float] = None
    log_s: Optional[float] = None
    tokens_per_s: Optional[float] = None
    flops_per_token: Optional[int] = None
    peak_flops: Optional[float] = None
    peak_flops_source: Optional[str] = None
    achieved_flops_per_s: Optional[float] = None
    mfu: Optional[float] = None
    peak_memory_bytes: Optional[int] = None
    last_checkpoint: Optional[str] = None
    resumed_from: Optional[str] = None
    final_model: Optional[str] = None
    curves: Optional[str] = None
    # -- fine-tuning and evaluation
    base_model: Optional[str] = None
    model_source: Optional[dict[str, Any]] = None
    eval: Optional[dict[str, Any]] = None
    val_ppl: Optional[float] = None
    base_val_loss: Optional[float] = None
    base_val_ppl: Optional[float] = None
    results_file: Optional[str] = None
    # -- trackers
    wandb: Optional[dict[str, Any]] = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys of a record this version does not know; kept, never written by this version."""

    def update(self, **facts: Any) -> None:
        """Set fields by name.

        Raises:
            AttributeError: a name that is not a field of result.json (a bug in the writer).
        """
        known = {f.name for f in dataclasses.fields(self)} - {"extra"}
        unknown = sorted(set(facts) - known)
        if unknown:
            raise AttributeError(f"result.json has no field {', '.join(unknown)}; add it to RunResult.")
        for key, value in facts.items():
            setattr(self, key, value)

    def to_json(self) -> str:
        """The JSON text of result.json: NaN and infinities as null (the status says why)."""
        d = {f.name: _finite(getattr(self, f.name)) for f in dataclasses.fields(self)
             if f.name != "extra"}
        d.update({k: v for k, v in self.extra.items() if k not in d})
        return json.dumps(d, indent=2, default=str, allow_nan=False) + "\n"

    def write(self, run_dir: Path) -> None:
        """Rewrite ``run_dir/result.json`` atomically, secrets redacted (:func:`ttexp.errors.redact`).

        Raises:
            OSError: the directory cannot be written (the old file is untouched).
        """
        write_text_atomic(Path(run_dir) / RESULT_NAME, redact(self.to_json()))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunResult":
        """A result from its JSON object; unknown keys go to ``extra``."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in known},
                   extra={k: v for k, v in d.items() if k not in known})

    @classmethod
    def read(cls, run_dir: Path) -> Optional["RunResult"]:
        """``run_dir/result.json``; None when it is missing or unreadable (a run still starting)."""
        try:
            d = json.loads((Path(run_dir) / RESULT_NAME).read_text())
        except (OSError, ValueError):
            return None
        return cls.from_dict(d) if isinstance(d, dict) else None


def _finite(x: Any) -> Any:
    """JSON has no NaN/Inf: floats that are not finite become null."""
    return None if isinstance(x, float) and not math.isfinite(x) else x


def timestamp(seconds: Optional[float] = None) -> str:
    """``started_at`` / ``ended_at`` as result.json writes them: local time with its UTC offset,
    e.g. ``2026-12-01T03:36:05+0000``; now when ``seconds`` (since the epoch) is None."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds))
