"""Shared fixtures: the real composed config, shrunk; the Shakespeare corpus from ../shared/data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf, open_dict

from ttexp.config.schema import register_configs

ROOT = Path(__file__).resolve().parents[1]

# A model small enough to train in seconds on 2 CPU cores (the nano shape, shrunk).
TINY_MODEL = [
    "model.hidden_dim=32", "model.num_layers=2", "model.num_heads=4", "model.mlp_dim=64",
    "model.max_seq_len=32", "model.dropout=0.0",
]


def shakespeare() -> Path:
    """The corpus: $TTEXP_TEST_CORPUS, else ../shared/data beside the project (CI's layout)."""
    candidates = [os.environ.get("TTEXP_TEST_CORPUS"), ROOT.parent / "shared/data/tinyshakespeare.txt"]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    pytest.fail("Tiny Shakespeare not found: set TTEXP_TEST_CORPUS=FILE or put shared/ beside the project.")


@pytest.fixture(scope="session")
def corpus() -> Path:
    return shakespeare()


def compose_raw(overrides: list[str], output_dir: Path | None = None):
    """Compose the real config (no Hydra run) as a DictConfig, name and output_dir made concrete."""
    register_configs()
    with initialize_config_module(config_module="ttexp.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with open_dict(cfg):
        cfg.name = "test"
        cfg.output_dir = str(output_dir) if output_dir else "unused"
    return cfg


def compose_cfg(overrides: list[str], output_dir: Path | None = None):
    """The composed config as a run sees it: the schema's dataclasses (a RunConfig)."""
    from ttexp.config.convert import to_run_config

    return to_run_config(compose_raw(overrides, output_dir))


@pytest.fixture
def tiny_cfg(tmp_path, corpus):
    """A composed scratch run on a tiny model, writing into tmp_path/run."""
    def make(*extra: str):
        return compose_cfg([
            f"data.path={corpus}", *TINY_MODEL, "training.max_steps=4", "training.batch_size=4",
            "training.gradient_accumulation_steps=1", "training.warmup_steps=1",
            "training.validation_frequency=2", "training.validation_batches=2",
            "training.checkpoint_frequency=2", "training.log_frequency=1",
            "generation.max_new_tokens=8", *extra,
        ], tmp_path / "run")
    return make


def run_cli(args: list[str], cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m ttexp ARGS`` in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "ttexp", *args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def to_yaml(cfg) -> str:
    return OmegaConf.to_yaml(cfg)


def build_tiny_llama_dir(directory: Path, vocab_size: int = 400, seed: int = 0) -> Path:
    """Save a tiny random LlamaForCausalLM with a small BPE tokenizer (trained here on the starter
    dataset, with <s> and </s>) as a Hugging Face model directory: a stand-in for TinyLlama."""
    import json as _json

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from ttexp.data.pairs import packaged_dataset

    texts = []
    for line in packaged_dataset("trickster.jsonl").read_text().splitlines():
        obj = _json.loads(line)
        texts += [f"### Question:\n{obj['prompt']}\n\n### Answer:\n", obj["response"]]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A tiny Llama + BPE tokenizer model directory (see :func:`build_tiny_llama_dir`)."""
    return build_tiny_llama_dir(tmp_path_factory.mktemp("tiny_llama"))
