"""task=scratch: train a randomly initialised model on a text corpus (the ct8 lesson)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ttexp.record import RunRecord

log = logging.getLogger("ttexp")


def run_scratch(cfg: Any, record: RunRecord) -> None:
    """task=scratch: train a randomly initialised model on a text corpus, then save final_model/."""
    from ttexp.backends.factory import create_backend
    from ttexp.runner import seed_everything
    from ttexp.tasks.common import log_schedule, record_loop, save_final_model
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
        log_schedule(cfg, plan)
        record.update(backend=plan.backend, device=backend.device_name,
                      precision=backend.precision_name, plan=plan.to_dict(),
                      num_parameters=num_params)

        loop = TrainingLoop(cfg, plan, backend, data, tokenizer, record)
        try:
            loop.run()
        finally:
            record_loop(record, loop.result)
        final_dir = save_final_model(record.dir / "final_model", backend, tokenizer)
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
