"""task=scratch: train a randomly initialised model on a text corpus (the ct8 lesson)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ttexp.record.run_record import RunRecord

log = logging.getLogger("ttexp")


def run_scratch(cfg: Any, record: RunRecord) -> None:
    """task=scratch: train a randomly initialised model on a text corpus, then save final_model/."""
    from ttexp.backends.factory import create_backend
    from ttexp.data.corpus import resolve_corpus, sha256_of
    from ttexp.data.text import TextData, tokenize_corpus
    from ttexp.models.tokenizer import ByteTokenizer
    from ttexp.train.plan import make_plan
    from ttexp.train.rng import seed_everything
    from ttexp.train.trainer import train_and_record

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
        data_line = (f"Data: {corpus} ({len(tokens):,} tokens: {len(data.train):,} train, "
                     f"{len(data.val):,} validation)")
        train_and_record(cfg, record, plan, backend, data, tokenizer, num_params, [data_line])
    finally:
        backend.close()
