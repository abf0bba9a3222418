"""python -m ttexp.doctor: what it reports and its exit status, with a monkeypatched environment."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ttml_double as dbl  # noqa: E402

from ttexp.tools import doctor
from ttexp.train import memory  # noqa: E402


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in ("TT_METAL_HOME", "TT_METAL_RUNTIME_ROOT", "TT_MESH_GRAPH_DESC_PATH", "WANDB_API_KEY",
                "WANDB_MODE", "TTEXP_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(doctor, "TT_DEVICE_DIR", tmp_path / "dev")
    monkeypatch.setitem(sys.modules, "ttml", None)  # import ttml raises ImportError
    # Forget a wandb that earlier tests imported, so "doctor does not import wandb" is checkable.
    for name in [m for m in sys.modules if m == "wandb" or m.startswith("wandb.")]:
        monkeypatch.delitem(sys.modules, name)
    return tmp_path


def devices(tmp_path, n):
    d = tmp_path / "dev"
    d.mkdir(exist_ok=True)
    for i in range(n):
        (d / str(i)).touch()


def report(capsys, *args):
    code = doctor.main(list(args))
    return code, capsys.readouterr().out


def test_torch_run_with_data_passes(clean_env, corpus, capsys):
    code, out = report(capsys, "backend=torch", f"data.path={corpus}")
    assert code == 0, out
    assert "[  ok] Python" in out and "[  ok] torch" in out and str(corpus) in out
    assert "ttml is not installed" in out and "Nothing blocks backend=torch" in out
    assert "wandb" not in sys.modules


def test_missing_data_blocks_the_run(clean_env, capsys):
    code, out = report(capsys, "backend=torch", "data.path=/nope/tiny.txt")
    assert code == 1 and "/nope/tiny.txt does not exist; fix data.path" in out


def test_backend_ttml_without_ttml_blocks(clean_env, corpus, capsys):
    code, out = report(capsys, "backend=ttml", f"data.path={corpus}")
    assert code == 1
    assert "[FAIL] ttml" in out and "[FAIL] tt-metal" in out and "[FAIL] devices" in out


def test_unrelated_pypi_ttml_is_named(clean_env, corpus, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ttml", SimpleNamespace(__file__="/site/ttml/__init__.py"))
    monkeypatch.setattr(doctor, "_dist_version", lambda name: "0.1.0" if name == "ttml" else None)
    code, out = report(capsys, "backend=ttml", f"data.path={corpus}")
    assert code == 1 and "not Tenstorrent's tt-train package" in out
    assert "pip uninstall ttml" in out


def test_ttml_on_a_ready_n300(clean_env, corpus, capsys, monkeypatch):
    ttml, _ = dbl.make()
    monkeypatch.setitem(sys.modules, "ttml", ttml)
    root = clean_env / "tt-metal"
    root.mkdir()
    mgd = clean_env / "mgd.textproto"
    mgd.write_text(MGD_N300)
    monkeypatch.setenv("TT_METAL_RUNTIME_ROOT", str(root))
    monkeypatch.setenv("TT_MESH_GRAPH_DESC_PATH", str(mgd))
    devices(clean_env, 2)
    code, out = report(capsys, "backend=auto", "hardware=n300", f"data.path={corpus}")
    assert code == 0, out
    assert "API generation B" in out and "2 Tenstorrent device(s) visible; hardware=n300 needs 2" in out
    assert dbl.state().opened == 0  # read-only: no device was opened
    assert "(dims [1, 2])" in out


MGD_N300 = """mesh_descriptors {
  name: "M0"
  arch: WORMHOLE_B0
  device_topology { dims: [ 1, 2 ] dim_types: [ LINE, RING ] }
  host_topology { dims: [ 1 ] }
}
"""


def test_mesh_graph_descriptor_for_another_mesh_blocks(clean_env, corpus, capsys, monkeypatch):
    ttml, _ = dbl.make("C")
    monkeypatch.setitem(sys.modules, "ttml", ttml)
    monkeypatch.setenv("TT_METAL_HOME", str(clean_env))
    mgd = clean_env / "t3k.textproto"
    mgd.write_text(MGD_N300.replace("[ 1, 2 ]", "[ 2, 4 ]"))
    monkeypatch.setenv("TT_MESH_GRAPH_DESC_PATH", str(mgd))
    devices(clean_env, 2)
    code, out = report(capsys, "backend=ttml", "hardware=n300", f"data.path={corpus}")
    assert code == 1
    assert "describes a [2, 4] mesh but the run opens [1, 2]" in out
    mgd.write_text("not a descriptor")
    code, out = report(capsys, "backend=ttml", "hardware=n300", f"data.path={corpus}")
    assert code == 0 and "no device_topology dims found" in out, out


def test_mesh_larger_than_the_machine_and_missing_mgd_file(clean_env, corpus, capsys, monkeypatch):
    ttml, _ = dbl.make()
    monkeypatch.setitem(sys.modules, "ttml", ttml)
    monkeypatch.setenv("TT_METAL_HOME", str(clean_env))
    monkeypatch.setenv("TT_MESH_GRAPH_DESC_PATH", str(clean_env / "missing.textproto"))
    devices(clean_env, 1)
    code, out = report(capsys, "hardware=t3k", f"data.path={corpus}")
    assert code == 1
    assert "1 Tenstorrent device(s) visible" in out and "needs 8" in out
    assert "missing.textproto does not exist" in out


def test_wandb_state_without_importing_wandb(clean_env, corpus, capsys, monkeypatch):
    monkeypatch.setattr(doctor.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "wandb" else None)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    _, out = report(capsys, "backend=torch", f"data.path={corpus}")
    assert "logged in (WANDB_API_KEY)" in out
    monkeypatch.delenv("WANDB_API_KEY")
    _, out = report(capsys, "backend=torch", f"data.path={corpus}")
    assert "installed, not logged in" in out
    assert "wandb" not in sys.modules


def test_weights_paths(clean_env, corpus, capsys, tmp_path, monkeypatch):
    # the memory plan is tested on its own (test_memory_plan.py): here TinyLlama always fits
    monkeypatch.setattr(memory, "torch_capacity", lambda device: ("big host", 10**15))
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out = report(capsys, "backend=torch", f"data.path={corpus}", f"init_from={empty}")
    assert code == 1 and "holds no *.safetensors" in out
    (empty / "model.safetensors").write_bytes(b"")
    code, out = report(capsys, "backend=torch", f"data.path={corpus}", f"init_from={empty}",
                       "model=tinyllama", "model.pretrained_path=TinyLlama/TinyLlama-1.1B-Chat-v1.0")
    assert code == 0, out
    assert "is not a local directory" in out


def test_bad_override_is_one_failure(clean_env, capsys):
    code, out = report(capsys, "training.batch_size=abc")
    assert code == 1 and out.startswith("[FAIL] config")
