"""Hostile files, paths and environments: no code runs from a file, nothing escapes the run
directory, no secret is written (issue #15). Each test plants a file that would create a marker
if its code ran, or a secret that must not appear anywhere, and checks the marker and every file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_cli, run_in_process
from test_bad_input import Payload, make_pickle_only_dir, make_remote_code_dir

pytestmark = pytest.mark.slow

SECRET = "hf_NotARealTokenButSecret1234"


def _files_containing(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


@pytest.fixture(scope="module")
def earlier(tmp_path_factory, corpus) -> Path:
    """A completed debug=fast run with a checkpoint (checkpoints/step_3) and final_model/."""
    out = tmp_path_factory.mktemp("earlier") / "run"
    assert run_in_process(["debug=fast", f"data.path={corpus}"], out)["status"] == "completed"
    return out


def _rehash(ckpt: Path, name: str) -> None:
    """Make the checkpoint's manifest agree with an edited file (as an attacker could)."""
    from ttexp.files import sha256_of
    from ttexp.train.checkpoint import MANIFEST_NAME

    manifest = json.loads((ckpt / MANIFEST_NAME).read_text())
    manifest["files"][name] = {"bytes": (ckpt / name).stat().st_size, "sha256": sha256_of(ckpt / name)}
    (ckpt / MANIFEST_NAME).write_text(json.dumps(manifest))


def _crafted_checkpoint(earlier: Path, dst: Path) -> Path:
    ckpt = dst / "checkpoints" / "step_3"
    shutil.copytree(earlier / "checkpoints" / "step_3", ckpt)
    return ckpt


def test_crafted_optimizer_pickle_runs_no_code_on_resume(earlier, corpus, tmp_path):
    marker = tmp_path / "OPTIMIZER_RAN"
    ckpt = _crafted_checkpoint(earlier, tmp_path / "src")
    torch.save({"state": Payload(marker)}, ckpt / "optimizer.pt")
    result = run_in_process(["debug=fast", f"data.path={corpus}", f"resume={ckpt}"], tmp_path / "run")
    assert not marker.exists(), "unpickling the optimizer file ran code"
    assert result["status"] == "completed"  # the manifest names the files read: the stray one is not


def test_crafted_rng_pickle_runs_no_code_on_resume(earlier, corpus, tmp_path):
    marker = tmp_path / "RNG_RAN"
    ckpt = _crafted_checkpoint(earlier, tmp_path / "src")
    torch.save({"python": Payload(marker)}, ckpt / "rng.pt")  # the first format's name for it
    run_in_process(["debug=fast", f"data.path={corpus}", f"resume={ckpt}"], tmp_path / "run")
    assert not marker.exists(), "unpickling rng.pt ran code"


def test_pickle_weights_are_never_unpickled(tiny_llama_dir, tmp_path):
    from ttexp.backends.torch_backend import TorchBackend
    from ttexp.config.schema import OptimizerConfig
    from ttexp.errors import TtexpError

    marker = tmp_path / "BIN_RAN"
    bad = make_pickle_only_dir(tiny_llama_dir, tmp_path / "bin_only", marker)
    backend = TorchBackend(torch.device("cpu"), "fp32", OptimizerConfig(), 0.1)
    with pytest.raises(TtexpError, match="Could not load pretrained weights"):
        backend.load_pretrained(str(bad))
    assert not marker.exists()


def test_model_dir_with_auto_map_is_refused_even_when_stdin_says_yes(tiny_llama_dir, tmp_path):
    marker = tmp_path / "REMOTE_CODE_RAN"
    bad = make_remote_code_dir(tiny_llama_dir, tmp_path / "remote", marker)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "ttexp", "debug=fast", "task=finetune",
                           f"init_from={bad}", f"hydra.run.dir={tmp_path}/run"], cwd=ROOT, env=env,
                          input="y\ny\ny\n", capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "auto_map" in out and "trust_remote_code=False" in out
    assert not marker.exists(), "the model directory's own code ran"
    # the other two ways in: the tokenizer and the model loaders refuse it on their own
    from ttexp.backends.torch_backend import TorchBackend
    from ttexp.config.schema import OptimizerConfig
    from ttexp.errors import TtexpError
    from ttexp.models.pretrained import load_tokenizer

    with pytest.raises(TtexpError, match="auto_map"):
        load_tokenizer(bad)
    with pytest.raises(TtexpError, match="auto_map"):
        TorchBackend(torch.device("cpu"), "fp32", OptimizerConfig(), 0.1).load_pretrained(str(bad))
    assert not marker.exists()


def test_run_name_cannot_leave_outputs(corpus, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    proc = run_cli(["debug=fast", f"data.path={corpus}", "name='../../../../escaped; touch pwned'"],
                   cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = list((project / "outputs" / "runs").glob("*/*"))
    assert run_dir.name.endswith("_escaped-touch-pwned")
    assert sorted(p.name for p in project.iterdir()) == ["experiments", "outputs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]
    assert not (project / "pwned").exists()
    result = json.loads((run_dir / "result.json").read_text())
    assert result["name"] == "../../../../escaped; touch pwned"  # the original, in the record


def test_environment_values_are_never_written(corpus, tmp_path):
    """A value from ${oc.env:...} is used but written as its interpolation; a secret-named variable
    never appears in any file of the run, the journal, or the console."""
    env = {**os.environ, "HF_TOKEN": SECRET, "TTEXP_TEST_NOTES": "notes-from-env"}
    journal = tmp_path / "experiments.md"
    args = [sys.executable, "-m", "ttexp", "debug=fast", f"data.path={corpus}",
            "logger.wandb.notes=${oc.env:HF_TOKEN}", "logger.wandb.project=${oc.env:TTEXP_TEST_NOTES}",
            f"hydra.run.dir={tmp_path}/outputs/run", f"sweep.journal={journal}",
            f"sweep.outputs_root={tmp_path}/outputs"]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = tmp_path / "outputs" / "run"
    resolved = (run / "resolved.yaml").read_text()
    assert "notes: ${oc.env:HF_TOKEN}" in resolved and "project: ${oc.env:TTEXP_TEST_NOTES}" in resolved
    assert _files_containing(tmp_path, SECRET) == []
    assert _files_containing(tmp_path, "notes-from-env") == []
    assert SECRET not in proc.stdout + proc.stderr
    assert journal.is_file()


def test_checkpoint_config_cannot_pull_a_secret_into_the_record(earlier, corpus, tmp_path):
    """A checkpoint's config.yaml that interpolates ${oc.env:HF_TOKEN} is read as text: the token is
    neither resolved into the mismatch message nor written to result.json or training.log."""
    ckpt = _crafted_checkpoint(earlier, tmp_path / "src")
    text = (ckpt / "config.yaml").read_text()
    (ckpt / "config.yaml").write_text(text.replace("num_layers: 2", "num_layers: ${oc.env:HF_TOKEN}"))
    _rehash(ckpt, "config.yaml")  # a crafted checkpoint with a consistent manifest
    env = {**os.environ, "HF_TOKEN": SECRET}
    proc = subprocess.run([sys.executable, "-m", "ttexp", "debug=fast", f"data.path={corpus}",
                           f"resume={ckpt}", f"hydra.run.dir={tmp_path}/run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "different model config" in out and "${oc.env:HF_TOKEN}" in out
    assert SECRET not in out
    assert _files_containing(tmp_path / "run", SECRET) == []
    assert "different model config" in json.loads((tmp_path / "run" / "result.json").read_text())["error"]


def test_full_disk_while_writing_final_model_loses_no_training(corpus, tmp_path, monkeypatch):
    import errno

    from ttexp.backends.torch_backend import TorchBackend

    def full(self, directory, tokenizer):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "run dir; echo pwned"
    with monkeypatch.context() as m:
        m.setattr(TorchBackend, "save_pretrained", full)
        result = run_in_process(["debug=fast", f"data.path={corpus}", "training.checkpoint_frequency=0"], out)
    assert result["status"] == "failed"
    assert f"the disk is full at {out / 'final_model'} (" in result["error"] and "bytes free)" in result["error"]
    assert "No training is lost" in result["error"]
    # the hint is one pasteable, quoted command that repeats the overrides
    hint = result["error"].split("run again with: ")[1]
    import shlex

    argv = shlex.split(hint)
    assert argv[3:] == ["debug=fast", f"data.path={corpus}", "training.checkpoint_frequency=0",
                        "resume=auto", f"hydra.run.dir={out}"]
    assert (out / "checkpoints" / "step_3").is_dir() and not (out / "final_model").exists()
    resumed = run_in_process(["debug=fast", f"data.path={corpus}", "training.checkpoint_frequency=0",
                              "resume=auto"], out)
    assert resumed["status"] == "completed" and (out / "final_model" / "model.safetensors").is_file()
    assert resumed["final_train_loss"] == result["final_train_loss"]
