"""Every kind of bad input gets one clear message and a non-zero exit, never a bare traceback,
and leaves every earlier result as it was (an earlier run's directory and the inputs are hashed
before and after each row)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from conftest import TINY, run_cli, run_in_process

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
    make_remote_code_dir(d / "tiny_llama", d / "remote_code", d / "REMOTE_CODE_RAN")
    run_in_process([TINY, f"data.path={corpus}", "training.max_steps=2"], d / "earlier")
    return d


def make_remote_code_dir(src: Path, dst: Path, marker: Path) -> Path:
    """A copy of the model directory ``src`` whose config.json asks for its own code (``auto_map``,
    no ``model_type``); that code would create ``marker``."""
    import shutil

    shutil.copytree(src, dst)
    conf = json.loads((dst / "config.json").read_text())
    conf.pop("model_type", None)
    conf["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel",
                        "AutoTokenizer": ["evil.EvilTokenizer", None]}
    (dst / "config.json").write_text(json.dumps(conf))
    (dst / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    return dst


class Payload:
    """Unpickling this creates the file ``marker`` (a stand-in for any code)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def make_pickle_only_dir(src: Path, dst: Path, marker: Path) -> Path:
    """A copy of ``src`` whose weights are a pytorch_model.bin pickle that would create ``marker``."""
    import shutil

    shutil.copytree(src, dst)
    (dst / "model.safetensors").unlink()
    torch.save({"payload": Payload(marker)}, dst / "pytorch_model.bin")
    return dst


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` -> its SHA-256 (links by their target)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p)] = "link:" + str(p.readlink())
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


EVAL = ["task=eval", "eval.checkpoint={d}/earlier/final_model"]

CASES = [
    # (id, args, expected text, exit code)
    ("unknown key", ["training.lr=1e-3"], "training.lr is not a configuration key; did you mean "
     "training.learning_rate?", 2),
    ("misspelt section", ["trainig.seed=1"], "did you mean training.seed?", 2),
    ("plus adds to a typed section", ["+training.lr=1e-3"],
     "'+' cannot add a key to the typed section training (ttexp would ignore it); did you mean "
     "training.learning_rate?", 2),
    ("force-add to a typed section", ["++training.lr=1e-3"],
     "'+' cannot add a key to the typed section training", 2),
    ("unknown top-level key", ["+learning_rate=1e-3"], "cannot add a key to ttexp's typed config", 2),
    ("unknown key in a sweep", ["-m", "training.batch_sise=4,8"], "did you mean training.batch_size?", 2),
    ("unknown option", ["model=nope"], "Could not find 'model/nope'", 1),
    ("wrong type", ["training.batch_size=abc"], "could not be converted to Integer", 1),
    ("bad enum", ["backend=cuda"], "Invalid value 'cuda', expected one of [auto, torch, ttml]", 1),
    ("NaN learning rate", ["training.learning_rate=nan"],
     "training.learning_rate=nan must be a finite number", 1),
    ("infinite learning rate", ["training.learning_rate=inf"],
     "training.learning_rate=inf must be a finite number", 1),
    ("NaN clipping norm", ["training.clip_grad_norm_max_norm=nan"],
     "training.clip_grad_norm_max_norm=nan must be a finite number", 1),
    ("negative seed", ["training.seed=-1"], "training.seed=-1 must be in 0 .. 4294967295", 1),
    ("huge seed", ["training.seed=18446744073709551616"],
     "training.seed=18446744073709551616 must be in 0 .. 4294967295", 1),
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
    ("model asks to run its code", ["task=finetune", "init_from={d}/remote_code"],
     "has 'auto_map': the model asks to run its own Python code", 1),
    ("output dir not writable", ["data.path={corpus}", "hydra.run.dir={d}/a_file/run"],
     "cannot write the output directory", 2),
    ("output_dir is under a file", ["data.path={corpus}", "output_dir={d}/a_file/run"],
     "Choose another with output_dir=DIR", 2),
    ("fresh run into an earlier run", ["data.path={corpus}", "hydra.run.dir={d}/earlier"],
     "already holds a run with checkpoints", 2),
    ("output_dir at an earlier run", ["data.path={corpus}", "output_dir={d}/earlier"],
     "already holds a run with checkpoints", 2),
    ("results file climbs out", [*EVAL, "eval.results_file=../../escaped.txt"],
     "eval.results_file=../../escaped.txt must be a file name inside the run directory", 1),
    ("invalid combination", ["model.num_heads=3"], "model.num_heads=3 does not divide model.hidden_dim=32", 1),
]


@pytest.mark.parametrize("name,args,expected,code", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, args, expected, code, files, corpus, tmp_path):
    args = [a.format(d=files, corpus=corpus) for a in args]
    if not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir={tmp_path}/run")
    before = snapshot(files)
    flags = [a for a in args if a.startswith("-")]  # before the overrides, as Hydra's parser wants
    proc = run_cli([*flags, "debug=fast", *[a for a in args if a not in flags]])
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out
    assert expected in out
    assert "Traceback" not in out
    assert snapshot(files) == before, "an earlier run or an input file was changed"
    assert not (files / "REMOTE_CODE_RAN").exists(), "code from a model directory ran"
    assert not (files.parent / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()
    result = tmp_path / "run" / "result.json"
    if result.exists():  # runs that got as far as the run directory say why in result.json
        r = json.loads(result.read_text())
        assert r["status"] == "failed" and r["error"]
