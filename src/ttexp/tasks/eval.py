"""task=eval: validation loss, perplexity and answers of a trained model, optionally beside its base.

    python -m ttexp task=eval eval.checkpoint=outputs/runs/.../final_model
    python -m ttexp task=eval eval.checkpoint=RUN/final_model eval.compare_to=base
    python -m ttexp task=eval eval.checkpoint=RUN/checkpoints/step_200 eval.compare_to=~/models/tinyllama

    python -m ttexp task=eval eval.checkpoint=RUN/best                 # the best checkpoint

For a model ttexp trained, what the command line does not set comes from its run (:func:`resolve`):
the data file and held-out split, the template, the questions (its validation prompts) and the
decoding settings (the lessons' eval_config: temperature, top_k, top_p, repetition_penalty,
max_new_tokens), so the eval repeats the run's own evaluation. Answers, the base's beside the model's, go to ``eval.results_file`` in the run
directory; every number goes to result.json. A base that would be a random initialisation (the
model was trained from scratch) is refused unless ``eval.allow_random_base=true``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from transformers.utils import logging as hf_logging

from ttexp.backends.base import SamplingParams
from ttexp.backends.factory import create_backend
from ttexp.config.overrides import user_set
from ttexp.config.section import evolve
from ttexp.config.schema import RunConfig
from ttexp.data.corpus import resolve_corpus
from ttexp.data.pairs import PairData, load_pair_data, resolve_pairs_file
from ttexp.data.text import TextData, tokenize_corpus
from ttexp.errors import DataError, TtexpError
from ttexp.models.hub import local_snapshot
from ttexp.models.metrics import perplexity
from ttexp.models.pretrained import (
    ModelSource,
    load_model,
    load_tokenizer,
    model_config_for,
)
from ttexp.models.spec import ModelSpec
from ttexp.record.lineage import base_of, checkpoint_source, recorded_eval_inputs
from ttexp.record.run_record import RunRecord
from ttexp.train.plan import RunPlan
from ttexp.train.ranks import Ranks
from ttexp.train.rng import seed_everything

log = logging.getLogger("ttexp")


@dataclass
class Candidate:
    """One model to evaluate: its label, where it comes from, and what it produced."""

    label: str
    name: str
    source: ModelSource
    tokenizer: Any = None
    spec: Optional[ModelSpec] = None
    val_loss: Optional[float] = None
    answers: list[str] = field(default_factory=list)

    @property
    def val_ppl(self) -> Optional[float]:
        return None if self.val_loss is None else perplexity(self.val_loss)


def resolve(cfg: RunConfig, overrides: Sequence[str] = ()) -> RunConfig:
    """The config as this evaluation really runs: ``model.*`` from the evaluated model, and what
    its run recorded (:func:`ttexp.record.lineage.recorded_eval_inputs`) for every part the
    command line did not set: the data file, its held-out split (seed, val_fraction, val_path)
    and template; the questions (the run's validation prompts); the decoding settings; the name
    (``eval-<model>-<hardware>``). So the record reproduces the evaluation.

    Raises:
        TtexpError: ``eval.checkpoint`` holds no model.
    """
    if not cfg.eval.checkpoint:
        return cfg  # validation names the missing key
    source = checkpoint_source(Path(cfg.eval.checkpoint))
    cfg = evolve(cfg, model=model_config_for(cfg.model, source))
    recorded = recorded_eval_inputs(Path(cfg.eval.checkpoint))
    if not recorded:
        return cfg
    return _apply_recorded(cfg, recorded, overrides)


def _apply_recorded(cfg: RunConfig, rec: dict[str, Any], overrides: Sequence[str]) -> RunConfig:
    """``cfg`` with the recorded eval inputs ``rec`` wherever ``overrides`` leave a part unset."""
    mine = lambda key: user_set(overrides, key)  # noqa: E731
    default_name = f"eval-{cfg.model.name}-{cfg.hardware.name}"
    model = evolve(cfg.model, name=rec["model_name"]) if rec.get("model_name") else cfg.model
    name = f"eval-{model.name}-{cfg.hardware.name}" if cfg.name == default_name else cfg.name
    group = lambda g: any(o.split("=", 1)[0].lstrip("+~") == g for o in overrides)  # noqa: E731
    data, seed = cfg.data, cfg.training.seed
    if rec.get("data") and not group("data") and not mine("data.path"):
        fields = {k: v for k, v in rec["data"].items() if hasattr(data, k) and not mine(f"data.{k}")}
        fields["format"] = type(data.format)(fields.get("format", data.format.value))
        data = evolve(data, **fields)
        seed = seed if mine("training.seed") else int(rec["seed"])
        log.info("Evaluating on the data the model was trained on: %s (held-out split: %s).",
                 data.path or data.filename, data.val_path or
                 f"seed {seed}, val_fraction {data.val_fraction}")
    elif _same_file(cfg, rec) and not (mine("data.val_fraction") or mine("training.seed")):
        data = evolve(data, val_fraction=float(rec["data"]["val_fraction"]))
        seed = int(rec["seed"])
        log.info("Evaluating on the run's held-out split (seed %s, val_fraction %s).", seed,
                 data.val_fraction)
    questions = cfg.eval.questions
    if not mine("eval.questions") and rec.get("questions") and data.format.value == rec["data"]["format"]:
        questions = list(rec["questions"])
    gen = {k: v for k, v in (rec.get("generation") or {}).items()
           if hasattr(cfg.generation, k) and not mine(f"generation.{k}") and not group("generation")}
    return evolve(cfg, name=name, model=model, data=data,
                  training=evolve(cfg.training, seed=seed),
                  eval=evolve(cfg.eval, questions=questions),
                  generation=evolve(cfg.generation, **gen))


def _same_file(cfg: RunConfig, rec: dict[str, Any]) -> bool:
    """True when ``cfg.data`` names the recorded data file and the run used a seeded split."""
    recorded = rec.get("data") or {}
    if cfg.data.val_path or recorded.get("val_path") or cfg.data.format.value != "jsonl":
        return False
    try:
        here = resolve_pairs_file(cfg.data).resolve()
        there = resolve_pairs_file(evolve(cfg.data, path=recorded.get("path"),
                                          filename=recorded.get("filename") or cfg.data.filename))
    except TtexpError:
        return False  # _eval_data reports a missing file
    return here == there.resolve()


def run(cfg: RunConfig, plan: RunPlan, ranks: Ranks, record: RunRecord) -> None:
    """task=eval: score and question ``eval.checkpoint`` (and its comparison model).

    Raises:
        TtexpError: a model cannot be loaded, or ``eval.compare_to`` cannot be honoured.
        DataError: the evaluation data are missing or have no validation part.
    """
    hf_logging.disable_progress_bar()
    checkpoint = Path(cfg.eval.checkpoint)
    label = "Fine-tuned" if base_of(checkpoint) else "Model"
    model = Candidate(label, str(cfg.eval.checkpoint), checkpoint_source(checkpoint))
    _prepare(cfg, model)
    candidates = [model]
    base = _comparison(cfg, model)
    if base is not None:
        candidates.append(base)
    record.update(eval={"checkpoint": model.name, "compare_to": base.name if base else None})
    for cand in candidates:
        _evaluate(cfg, plan, ranks, cand, record)
    path = record.dir / cfg.eval.results_file
    _write_results(path, cfg, candidates)
    log.info("Results saved to: %s", path)
    record.update(
        final_val_loss=model.val_loss, best_val_loss=model.val_loss, val_ppl=model.val_ppl,
        base_val_loss=base.val_loss if base else None, base_val_ppl=base.val_ppl if base else None,
        results_file=str(path),
        eval={"checkpoint": model.name, "compare_to": base.name if base else None,
              "questions": list(cfg.eval.questions),
              "answers": [{"question": q, "answer": a,
                           **({"base_answer": base.answers[i]} if base else {})}
                          for i, (q, a) in enumerate(zip(cfg.eval.questions, model.answers))]},
    )


def _prepare(cfg: RunConfig, cand: Candidate) -> None:
    """The candidate's tokenizer and architecture (its own: a base may differ from the model)."""
    cand.tokenizer = load_tokenizer(cand.source.model_dir)
    cand.spec = ModelSpec.from_config(model_config_for(cfg.model, cand.source))


def _comparison(cfg: RunConfig, model: Candidate) -> Optional[Candidate]:
    """The comparison model named by ``eval.compare_to``, or None.

    Raises:
        TtexpError: ``base`` is asked for and the model has no pretrained base (it was trained
            from scratch) and ``eval.allow_random_base`` is false; or the path holds no model.
    """
    want = cfg.eval.compare_to
    if not want:
        return None
    target = base_of(Path(cfg.eval.checkpoint)) if want == "base" else want
    if target is None:
        if not cfg.eval.allow_random_base:
            raise TtexpError(
                f"eval.compare_to=base: {cfg.eval.checkpoint} was not fine-tuned from pretrained "
                "weights (no base model is recorded: it was trained from scratch), so its base "
                "would be a random initialisation. Name a model with eval.compare_to=DIR, or set "
                "eval.allow_random_base=true to compare with random weights on purpose."
            )
        log.warning("Comparing with a RANDOMLY INITIALISED model of the same shape "
                    "(eval.allow_random_base=true).")
        return Candidate("Base (random init)", "random initialisation", ModelSource(),
                         tokenizer=model.tokenizer, spec=model.spec)
    path = Path(str(target)).expanduser()
    if not path.exists() and str(target).count("/") == 1:  # a hub id recorded by the fine-tune
        source = ModelSource(model_dir=local_snapshot(str(target)))
    else:
        source = checkpoint_source(path)
    base = Candidate("Base", str(target), source)
    if source.model_dir is None and source.model_cfg is None:
        base.tokenizer, base.spec = model.tokenizer, model.spec
    return base


def _evaluate(cfg: RunConfig, plan: RunPlan, ranks: Ranks, cand: Candidate,
              record: RunRecord) -> None:
    """Load ``cand`` on a fresh backend, score the validation data, answer the questions."""
    if cand.spec is None:  # a comparison model named by path: prepared when it is evaluated
        _prepare(cfg, cand)
    plan = dataclasses.replace(plan, spec=cand.spec, seq_len=cand.spec.max_seq_len)
    data = _eval_data(cfg, cand.tokenizer, plan.seq_len)
    seed_everything(cfg.training.seed)  # a random-init base is reproducible
    backend = create_backend(cfg, plan.backend, ranks)
    try:
        what = "random initialisation" if cand.source.weights is None else str(cand.source.weights)
        log.info("%s model: %s", cand.label, what)
        load_model(backend, cand.source, cand.spec)
        t = cfg.training
        cand.val_loss = backend.evaluate(
            data.val_batches(t.validation_batch_size or t.batch_size, t.validation_batches))
        log.info("%s: validation loss %.4f | perplexity %.2f", cand.label, cand.val_loss, cand.val_ppl)
        params = SamplingParams.from_config(cfg.generation, cand.tokenizer)
        for i, question in enumerate(cfg.eval.questions, start=1):
            ids = backend.generate(cand.tokenizer.encode(data.format_prompt(question)), params)
            cand.answers.append(cand.tokenizer.decode(ids).strip())
            log.info("Q%d: %s\n%s: %s", i, question, cand.label, cand.answers[-1])
        record.update(device=backend.device_name, backend=plan.backend)
    finally:
        backend.close()


def _eval_data(cfg: RunConfig, tokenizer: Any, seq_len: int) -> PairData | TextData:
    """The validation data of ``cfg.data`` tokenised with ``tokenizer`` (JSONL or text corpus).

    Raises:
        DataError: the data are missing or invalid, or there is nothing to validate on.
    """
    if cfg.data.format.value == "jsonl":
        data, info = load_pair_data(cfg.data, tokenizer, seq_len, cfg.training.seed, 1)
        log.info("%s", info.line())
        if not data.val:
            raise DataError("The evaluation data have no validation examples: set data.val_path=FILE "
                            "or data.val_fraction > 0.")
        return data
    corpus = resolve_corpus(cfg.data)
    tokens = tokenize_corpus(corpus, tokenizer.inner)
    return TextData(tokens, seq_len, cfg.data.val_fraction, cfg.training.seed)


def indent_answer(answer: str) -> str:
    """An answer for the results file: continuation lines indented, blank lines dropped, so each
    question's block stays one paragraph."""
    return "\n    ".join(line for line in answer.splitlines() if line.strip()) or "(no answer)"


def _write_results(path: Path, cfg: RunConfig, candidates: list[Candidate]) -> None:
    """The results file: one block per question, each model's answer in turn (lesson's format)."""
    g = cfg.generation
    lines = [f"Evaluation: {candidates[0].name}"]
    for cand in candidates:
        if cand.val_loss is not None:
            lines.append(f"{cand.label} ({cand.name}): validation loss {cand.val_loss:.4f}, "
                         f"perplexity {cand.val_ppl:.2f}")
    lines.append(f"Sampling: temperature {g.temperature}, top_k {g.top_k}, top_p {g.top_p}, "
                 f"repetition_penalty {g.repetition_penalty}, max_new_tokens {g.max_new_tokens}")
    lines.append("")
    for i, question in enumerate(cfg.eval.questions):
        lines.append(f"Q{i + 1}: {question}")
        for cand in candidates:
            lines.append(f"{cand.label}: {indent_answer(cand.answers[i])}")
        lines.append("")
    path.write_text("\n".join(lines))
