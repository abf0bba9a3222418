"""task=finetune: continue training pretrained weights on prompt/response pairs (the ct4 lesson).

    python -m ttexp experiment=trickster_n150 model.pretrained_path=~/models/tinyllama
    python -m ttexp task=finetune init_from=outputs/runs/.../final_model   # a ttexp model

The starting point comes from :func:`ttexp.models.pretrained.finetune_source` (never a random
initialisation); its config.json decides the architecture and its tokenizer is used. The data are
validated first (:mod:`ttexp.tools.validate_data`), then the one training loop runs; validation answers
to ``generation.prompts``, inside the prompt template, go to validation.txt. ``final_model/``
records where it came from (``ttexp_origin.json``), which ``task=eval eval.compare_to=base`` reads.
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any, Callable, Sequence

from transformers.utils import logging as hf_logging

from ttexp.backends.factory import create_backend
from ttexp.config.section import evolve
from ttexp.config.schema import AdapterConfig, AdapterName, RunConfig
from ttexp.config.overrides import user_set
from ttexp.data.pairs import held_out_prompts, load_pair_data
from ttexp.models.pretrained import (
    ORIGIN_NAME,
    finetune_source,
    load_model,
    load_tokenizer,
    model_config_for,
)
from ttexp.record.lineage import EVAL_INPUTS_KEY, eval_inputs, recorded_eval_inputs
from ttexp.record.run_record import RunRecord
from ttexp.train.plan import RunPlan
from ttexp.train.ranks import Ranks
from ttexp.train.rng import seed_everything
from ttexp.train.trainer import TrainingInputs, save_final_model, train_and_record

log = logging.getLogger("ttexp")


def resolve(cfg: RunConfig, overrides: Sequence[str] = ()) -> RunConfig:
    """The config as the fine-tune really runs: ``model.*`` set to the starting model's
    architecture (its config.json decides the shape); the user's own data files as absolute
    paths (task=eval finds them from any directory); and, for a user's own file
    (``data.path``) with ``generation.prompts`` not set on the command line, validation prompts
    taken from its held-out examples (the starter set's questions would mean nothing there).

    Raises:
        TtexpError: no weights are configured, or a configured directory does not exist or holds
            no Llama model.
    """
    source = finetune_source(cfg)
    model = model_config_for(cfg.model, source)
    if model is not cfg.model and source.model_dir is not None:  # not the preset's shape: its name
        recorded = recorded_eval_inputs(Path(source.model_dir)) or {}
        model = evolve(model, name=recorded.get("model_name") or Path(source.model_dir).name)
    cfg = evolve(cfg, model=model)
    if not cfg.data.path:
        return cfg
    absolute = lambda p: str(Path(p).expanduser().resolve()) if p and Path(p).expanduser().exists() else p  # noqa: E731
    cfg = evolve(cfg, data=evolve(cfg.data, path=absolute(cfg.data.path),
                                  val_path=absolute(cfg.data.val_path)))
    prompts = [] if user_set(overrides, "generation.prompts") else held_out_prompts(
        cfg.data, cfg.training.seed)
    if prompts:
        log.info("Validation samples answer %d held-out prompts of %s (set generation.prompts to "
                 "choose others).", len(prompts), cfg.data.val_path or cfg.data.path)
        cfg = evolve(cfg, generation=evolve(cfg.generation, prompts=prompts))
    return cfg


def run(cfg: RunConfig, plan: RunPlan, ranks: Ranks, record: RunRecord) -> None:
    """task=finetune: load the starting model, validate and split the data, train, save.

    Raises:
        DataError: the JSONL data are missing or invalid, or leave no training example.
        TtexpError: the weights or tokenizer cannot be loaded.
    """
    hf_logging.disable_progress_bar()
    source = finetune_source(cfg)
    tokenizer = load_tokenizer(source.model_dir)
    t = cfg.training
    data, info = load_pair_data(cfg.data, tokenizer, plan.seq_len, t.seed, t.gradient_accumulation_steps)
    base = _str(source.weights)
    record.update(base_model=base, model_source={"model_dir": _str(source.model_dir),
                                                 "weights_dir": _str(source.weights_dir)},
                  data={"path": info.path, "sha256": info.sha256, "val_path": info.val_path,
                        "train_examples": info.train_examples, "val_examples": info.val_examples,
                        "truncated": info.truncated, "max_tokens": info.max_tokens,
                        "prompt_template": cfg.data.prompt_template})

    seed_everything(t.seed)
    backend = create_backend(cfg, plan.backend, ranks)
    try:
        log.info("Loading weights from %s", base)
        num_params = load_model(backend, source, plan.spec)  # the base; then the adapter:
        lora = cfg.adapter.name == AdapterName.lora  # what the optimizer updates (on ttml a fused
        trained = backend.apply_adapter(cfg.adapter) if lora else num_params  # kv adapter shares A)
        record.update(trainable_parameters=trained)
        origin = {"base_model": base, "model_dir": _str(source.model_dir),
                  "prompt_template": cfg.data.prompt_template, "eos_token_id": tokenizer.eos_token_id,
                  "bos_token_id": tokenizer.bos_token_id,
                  # what a plain transformers user feeds the model for a question (BOS included)
                  "prompt_format": ("" if tokenizer.bos_token_id is None else
                                    tokenizer.inner.convert_ids_to_tokens(tokenizer.bos_token_id))
                  + cfg.data.prompt_template,
                  # data, split, questions and decoding, so task=eval repeats this evaluation
                  EVAL_INPUTS_KEY: eval_inputs(evolve(cfg, data=evolve(
                      cfg.data, path=str(Path(info.path).resolve())))),
                  # the held-out split, so task=eval scores the same examples
                  "split": {"data_path": str(Path(info.path).resolve()), "val_path": info.val_path,
                            "val_fraction": cfg.data.val_fraction, "seed": t.seed}}
        train_and_record(cfg, plan, ranks, record, TrainingInputs(
            backend, data, tokenizer, num_params, [info.line()],
            model_lines=[f"Model {plan.spec.name}: {num_params:,} parameters (from {base})"]
            + adapter_lines(cfg.adapter, trained, num_params),
            save_final=lambda d: save_final_model(d, backend, tokenizer,
                                                  _finetune_files(tokenizer, origin)),
            title=f"{cfg.name}: fine-tuning {plan.spec.name} on {plan.hardware}",
            closing_lines=["Compare it with its base: " + shlex.join(
                ["python", "-m", "ttexp", "task=eval", f"eval.checkpoint={record.dir / 'final_model'}",
                 "eval.compare_to=base"])],
        ))
    finally:
        backend.close()


def adapter_lines(adapter: AdapterConfig, trained: int, total: int) -> list[str]:
    """The start-up line of a LoRA run: what is trained, and how much of the model that is."""
    if adapter.name != AdapterName.lora:
        return []
    return [f"LoRA: r={adapter.r}, lora_alpha={adapter.lora_alpha:g}, dropout "
            f"{adapter.lora_dropout:g}, on {', '.join(adapter.target_modules)}: {trained:,} "
            f"trainable parameters, {trained / total:.2%} of the {total:,} (only the adapters are "
            "trained and in the optimizer)"]


def _str(path: Path | None) -> str | None:
    """An absolute path for a local directory (the record outlives the working directory); a hub
    id stays as it is."""
    if path is None:
        return None
    local = Path(path).expanduser()
    return str(local.resolve()) if local.exists() else str(path)


def _finetune_files(tokenizer: Any, origin: dict[str, Any]) -> Callable[[Path], None]:
    """What a fine-tune adds to final_model/: its EOS id in config.json and
    generation_config.json (so transformers' generate stops where training taught it to), and
    ttexp_origin.json."""
    def add(tmp: Path) -> None:
        for name in ("config.json", "generation_config.json"):
            path = tmp / name
            conf = json.loads(path.read_text()) if path.is_file() else {}
            if conf.get("eos_token_id") is None:
                conf["eos_token_id"] = tokenizer.eos_token_id
                path.write_text(json.dumps(conf, indent=2) + "\n")
        (tmp / ORIGIN_NAME).write_text(json.dumps(origin, indent=2) + "\n")
        add_bos_on_encode(tmp, tokenizer)

    return add


def add_bos_on_encode(model_dir: Path, tokenizer: Any) -> None:
    """Make the saved fast tokenizer (``tokenizer.json``) put BOS first, as training did
    (:meth:`PromptTokenizer.encode`), so ``tokenizer(prompt)`` in plain ``transformers`` gives the
    ids ttexp's eval gives. A tokenizer that already does (TinyLlama's), or that has no BOS or no
    tokenizer.json, is left as it is (ttexp_origin.json's ``prompt_format`` then shows the text)."""
    path = model_dir / "tokenizer.json"
    bos_id = tokenizer.bos_token_id
    if bos_id is None or not path.is_file():
        return
    from tokenizers import Tokenizer, processors

    fast = Tokenizer.from_file(str(path))
    if fast.encode("a").ids[:1] == [bos_id]:
        return
    bos = fast.id_to_token(bos_id)
    fast.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    fast.save(str(path))
    conf_path = model_dir / "tokenizer_config.json"
    conf = json.loads(conf_path.read_text()) if conf_path.is_file() else {}
    conf["add_bos_token"] = True
    conf_path.write_text(json.dumps(conf, indent=2) + "\n")
