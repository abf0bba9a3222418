"""What every training task shares once its inputs are built: the start-up block, resume, the
loop, the final model and the closing block (:func:`train_and_record`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ttexp.backends.base import Backend
from ttexp.config.convert import load_yaml_literal
from ttexp.config.schema import RunConfig
from ttexp.errors import CheckpointError
from ttexp.files import disk_full_message, write_dir_atomic
from ttexp.models.hf import make_portable
from ttexp.record.job import resume_command
from ttexp.record.run_record import RunRecord
from ttexp.train.checkpoint import (
    CONFIG_NAME,
    TRAINER_STATE_NAME,
    continuation_differences,
    load_checkpoint,
    model_mismatches,
    newest_valid_checkpoint,
    verify_checkpoint,
)
from ttexp.train.loop import LoopResult, TrainData, TrainingLoop
from ttexp.train.plan import RunPlan, plan_lines
from ttexp.train.ranks import Ranks
from ttexp.train.speed import (
    note_achieved_flops,
    peak_flops_for,
    peak_memory_bytes,
    reset_peak_memory,
    speed_figures,
)

log = logging.getLogger("ttexp")


@dataclass
class TrainingInputs:
    """What a training task built for :func:`train_and_record`.

    Attributes:
        backend: the backend with its model and optimizer built.
        data: training and validation batches.
        tokenizer: encodes validation prompts and decodes samples; saved with the final model.
        num_params: parameters of the built model (scalars).
        data_lines: what to print about the data at start-up.
        model_lines: what to print about the model (default: the plan's parameter breakdown).
        save_final: writes ``final_model/`` given its path (default: :func:`save_final_model`).
        title: the curves' title (default: run name, model, hardware).
        closing_lines: printed after the lessons' closing lines.
    """

    backend: Backend
    data: TrainData
    tokenizer: Any
    num_params: int
    data_lines: list[str]
    model_lines: Optional[list[str]] = None
    save_final: Optional[Callable[[Path], Path]] = None
    title: Optional[str] = None
    closing_lines: Sequence[str] = ()


def train_and_record(cfg: RunConfig, plan: RunPlan, ranks: Ranks, record: RunRecord,
                     inputs: TrainingInputs) -> None:
    """The part every training task shares, after its model and data are built: print the plan,
    resume if asked, run the loop, save ``final_model/`` and the curves, print the lessons' lines.

    Raises:
        CheckpointError: ``resume`` names a damaged or mismatched checkpoint.
        Diverged, Interrupted: from the loop (the record is updated first).
    """
    backend = inputs.backend
    model_lines = inputs.model_lines
    if model_lines is None:
        model_lines = [f"Model {plan.spec.name}:"] + [
            f"  {line}" for line in plan.params.lines(plan.spec.tie_word_embeddings)]
    _log_start(cfg, record, plan, backend, inputs.num_params, model_lines + inputs.data_lines)
    loop = TrainingLoop(cfg, plan, backend, inputs.data, inputs.tokenizer, record, ranks,
                        peak_flops=_speed_setup(record, plan, backend, ranks))
    start_step = resume_if_requested(cfg, loop, backend, record)
    try:
        loop.run(start_step)
    finally:
        record_loop(record, loop.result)
        curves = record.plot(inputs.title or f"{cfg.name}: {plan.spec.name} on {plan.hardware}")
    last = secure_final_state(loop, loop.result.steps_done)  # stop_at_step may end it early
    save = inputs.save_final or (lambda d: save_final_model(d, backend, inputs.tokenizer))
    try:
        final_dir = save(record.dir / "final_model")
    except Exception as exc:  # a full disk, a lost mount: the training itself is kept
        reason = disk_full_message(record.dir / "final_model", exc) or f"{type(exc).__name__}: {exc}"
        raise CheckpointError(
            f"Could not write {record.dir / 'final_model'}: {reason}. No training is lost: the "
            f"checkpoint {last} holds the final step. Free space and run again with: "
            f"{resume_command(record.dir, record.result.overrides)}") from None
    _log_end(record, loop.result, final_dir, curves, inputs.closing_lines)
    record.update(final_model=str(final_dir), curves=str(curves) if curves else None)


def secure_final_state(loop: TrainingLoop, final_step: int) -> str:
    """Make sure the last step is in a checkpoint before ``final_model/`` is written (which may
    fail, e.g. on a full disk): saves one unless the loop's last checkpoint is that step (with
    ``training.checkpoint_frequency=0`` this is the run's only checkpoint). Returns its path.

    Raises:
        CheckpointError: the checkpoint cannot be written (the message says why, e.g. a full disk).
    """
    last = loop.result.last_checkpoint
    if last and Path(last).name == f"step_{final_step}":
        return last
    return str(loop.checkpoint(final_step))


def _log_start(cfg: RunConfig, record: RunRecord, plan: RunPlan, backend: Backend, num_params: int,
               lines: list[str]) -> None:
    """The start-up block: device plan, model, data, schedule; the plan goes into result.json."""
    for line in plan_lines(plan, backend.device_name, backend.precision_name) + lines:
        log.info("%s", line)
    log_schedule(cfg, plan)
    record.update(backend=plan.backend, device=backend.device_name,
                  precision=backend.precision_name, plan=plan.to_dict(), num_parameters=num_params,
                  memory=plan.memory.to_dict() if plan.memory else None)


def _speed_setup(record: RunRecord, plan: RunPlan, backend: Backend, ranks: Ranks) -> Optional[float]:
    """Reset the peak-memory counter and find the peak FLOP/s that MFU is measured against."""
    reset_peak_memory(backend.device_name)  # a sweep's jobs share a process: count this run only
    if ranks.is_main:
        peak, source = peak_flops_for(plan.backend, plan.hardware, backend.device_name,
                                      backend.precision_name, plan.processes)
    else:  # only rank 0 reports; other ranks measuring a CPU at the same time would skew it
        peak, source = None, "reported by rank 0"
    log.info("FLOPs per token: %s (6N + 12LdT); peak %s", f"{plan.flops_per_token / 1e6:,.1f}M",
             f"{peak / 1e12:,.2f} TFLOP/s ({source})" if peak else f"unknown ({source})")
    record.update(flops_per_token=plan.flops_per_token, peak_flops=peak, peak_flops_source=source)
    return peak


def _log_end(record: RunRecord, res: LoopResult, final_dir: Path, curves: Optional[Path],
             closing_lines: Sequence[str]) -> None:
    """The closing block: throughput, then the lessons' lines (ct6 greps for them)."""
    r = record.result
    mfu = f", MFU {r.mfu:.1%}" if r.mfu is not None else ""
    log.info("Throughput: %s tokens/s, %.2f TFLOP/s%s over %.1f s of training "
             "(validation %.1f s, checkpoints %.1f s, logging %.1f s); peak memory %.0f MiB",
             f"{res.tokens_per_s:,.0f}", (r.achieved_flops_per_s or 0) / 1e12, mfu, res.train_s,
             res.eval_s, res.checkpoint_s, res.log_s, (r.peak_memory_bytes or 0) / 2**20)
    if res.final_train_loss is not None:
        log.info("Final training loss: %.4f", res.final_train_loss)
    if res.final_val_loss is not None:
        log.info("Final validation loss: %.4f (best %.4f at step %d)",
                 res.final_val_loss, res.best_val_loss, res.best_val_step)
    log.info("Model saved to: %s", final_dir)
    if curves:
        log.info("Training curves saved to: %s", curves)
    for line in closing_lines:
        log.info("%s", line)


def resume_if_requested(cfg: RunConfig, loop: TrainingLoop, backend: Backend, record: RunRecord) -> int:
    """Apply ``resume`` (auto | checkpoint dir | run dir); return the step to start from.

    ``auto`` looks in this run's own ``checkpoints/`` and falls back past damaged checkpoints;
    finding none, the run starts fresh. An explicit path must hold a valid checkpoint.

    Raises:
        CheckpointError: the path holds no valid checkpoint, or one trained with another model.
    """
    if not cfg.resume:
        return 0
    if cfg.resume == "auto":
        found = newest_valid_checkpoint(record.dir / "checkpoints")
        if found is None:
            log.info("resume=auto: no checkpoint in %s, starting from step 0.", record.dir)
            record.rewind(0)
            return 0
        path = found[0]
    else:
        src = Path(cfg.resume).expanduser()
        if (src / TRAINER_STATE_NAME).is_file() or src.name.startswith("step_"):
            verify_checkpoint(src)
            path = src
        else:
            found = newest_valid_checkpoint(src / "checkpoints")
            if found is None:
                raise CheckpointError(
                    f"resume={cfg.resume}: no valid checkpoint there. Give a checkpoints/step_N "
                    "directory or a run directory that has one."
                )
            path = found[0]
    saved_cfg = load_yaml_literal(path / CONFIG_NAME)  # a file on disk resolves nothing
    mismatches = model_mismatches(saved_cfg, cfg)
    if mismatches:
        raise CheckpointError(
            f"The checkpoint {path} was trained with a different model config: "
            + "; ".join(mismatches) + ". Resume with the model it was trained with."
        )
    changed = continuation_differences(saved_cfg, cfg)
    if changed:
        log.warning("Resuming with settings that differ from the run that wrote %s: %s. The run "
                    "continues, but not as the original would have.", path, "; ".join(changed))
    state = load_checkpoint(path, backend)
    start = loop.restore(state)
    record.rewind(start)
    record.update(resumed_from=str(path))
    log.info("Resumed from %s at step %d (weights, optimizer, random state, data position).",
             path, start)
    return start


def log_schedule(cfg: RunConfig, plan: RunPlan) -> None:
    """The start-up lines about the schedule, validation and checkpoint cadence."""
    t = cfg.training
    name = cfg.scheduler.name.value
    clip = f"clip {t.clip_grad_norm_max_norm}" if t.use_clip_grad_norm else "no clipping"
    log.info("Training: %s steps, lr %g (%s, warmup %d), weight decay %g, %s, seed %d",
             f"{t.max_steps:,}", t.learning_rate, name, t.warmup_steps, t.weight_decay, clip, t.seed)
    sequences = plan.tokens_per_step * t.max_steps / max(1, plan.seq_len)
    log.info("Validation %s, checkpoints %s; %s sequences seen in total",
             _cadence(t.validation_frequency), _cadence(t.checkpoint_frequency), f"{sequences:,.0f}")


def _cadence(frequency: int) -> str:
    """'every 500 steps', or 'at the end only' for 0 (the keys' sentinel)."""
    return f"every {frequency:,} steps" if frequency else "at the end only"


def record_loop(record: RunRecord, res: LoopResult) -> None:
    """The loop's figures (losses, tokens, times, MFU, peak memory) into result.json."""
    speed = speed_figures(res.tokens_per_s, record.result.flops_per_token or 0,
                          record.result.peak_flops)
    record.update(
        achieved_flops_per_s=round(speed["achieved_flops_per_s"], 1), mfu=speed["mfu"],
        peak_memory_bytes=peak_memory_bytes(record.result.device or "cpu"),
        log_s=round(res.log_s, 3),
        steps_done=res.steps_done, final_train_loss=res.final_train_loss,
        final_val_loss=res.final_val_loss, best_val_loss=res.best_val_loss,
        best_val_step=res.best_val_step, tokens=res.tokens, train_s=round(res.train_s, 3),
        eval_s=round(res.eval_s, 3), checkpoint_s=round(res.checkpoint_s, 3),
        tokens_per_s=round(res.tokens_per_s, 1), last_checkpoint=res.last_checkpoint,
    )
    r = record.result
    if (r.peak_flops_source or "").startswith("measured CPU") and (r.mfu or 0) > 1:
        dtype = "bf16" if "bf16" in (r.precision or "") else "fp32"
        note_achieved_flops(dtype, speed["achieved_flops_per_s"])  # the next run measures again
        log.info("This run achieved more than the cached CPU peak (%s), which was measured under "
                 "load: MFU is overstated here, and the peak is measured again next run.",
                 r.peak_flops_source)


def save_final_model(directory: Path, backend: Backend, tokenizer: Any,
                     extra: Optional[Callable[[Path], None]] = None) -> Path:
    """final_model/: a transformers model directory (config, safetensors, tokenizer), written
    atomically; ``extra(tmp)`` adds a task's own files before the directory appears."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its shard bar would break up the console's last lines
    hf_tok = tokenizer.to_transformers() if hasattr(tokenizer, "to_transformers") else tokenizer

    def fill(tmp: Path) -> None:
        backend.save_pretrained(tmp, hf_tok)
        make_portable(tmp)  # older transformers (pyproject's lower bound) load it too
        if extra is not None:
            extra(tmp)

    return write_dir_atomic(directory, fill)
