"""The pieces that keep hostile input out (issue #15), one by one: names, overrides, values,
secrets, pasteable commands, full disks."""

from __future__ import annotations

import errno
import logging
import shlex
from pathlib import Path

import pytest

from conftest import TINY, compose_cfg, compose_raw
from ttexp.config.convert import config_dict, config_yaml, load_yaml_literal, to_run_config
from ttexp.config.overrides import override_problem
from ttexp.config.values import fs_name, value_rules
from ttexp.errors import redact
from ttexp.files import disk_full_message
from ttexp.record.console import RedactFilter
from ttexp.record.job import resume_command

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.parametrize("name,expected", [
    ("../../../x", "x"), ("scratch-nano-n150", "scratch-nano-n150"), ("a b;rm -rf ~", "a-b-rm--rf-"),
    (".hidden", "hidden"), ("", "run"), ("..", "run"), ("-rf", "rf"), ("x" * 300, "x" * 100),
    ("lr=1e-3,bs=8", "lr=1e-3,bs=8"),
])
def test_run_names_become_one_safe_path_component(name, expected):
    assert fs_name(name) == expected


@pytest.mark.parametrize("argv,expected", [
    (["training.lr=1e-3"], "did you mean training.learning_rate?"),
    (["+training.lr=1e-3"], "'+' cannot add a key to the typed section training"),
    (["++training.lr=1e-3"], "'+' cannot add a key to the typed section training"),
    (["training.batchsize=8"], "did you mean training.batch_size?"),
    (["eval.result_file=x"], "did you mean eval.results_file?"),
    (["-m", "training.max_step=3,4"], "did you mean training.max_steps?"),
    (["+foo=1"], "'+' cannot add a key to ttexp's typed config"),
])
def test_unknown_keys_get_the_closest_known_key(argv, expected):
    assert expected in override_problem(argv)


@pytest.mark.parametrize("argv", [
    ["model=nano", "debug=tiny", "training.learning_rate=1e-4,3e-4", "-m"], ["hydra.run.dir=x"],
    ["hydra/launcher=joblib"], ["generation.prompts=[a,b]"], ["~eval.checkpoint"],
    ["--cfg", "job", "experiment=nano_cpu"], ["logger.wandb.mode=offline"], ["name=x y"],
    ["+experiment=nano_cpu"], ["training.lr="],  # the last: Hydra's own parser decides
])
def test_known_overrides_pass(argv):
    assert override_problem(argv) is None or argv == ["training.lr="]


@pytest.mark.parametrize("override,expected", [
    ("training.learning_rate=nan", "training.learning_rate=nan must be a finite number"),
    ("model.rope_theta=inf", "model.rope_theta=inf must be a finite number"),
    ("optimizer.eps=-inf", "optimizer.eps=-inf must be a finite number"),
    ("generation.temperature=nan", "generation.temperature=nan must be a finite number"),
    ("training.seed=-1", "training.seed=-1 must be in 0 .. 4294967295"),
    ("training.seed=4294967296", "must be in 0 .. 4294967295"),
    ("generation.seed=-3", "generation.seed=-3 must be in 0"),
    ("eval.results_file=/etc/passwd", "eval.results_file=/etc/passwd must be a file name inside"),
    ("eval.results_file=../x.txt", "must be a file name inside the run directory"),
    ("eval.results_file=a/../../x.txt", "must be a file name inside the run directory"),
    ("eval.results_file='~/x.txt'", "must be a file name inside the run directory"),
    ("sweep.journal=run.py", "sweep.journal=run.py must be a Markdown file"),
])
def test_value_rules(override, expected):
    assert any(expected in e for e in value_rules(compose_cfg([TINY, override])))


def test_default_values_break_no_rule():
    assert value_rules(compose_cfg([TINY, "training.seed=4294967295", "eval.results_file=sub/r.txt"])) == []


def test_secret_values_are_redacted(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefgh123")
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    monkeypatch.setenv("MY_SERVICE_PASSWORD", "hunter2hunter2")
    monkeypatch.setenv("SHORT_TOKEN", "1")  # too short to redact
    monkeypatch.setenv("HOME_DIR_OF_DATA", "/data/hf_abcdefgh123x")  # not secret-named
    text = "token hf_abcdefgh123, key 0123456789abcdef, pw hunter2hunter2, 1 step"
    assert redact(text) == ("token [HF_TOKEN redacted], key [WANDB_API_KEY redacted], "
                            "pw [MY_SERVICE_PASSWORD redacted], 1 step")
    record = logging.LogRecord("ttexp", logging.ERROR, __file__, 1, "failed: %s", ("hf_abcdefgh123",), None)
    assert RedactFilter().filter(record) and record.getMessage() == "failed: [HF_TOKEN redacted]"


def test_env_values_are_written_as_their_interpolation(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefgh123")
    raw = compose_raw([TINY, "logger.wandb.entity=${oc.env:HF_TOKEN}",
                       "training.learning_rate=${oc.env:TTEXP_NO_SUCH_VAR,0.002}"])
    cfg = to_run_config(raw)
    assert cfg.logger.wandb.entity == "hf_abcdefgh123" and cfg.training.learning_rate == 0.002
    text = config_yaml(cfg)
    assert "hf_abcdefgh123" not in text and "entity: ${oc.env:HF_TOKEN}" in text
    assert "learning_rate: ${oc.env:TTEXP_NO_SUCH_VAR,0.002}" in text
    assert config_dict(cfg)["logger"]["wandb"]["entity"] == "${oc.env:HF_TOKEN}"
    assert config_dict(cfg.logger.wandb)["entity"] == "${oc.env:HF_TOKEN}"
    # a worker rank reading resolved.yaml resolves it again from its environment
    (tmp_path / "resolved.yaml").write_text(text)
    from omegaconf import OmegaConf

    assert to_run_config(OmegaConf.load(tmp_path / "resolved.yaml")).logger.wandb.entity == "hf_abcdefgh123"
    # another run's file is read as text: nothing resolves
    literal = load_yaml_literal(tmp_path / "resolved.yaml")
    assert literal.logger.wandb.entity == "${oc.env:HF_TOKEN}"


def test_resume_command_is_quoted_and_repeats_the_overrides():
    run_dir = Path("/tmp/my run; rm -rf ~")
    overrides = ["debug=fast", "generation.prompts=[a b,c]", "resume=old", "hydra.run.dir=/x", "name=$HOME"]
    cmd = resume_command(run_dir, overrides)
    assert shlex.split(cmd) == ["python", "-m", "ttexp", "debug=fast", "generation.prompts=[a b,c]",
                                "name=$HOME", "resume=auto", f"hydra.run.dir={run_dir}"]
    assert "'hydra.run.dir=/tmp/my run; rm -rf ~'" in cmd and "'name=$HOME'" in cmd


def test_disk_full_is_named(tmp_path, monkeypatch):
    msg = disk_full_message(tmp_path / "final_model", OSError(errno.ENOSPC, "No space left on device"))
    assert msg.startswith(f"the disk is full at {tmp_path / 'final_model'} (") and msg.endswith(" bytes free)")
    torch_error = RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0: "
                               "PytorchStreamWriter failed writing file data/0: file write failed")
    assert disk_full_message(tmp_path, torch_error) is None  # plenty of space here: not a full disk
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 4096, 4096))
    assert disk_full_message(tmp_path, torch_error) == f"the disk is full at {tmp_path} (4,096 bytes free)"
    assert disk_full_message(tmp_path, ValueError("bad shape")) is None


def test_no_load_path_trusts_remote_code():
    """Every transformers loader in src/ passes trust_remote_code=False; none passes True."""
    calls = [(p, line) for p in SRC.rglob("*.py") for line in p.read_text().splitlines()
             if ".from_pretrained(" in line and "def " not in line]
    assert calls
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert "trust_remote_code=True" not in text
        if ".from_pretrained(" in text.replace("``AutoTokenizer.from_pretrained``", ""):
            assert "trust_remote_code=False" in text, path
