"""Shared fixtures: the real composed config, shrunk (``debug=tiny``); runs in this process or on
the command line; the Shakespeare corpus from ../shared/data.

Where a test is about what a run records (losses, resume, eval outputs), it runs in this process
(:func:`run_in_process`); where it is about the command line (exit codes, signals, console text,
sweeps, the distributed launcher), in a subprocess (:func:`run_cli`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

# One torch thread, here and in every `python -m ttexp` the tests start (set before torch is
# imported; an OMP_NUM_THREADS of your own wins). The test models are tiny, so a second thread
# saves little, and on 2 cores shared with another process OpenMP's thread team waits on the busy
# core: a tiny run took 7x longer with 2 threads than with 1.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from omegaconf import OmegaConf, open_dict  # noqa: E402

from ttexp.config.compose import compose_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# The tiny model and short schedule of conf/debug/tiny.yaml (hidden 32, 2 layers, 4 heads, mlp 64,
# context 32, no dropout; 4 steps of batch 4, validation and checkpoints every 2 steps).
TINY = "debug=tiny"


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


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> None:
    """Hold torch to OMP_NUM_THREADS even when something imported it before this conftest."""
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@contextmanager
def logging_restored() -> Iterator[None]:
    """Put the root and ``ttexp`` loggers back as they were: an in-process Hydra run (a sweep)
    configures logging with a file handler in its run directory, which is deleted later."""
    saved = {name: (lg, lg.level, lg.propagate, list(lg.handlers))
             for name in ("", "ttexp") for lg in [logging.getLogger(name)]}
    try:
        yield
    finally:
        for lg, level, propagate, handlers in saved.values():
            for h in list(lg.handlers):
                if h not in handlers and not type(h).__module__.startswith("_pytest"):
                    lg.removeHandler(h)
                    h.close()
            for h in handlers:
                if h not in lg.handlers:
                    lg.addHandler(h)
            lg.setLevel(level)
            lg.propagate = propagate


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    with logging_restored():
        yield


def compose_raw(overrides: list[str], output_dir: Path | None = None):
    """Compose the real config (no Hydra run) as a DictConfig, name and output_dir made concrete."""
    cfg = compose_config(overrides)
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
    """A composed ``debug=tiny`` scratch run on the corpus, writing into tmp_path/run."""
    def make(*extra: str):
        return compose_cfg([TINY, f"data.path={corpus}", *extra], tmp_path / "run")
    return make


def read_result(run_dir: Path) -> dict[str, Any]:
    """A run directory's result.json."""
    return json.loads((Path(run_dir) / "result.json").read_text())


def run_cfg(cfg, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run a composed config in this process (:func:`ttexp.runner.run`, which writes the record in
    ``cfg.output_dir``) and return its result.json as written."""
    from ttexp.runner import run

    run(cfg, overrides=overrides)
    return read_result(cfg.output_dir)


def run_in_process(overrides: list[str], output_dir: Path) -> dict[str, Any]:
    """``python -m ttexp OVERRIDES hydra.run.dir=OUTPUT_DIR``, run in this process; returns its
    result.json. Hydra's own part is left out: no .hydra/, no training.log and no console (use
    ``caplog`` or :func:`log_to` for the log)."""
    return run_cfg(compose_cfg(overrides, output_dir), overrides=list(overrides))


@contextmanager
def log_to(path: Path) -> Iterator[None]:
    """Write the ``ttexp`` log (INFO and up, the lines the console shows) to ``path`` meanwhile."""
    logger = logging.getLogger("ttexp")
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()


def run_cli(args: list[str], cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m ttexp ARGS`` in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "ttexp", *args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def start_cli(args: list[str]) -> subprocess.Popen:
    """Start ``python -m ttexp ARGS`` in the background (stdout and stderr together, as text), for
    tests that signal or kill it while it runs."""
    return subprocess.Popen([sys.executable, "-m", "ttexp", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until ``path`` exists; fails if ``proc`` ends first (with its output) or after
    ``timeout`` seconds."""
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path} appeared:\n{proc.stdout.read()}"
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.01)


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


def bf16_exact_copy(src: Path, dst: Path) -> Path:
    """A copy of the model directory ``src`` with its weights rounded to bfloat16 (stored as fp32)
    and RMSNorm's epsilon set to ttml's fixed 1e-5: ttml holds weights in bf16, so on this base
    the ttml double, ``transformers`` and PEFT compute from the same numbers."""
    import json as _json
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    conf = _json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(_json.dumps({**conf, "rms_norm_eps": 1e-5}))
    w = load_file(str(src / "model.safetensors"))
    save_file({k: v.to(torch.bfloat16).float() for k, v in w.items()}, str(dst / "model.safetensors"),
              metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A tiny Llama + BPE tokenizer model directory (see :func:`build_tiny_llama_dir`)."""
    return build_tiny_llama_dir(tmp_path_factory.mktemp("tiny_llama"))
