"""task=scratch: train a randomly initialised model on a text corpus (the ct8 lesson).

    python -m ttexp model=nano task=scratch
    python -m ttexp experiment=nano_cpu
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from ttexp.backends.factory import create_backend
from ttexp.config.schema import RunConfig
from ttexp.files import sha256_of
from ttexp.data.corpus import resolve_corpus
from ttexp.data.text import TextData, tokenize_corpus
from ttexp.models.tokenizer import ByteTokenizer
from ttexp.record.run_record import RunRecord
from ttexp.train.plan import RunPlan
from ttexp.train.ranks import Ranks
from ttexp.train.rng import seed_everything
from ttexp.train.trainer import TrainingInputs, train_and_record

log = logging.getLogger("ttexp")


def resolve(cfg: RunConfig, overrides: Sequence[str] = ()) -> RunConfig:
    """Nothing to resolve: the config names the architecture and the corpus."""
    return cfg


def run(cfg: RunConfig, plan: RunPlan, ranks: Ranks, record: RunRecord) -> None:
    """Tokenise the corpus, build the model (random, or ``init_from``'s weights), train, save.

    Raises:
        DataError: the corpus is missing, empty or too short for one sequence.
        TtexpError: ``init_from`` holds weights of another shape.
    """
    corpus = resolve_corpus(cfg.data)
    tokenizer = ByteTokenizer()
    tokens = tokenize_corpus(corpus, tokenizer)
    data = TextData(tokens, plan.seq_len, cfg.data.val_fraction, cfg.training.seed)
    record.update(data={"path": str(corpus.resolve()), "sha256": sha256_of(corpus),
                        "tokens": int(len(tokens)), "train_tokens": int(len(data.train)),
                        "val_tokens": int(len(data.val))})

    seed_everything(cfg.training.seed)
    backend = create_backend(cfg, plan.backend, ranks)
    try:
        init_from = Path(cfg.init_from) if cfg.init_from else None
        num_params = backend.build_model(plan.spec, init_from=init_from)
        data_line = (f"Data: {corpus} ({len(tokens):,} tokens: {len(data.train):,} train, "
                     f"{len(data.val):,} validation)")
        train_and_record(cfg, plan, ranks, record,
                         TrainingInputs(backend, data, tokenizer, num_params, [data_line]))
    finally:
        backend.close()
