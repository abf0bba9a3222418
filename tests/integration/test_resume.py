"""Exact resume after SIGKILL, fallback past a damaged checkpoint, clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import json
import logging
import shutil
import signal
from pathlib import Path

import pytest

from conftest import run_cli, run_in_process, start_cli, wait_for

pytestmark = pytest.mark.slow

# Dropout on and several micro-steps: the resumed losses can only match if the weights, AdamW
# state, the torch RNG (dropout masks) and the data position are all restored.
ARGS = ["model.hidden_dim=64", "model.num_layers=2", "model.num_heads=4", "model.mlp_dim=128",
        "model.max_seq_len=64", "model.dropout=0.1", "training.precision=fp32",
        "training.max_steps=40", "training.batch_size=8", "training.gradient_accumulation_steps=2",
        "training.warmup_steps=4", "training.validation_frequency=10", "training.validation_batches=2",
        "training.checkpoint_frequency=5", "training.log_frequency=5", "generation.max_new_tokens=4"]


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("full") / "run"
    assert run_in_process([*ARGS, f"data.path={corpus}"], out)["status"] == "completed"
    return out


def test_sigkill_then_resume_matches_the_uninterrupted_run_exactly(tmp_path, corpus, uninterrupted,
                                                                  caplog):
    caplog.set_level(logging.INFO, logger="ttexp")
    out = tmp_path / "run"
    args = [*ARGS, f"data.path={corpus}", f"hydra.run.dir={out}"]
    proc = start_cli(args)
    wait_for(out / "checkpoints" / "step_10", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(losses(out))
    assert killed_at < 40, "the run finished before it was killed"

    result = run_in_process([*ARGS, f"data.path={corpus}", "resume=auto"], out)
    assert result["status"] == "completed", result["error"]
    assert "Resumed from" in caplog.text
    got, want = losses(out), losses(uninterrupted)
    assert sorted(got) == list(range(1, 41))  # lines logged after the last checkpoint were dropped
    assert got == want  # exactly, not approximately
    assert result["status"] == "completed" and result["resumed_from"].endswith("step_" + str(
        int(Path(result["resumed_from"]).name[5:])))
    assert "=== Resumed from step" in (out / "validation.txt").read_text()


def _flip_a_byte_in_tensor_data(ckpt: Path) -> str:
    f = ckpt / "model.safetensors"
    data = bytearray(f.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")  # safetensors: u64 header length, JSON, data
    data[header + (len(data) - header) // 2] ^= 0x01  # the file still parses; only the hash knows
    f.write_bytes(bytes(data))
    return "model.safetensors is corrupt (SHA-256"


def _rehash(ckpt: Path, name: str) -> None:
    """Make the manifest agree with an edited file, so a check other than the hash must catch it."""
    from ttexp.files import sha256_of

    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"][name] = {"bytes": (ckpt / name).stat().st_size, "sha256": sha256_of(ckpt / name)}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


def _wrong_step(ckpt: Path) -> str:
    f = ckpt / "trainer_state.json"
    state = json.loads(f.read_text())
    f.write_text(json.dumps({**state, "step": 35}))
    _rehash(ckpt, f.name)
    return "trainer_state.json says step 35, the directory step 40"


def _unparseable_config(ckpt: Path) -> str:
    (ckpt / "config.yaml").write_text("model: [unclosed\n")
    _rehash(ckpt, "config.yaml")
    return "config.yaml does not parse"


def _truncated_weights(ckpt: Path) -> str:
    f = ckpt / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return "model.safetensors is corrupt (size"


@pytest.mark.parametrize("damage", [_flip_a_byte_in_tensor_data, _wrong_step, _unparseable_config,
                                    _truncated_weights])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, corpus, uninterrupted,
                                                                 caplog, damage):
    caplog.set_level(logging.INFO, logger="ttexp")
    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out, symlinks=True)
    said = damage(out / "checkpoints" / "step_40")
    result = run_in_process([*ARGS, f"data.path={corpus}", "resume=auto"], out)
    assert result["status"] == "completed", result["error"]
    assert "Skipping damaged checkpoint" in caplog.text and said in caplog.text
    assert "at step 35" in caplog.text
    assert losses(out) == losses(uninterrupted)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_checkpoint_and_records_interrupted(tmp_path, corpus, sig):
    out = tmp_path / "run"
    proc = start_cli([*ARGS, f"data.path={corpus}", f"hydra.run.dir={out}", "training.max_steps=2000"])
    wait_for(out / "checkpoints" / "step_5", proc)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "interrupted"
    step = result["steps_done"]
    assert (out / "checkpoints" / f"step_{step}" / "trainer_state.json").is_file()
    assert f"Stopped by {sig.name} after step {step}" in output and "resume=auto" in output
    assert "Traceback" not in output


def test_resume_from_a_different_model_is_refused(tmp_path, corpus):
    out = tmp_path / "run"
    base = [*ARGS, f"data.path={corpus}"]
    assert run_in_process([*base, "training.max_steps=5"], out)["status"] == "completed"
    proc = run_cli([*base, f"hydra.run.dir={out}", "model.hidden_dim=128", "resume=auto"])
    assert proc.returncode != 0
    assert "different model config" in proc.stdout and "model.hidden_dim: checkpoint 64, this run 128" in proc.stdout


def test_retention_keeps_last_n_and_best_n_with_an_index(tmp_path, corpus):
    result = run_in_process([f"data.path={corpus}", *ARGS, "training.max_steps=30",
                             "training.keep_last_n=1", "training.keep_best_n=1"], tmp_path / "run")
    assert result["status"] == "completed"
    ckpts = tmp_path / "run" / "checkpoints"
    index = json.loads((ckpts / "index.json").read_text())
    kept = sorted(int(p.name[5:]) for p in ckpts.glob("step_*"))
    assert [c["step"] for c in index["checkpoints"]] == kept
    best = index["best"]
    assert kept == sorted({30, best["step"]})
    assert (tmp_path / "run" / "best").resolve() == (ckpts / f"step_{best['step']}").resolve()
    assert best["val_loss"] == min(c["val_loss"] for c in index["checkpoints"] if c["val_loss"] is not None)


def test_full_disk_while_checkpointing_fails_cleanly_and_keeps_earlier_checkpoints(
        tmp_path, corpus, monkeypatch):
    import errno

    from ttexp.backends.torch_backend import TorchBackend

    calls = {"n": 0}
    real = TorchBackend.optimizer_state

    def flaky(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self)

    monkeypatch.setattr(TorchBackend, "optimizer_state", flaky)
    result = run_in_process([f"data.path={corpus}", *ARGS, "training.max_steps=20"], tmp_path / "run")
    assert result["status"] == "failed"
    assert "the disk is full at" in result["error"] and "bytes free" in result["error"]
    assert "Nothing was lost: the last good checkpoint is" in result["error"]
    assert result["error"].split("last good checkpoint is ")[1].split(".")[0].endswith("step_5")
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir() if p.is_dir()) == ["step_5"]  # no half-written step_10


def test_a_fresh_run_never_lands_on_an_earlier_runs_checkpoints(tmp_path, corpus):
    out = tmp_path / "run"
    base = [*ARGS, f"data.path={corpus}", "training.max_steps=5"]
    assert run_in_process(base, out)["status"] == "completed"
    before = (out / "result.json").read_text()
    proc = run_cli([*base, f"hydra.run.dir={out}"])
    assert proc.returncode == 2
    assert "already holds a run with checkpoints (newest: step_5)" in proc.stderr
    assert (out / "result.json").read_text() == before  # nothing of the earlier run was touched


def test_resuming_with_changed_training_settings_warns(tmp_path, corpus, caplog):
    out = tmp_path / "run"
    base = [*ARGS, f"data.path={corpus}"]
    assert run_in_process([*base, "training.max_steps=5"], out)["status"] == "completed"
    result = run_in_process([*base, "training.max_steps=10", "training.seed=7", "resume=auto"], out)
    assert result["status"] == "completed", result["error"]
    assert "Resuming with settings that differ" in caplog.text
    assert "training.seed: checkpoint 42, this run 7" in caplog.text
