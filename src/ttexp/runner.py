"""Run one task from a composed config: validate, plan, build, train, record.

Hydra-free: it takes a config object and an output directory, so the Hydra entry point, tests
and worker processes all call the same function. Every run ends with a ``result.json`` whose
``status`` is completed, failed, diverged or interrupted, whatever happened.
"""

from __future__ import annotations

import logging
import random
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from ttexp.errors import TtexpError
from ttexp.record import RunRecord

log = logging.getLogger("ttexp")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices). Called before the model is built."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(cfg: Any, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run ``cfg`` in ``cfg.output_dir`` and return the final result.json contents.

    Never raises for a failed run: the error goes to the log and into ``result.json``
    (``status: failed`` / ``diverged`` / ``interrupted``), and the caller decides the exit code.
    """
    from ttexp.validate import config_warnings, validate_config

    record = RunRecord(Path(cfg.output_dir), cfg, overrides or [])
    status, error = "failed", None
    try:
        validate_config(cfg)
        for warning in config_warnings(cfg):
            log.warning("%s", warning)
        task = getattr(cfg.task.name, "value", cfg.task.name)
        if task in ("scratch",):
            _train(cfg, record)
        else:
            raise TtexpError(
                f"task={task} is not available in this version of ttexp; use task=scratch."
            )
        status = "completed"
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted by the user (Ctrl-C)"
        log.warning("Interrupted. The record in %s is kept.", record.dir)
    except TtexpError as exc:
        from ttexp.loop import Diverged

        status = "diverged" if isinstance(exc, Diverged) else "failed"
        error = str(exc)
        log.error("%s", exc)
    except Exception as exc:  # an unexpected bug: keep the traceback in the log
        error = f"{type(exc).__name__}: {exc}"
        log.error("The run failed: %s\n%s", error, traceback.format_exc())
    finally:
        record.close(status, error)
    return record.result


def _train(cfg: Any, record: RunRecord) -> None:
    """task=scratch: train a randomly initialised model on a text corpus."""
    from ttexp.backends.factory import create_backend
    from ttexp.data.corpus import resolve_corpus, sha256_of
    from ttexp.data.text import TextData, tokenize_corpus
    from ttexp.loop import TrainingLoop
    from ttexp.models.tokenizer import ByteTokenizer
    from ttexp.plan import make_plan, plan_lines

    plan = make_plan(cfg)
    corpus = resolve_corpus(cfg.data)
    tokenizer = ByteTokenizer()
    tokens = tokenize_corpus(corpus, tokenizer)
    data = TextData(tokens, plan.seq_len, cfg.data.val_fraction, cfg.training.seed)
    record.update(data={"path": str(corpus.resolve()), "sha256": sha256_of(corpus),
                        "tokens": int(len(tokens)), "train_tokens": int(len(data.train)),
                        "val_tokens": int(len(data.val))})

    seed_everything(cfg.training.seed)
    backend = create_backend(cfg, plan)
    try:
        init_from = Path(cfg.init_from) if cfg.init_from else None
        num_params = backend.build_model(plan.spec, init_from=init_from)
        for line in plan_lines(plan, backend.device_name, backend.precision_name):
            log.info("%s", line)
        log.info("Model %s:", plan.spec.name)
        for line in plan.params.lines(plan.spec.tie_word_embeddings):
            log.info("  %s", line)
        log.info("Data: %s (%s tokens: %s train, %s validation)", corpus,
                 f"{len(tokens):,}", f"{len(data.train):,}", f"{len(data.val):,}")
        _log_schedule(cfg, plan)
        record.update(backend=plan.backend, device=backend.device_name,
                      precision=backend.precision_name, plan=plan.to_dict(),
                      num_parameters=num_params)

        loop = TrainingLoop(cfg, plan, backend, data, tokenizer, record)
        try:
            loop.run()
        finally:
            _record_loop(record, loop.result)
        final_dir = _save_final_model(record.dir / "final_model", backend, tokenizer)
        curves = record.plot(f"{cfg.name}: {plan.spec.name} on {plan.hardware}")
        res = loop.result
        log.info("Final training loss: %.4f", res.final_train_loss)
        if res.final_val_loss is not None:
            log.info("Final validation loss: %.4f (best %.4f at step %d)",
                     res.final_val_loss, res.best_val_loss, res.best_val_step)
        log.info("Model saved to: %s", final_dir)
        if curves:
            log.info("Training curves saved to: %s", curves)
        record.update(final_model=str(final_dir), curves=str(curves) if curves else None)
    finally:
        if record.result.get("curves") is None:
            record.plot(f"{cfg.name}: {plan.spec.name} on {plan.hardware}")
        backend.close()


def _log_schedule(cfg: Any, plan: Any) -> None:
    t = cfg.training
    name = getattr(cfg.scheduler.name, "value", cfg.scheduler.name)
    clip = f"clip {t.clip_grad_norm_max_norm}" if t.use_clip_grad_norm else "no clipping"
    log.info("Training: %s steps, lr %g (%s, warmup %d), weight decay %g, %s, seed %d",
             f"{t.max_steps:,}", t.learning_rate, name, t.warmup_steps, t.weight_decay, clip, t.seed)
    epochs = plan.tokens_per_step * t.max_steps / max(1, plan.seq_len)
    log.info("Validation every %s steps, checkpoints every %s steps; %s sequences seen in total",
             t.validation_frequency or "end", t.checkpoint_frequency or "end", f"{epochs:,.0f}")


def _record_loop(record: RunRecord, res: Any) -> None:
    record.update(
        steps_done=res.steps_done, final_train_loss=res.final_train_loss,
        final_val_loss=res.final_val_loss, best_val_loss=res.best_val_loss,
        best_val_step=res.best_val_step, tokens=res.tokens, train_s=round(res.train_s, 3),
        eval_s=round(res.eval_s, 3), checkpoint_s=round(res.checkpoint_s, 3),
        tokens_per_s=round(res.tokens_per_s, 1), last_checkpoint=res.last_checkpoint,
    )


def _save_final_model(directory: Path, backend: Any, tokenizer: Any) -> Path:
    """final_model/: a transformers model directory (config, safetensors, tokenizer)."""
    from ttexp.checkpoint import write_dir_atomic

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its shard bar would break up the console's last lines
    hf_tok = tokenizer.to_transformers() if hasattr(tokenizer, "to_transformers") else tokenizer
    return write_dir_atomic(directory, lambda tmp: backend.save_pretrained(tmp, hf_tok))
