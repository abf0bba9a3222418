"""The one checkpoint format (ttexp.train.checkpoint): safetensors + JSON, a manifest written last
with every file's size and SHA-256, verification that catches damage, the first format refused,
and no Python object stream read from any directory a user can point at."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import compose_cfg, run_in_process
from ttexp.backends.torch_backend import TorchBackend
from ttexp.config.schema import OptimizerConfig
from ttexp.data.batch import Batch
from ttexp.errors import CheckpointError
from ttexp.models.spec import ModelSpec
from ttexp.train import checkpoint as ck
from ttexp.train.rng import rng_state, set_rng_state

SRC = Path(__file__).resolve().parents[2] / "src"
FILES = {"model.safetensors", "optimizer.safetensors", "optimizer.json", "rng.safetensors",
         "rng.json", "trainer_state.json", "config.yaml", "manifest.json"}


def _backend() -> TorchBackend:
    torch.manual_seed(0)
    b = TorchBackend(torch.device("cpu"), "fp32", OptimizerConfig(), weight_decay=0.1)
    b.build_model(ModelSpec(name="t", vocab_size=64, hidden_dim=32, num_layers=1, num_heads=4,
                            num_kv_heads=4, mlp_dim=64, max_seq_len=16))
    w = np.random.default_rng(0).integers(0, 64, size=(2, 17))
    b.micro_step(Batch(w[:, :-1], w[:, 1:]), 1.0)
    b.optimizer_step(1e-3, 1.0)
    return b


@pytest.fixture
def saved(tmp_path) -> Path:
    cfg = compose_cfg(["debug=tiny"], tmp_path / "run")
    manager = ck.CheckpointManager(tmp_path / "run", cfg, None, None)
    return manager.save(7, _backend(), {"step": 7}, None)


def test_a_checkpoint_is_safetensors_and_json_with_a_manifest_of_sizes_and_hashes(saved):
    assert {p.name for p in saved.iterdir()} == FILES
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["format"] == "ttexp-checkpoint" and manifest["version"] == 2
    assert set(manifest["files"]) == FILES - {"manifest.json"}
    for name, entry in manifest["files"].items():
        assert entry["bytes"] == (saved / name).stat().st_size
        assert entry["sha256"] == ck.sha256_of(saved / name)
        assert not (saved / name).read_bytes().startswith((b"\x80", b"PK"))  # no pickle, no zip
    assert ck.verify_checkpoint(saved)["step"] == 7


def test_load_restores_weights_optimizer_and_random_state_exactly(saved):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    want = (random.random(), np.random.rand(), torch.rand(1))
    b = _backend()
    b.optimizer.state.clear()
    ck.load_checkpoint(saved, b)
    a = _backend()
    for p, q in zip(a.optimizer.param_groups[0]["params"], b.optimizer.param_groups[0]["params"]):
        assert torch.equal(a.optimizer.state[p]["exp_avg_sq"], b.optimizer.state[q]["exp_avg_sq"])
    ck.load_checkpoint(saved, b)
    first = (random.random(), np.random.rand(), torch.rand(1))
    ck.load_checkpoint(saved, b)
    assert (random.random(), np.random.rand(), torch.rand(1)) == first  # restored, every generator
    assert first != want


def test_rng_state_round_trips_through_json_with_a_cached_gaussian():
    random.gauss(0, 1), np.random.standard_normal()  # both generators hold a cached value now
    state = rng_state()
    state = type(state)(state.tensors, json.loads(json.dumps(state.scalars)))
    want = (random.gauss(0, 1), np.random.standard_normal(), torch.randn(2).tolist())
    set_rng_state(state)
    assert (random.gauss(0, 1), np.random.standard_normal(), torch.randn(2).tolist()) == want


@pytest.mark.parametrize("damage, said", [
    (lambda d: (d / "manifest.json").unlink(), "manifest.json is missing"),
    (lambda d: (d / "optimizer.json").write_text("{}"), "optimizer.json is corrupt (size"),
    (lambda d: (d / "rng.safetensors").unlink(), "rng.safetensors is missing"),
    (lambda d: (d / "trainer_state.json").write_text('{"step": 8}'), "trainer_state.json is corrupt"),
])
def test_damage_is_named(saved, damage, said):
    damage(saved)
    with pytest.raises(CheckpointError, match=said.replace("(", r"\(")):
        ck.verify_checkpoint(saved)


def test_a_wrong_step_with_a_matching_manifest_is_still_caught(saved):
    (saved / "trainer_state.json").write_text('{"step": 8}')
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["files"]["trainer_state.json"] = {"bytes": (saved / "trainer_state.json").stat().st_size,
                                               "sha256": ck.sha256_of(saved / "trainer_state.json")}
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="says step 8, the directory step 7"):
        ck.verify_checkpoint(saved)


class _Payload:
    """Unpickling this writes a marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def _first_format_dir(directory: Path, marker: Path, weights_from: Path) -> Path:
    """A checkpoint as the first format wrote it, its object streams replaced by a payload."""
    directory.mkdir(parents=True)
    for name in ("optimizer.pt", "rng.pt", "optimizer_ttml.pkl", "pytorch_model.bin"):
        (directory / name).write_bytes(pickle.dumps(_Payload(marker)))
    for name in ("model.safetensors", "config.json", "trainer_state.json", "config.yaml"):
        if (weights_from / name).exists():
            (directory / name).write_bytes((weights_from / name).read_bytes())
    return directory


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "run"
    assert run_in_process(["debug=tiny", f"data.path={corpus}"], out)["status"] == "completed"
    return out


def test_the_first_format_is_refused_with_a_way_forward_and_runs_no_code(tmp_path, corpus, tiny_run):
    marker = tmp_path / "marker"
    old = _first_format_dir(tmp_path / "old" / "checkpoints" / "step_4", marker,
                            tiny_run / "checkpoints" / "step_4")
    with pytest.raises(ck.OldCheckpointFormat, match="init_from="):
        ck.verify_checkpoint(old)
    base = ["debug=tiny", f"data.path={corpus}"]
    result = run_in_process([*base, f"resume={old}"], tmp_path / "a")
    assert result["status"] == "failed" and "first format" in result["error"]
    result = run_in_process([*base, "resume=auto"], tmp_path / "old")  # only first-format ones
    assert result["status"] == "failed" and f"init_from={old}" in result["error"]
    result = run_in_process([*base, f"init_from={old}"], tmp_path / "b")
    assert result["status"] == "completed", result["error"]
    final = _first_format_dir(tmp_path / "final", marker, tiny_run / "final_model")
    (final / "model.safetensors").unlink()  # transformers would have to read pytorch_model.bin
    result = run_in_process([*base, "task=eval", f"eval.checkpoint={final}"], tmp_path / "c")
    assert result["status"] == "failed"
    assert not marker.exists()


def test_no_object_stream_is_read_anywhere_in_src():
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert "pickle" not in text and "weights_only=False" not in text, path
        assert "torch.load(" not in text, path
