"""Pieces shared by the training tasks: the schedule summary, loop figures, the final model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ttexp.record import RunRecord

log = logging.getLogger("ttexp")


def log_schedule(cfg: Any, plan: Any) -> None:
    t = cfg.training
    name = getattr(cfg.scheduler.name, "value", cfg.scheduler.name)
    clip = f"clip {t.clip_grad_norm_max_norm}" if t.use_clip_grad_norm else "no clipping"
    log.info("Training: %s steps, lr %g (%s, warmup %d), weight decay %g, %s, seed %d",
             f"{t.max_steps:,}", t.learning_rate, name, t.warmup_steps, t.weight_decay, clip, t.seed)
    epochs = plan.tokens_per_step * t.max_steps / max(1, plan.seq_len)
    log.info("Validation every %s steps, checkpoints every %s steps; %s sequences seen in total",
             t.validation_frequency or "end", t.checkpoint_frequency or "end", f"{epochs:,.0f}")


def record_loop(record: RunRecord, res: Any) -> None:
    record.update(
        steps_done=res.steps_done, final_train_loss=res.final_train_loss,
        final_val_loss=res.final_val_loss, best_val_loss=res.best_val_loss,
        best_val_step=res.best_val_step, tokens=res.tokens, train_s=round(res.train_s, 3),
        eval_s=round(res.eval_s, 3), checkpoint_s=round(res.checkpoint_s, 3),
        tokens_per_s=round(res.tokens_per_s, 1), last_checkpoint=res.last_checkpoint,
    )


def save_final_model(directory: Path, backend: Any, tokenizer: Any) -> Path:
    """final_model/: a transformers model directory (config, safetensors, tokenizer)."""
    from ttexp.checkpoint import write_dir_atomic

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its shard bar would break up the console's last lines
    hf_tok = tokenizer.to_transformers() if hasattr(tokenizer, "to_transformers") else tokenizer
    return write_dir_atomic(directory, lambda tmp: backend.save_pretrained(tmp, hf_tok))
