"""Every kind of bad input gets one clear message and a non-zero exit, never a bare traceback."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(tmp_path_factory, corpus):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.txt").write_text("")
    (d / "short.txt").write_text("To be, or not to be.\n")
    (d / "no_weights").mkdir()
    (d / "malformed.jsonl").write_text(
        '{"prompt": "What is a loss?", "response": "A score of wrongness."}\n'
        '{"prompt": "What is a batch?", "response": \n'
        '{"prompt": 7, "response": "A number is not a prompt."}\n')
    from conftest import build_tiny_llama_dir

    build_tiny_llama_dir(d / "tiny_llama")
    (d / "a_file").write_text("x")
    # Weights of a model twice as wide as debug=tiny's.
    from ttexp.backends.torch_backend import TorchBackend
    from ttexp.config.schema import OptimizerConfig
    from ttexp.models.spec import ModelSpec

    wide = TorchBackend(torch.device("cpu"), "fp32", OptimizerConfig(beta2=0.95), 0.1)
    wide.build_model(ModelSpec(name="w", vocab_size=256, hidden_dim=64, num_layers=2, num_heads=4,
                               num_kv_heads=4, mlp_dim=64, max_seq_len=32))
    (d / "wide").mkdir()
    wide.save_weights(d / "wide")
    return d


CASES = [
    # (id, args, expected text, exit code)
    ("unknown key", ["training.lr=1e-3"], "Key 'lr' not in 'TrainingConfig'", 1),
    ("unknown option", ["model=nope"], "Could not find 'model/nope'", 1),
    ("wrong type", ["training.batch_size=abc"], "could not be converted to Integer", 1),
    ("bad enum", ["backend=cuda"], "Invalid value 'cuda', expected one of [auto, torch, ttml]", 1),
    ("missing data file", ["data.path={d}/missing.txt"], "does not exist or is not a file", 1),
    ("data path is a directory", ["data.path={d}"], "does not exist or is not a file", 1),
    ("empty corpus", ["data.path={d}/empty.txt"], "is empty", 1),
    ("corpus shorter than a sequence", ["data.path={d}/short.txt"], "fewer than one sequence", 1),
    ("missing weights", ["data.path={corpus}", "init_from={d}/no_weights"], "No model.safetensors in", 1),
    ("mismatched weights", ["data.path={corpus}", "init_from={d}/wide"],
     "model.embed_tokens.weight: file has (256, 64), model has (256, 32)", 1),
    ("resume from nothing", ["data.path={corpus}", "resume={d}/no_weights"], "no valid checkpoint there", 1),
    ("resume and init_from", ["data.path={corpus}", "resume=auto", "init_from={d}/wide"],
     "resume and init_from are both set", 1),
    ("malformed JSONL", ["task=finetune", "init_from={d}/tiny_llama", "data.path={d}/malformed.jsonl"],
     "line 2", 1),
    ("fine-tune without weights", ["task=finetune", "data.path={d}/malformed.jsonl"],
     "needs pretrained weights", 1),
    ("output dir not writable", ["data.path={corpus}", "hydra.run.dir={d}/a_file/run"],
     "cannot write the output directory", 2),
    ("invalid combination", ["model.num_heads=3"], "model.num_heads=3 does not divide model.hidden_dim=32", 1),
]


@pytest.mark.parametrize("name,args,expected,code", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, args, expected, code, files, corpus, tmp_path):
    args = [a.format(d=files, corpus=corpus) for a in args]
    if not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir={tmp_path}/run")
    proc = run_cli([TINY, "training.max_steps=2", "training.warmup_steps=0", *args])
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out
    assert expected in out
    assert "Traceback" not in out
    result = tmp_path / "run" / "result.json"
    if result.exists():  # runs that got as far as the run directory say why in result.json
        r = json.loads(result.read_text())
        assert r["status"] == "failed" and r["error"]
