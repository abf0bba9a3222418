"""The parts of "your own data, end to end" that need no training: which overrides the user set,
the held-out prompts, what eval takes from a run's record, the exported tokenizer (BOS, a class
name old transformers knows), the hub id that fails fast offline, and doctor's data check."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from conftest import build_tiny_llama_dir, compose_cfg
from ttexp.config.overrides import user_set
from ttexp.config.recorded import recorded_model_name
from ttexp.data.pairs import held_out_prompts, split_indices
from ttexp.errors import TtexpError
from ttexp.models import hub
from ttexp.models.hf import PORTABLE_TOKENIZER_CLASS, make_portable
from ttexp.models.pretrained import load_tokenizer
from ttexp.record.lineage import recorded_eval_inputs
from ttexp.tasks import eval as eval_task
from ttexp.tasks.finetune import add_bos_on_encode
from ttexp.tools import doctor


def test_user_set_matches_keys_sections_and_groups():
    overrides = ["generation.max_new_tokens=3", "+data.path=x", "eval.questions=[a]"]
    assert user_set(overrides, "generation.max_new_tokens") and user_set(overrides, "data.path")
    assert user_set(overrides, "data") and user_set(overrides, "eval.questions")
    assert not user_set(overrides, "generation.temperature") and not user_set(overrides, "training.seed")
    assert user_set(["generation=shakespeare"], "generation.top_k")
    assert not user_set(["generation.prompts_extra=1"], "generation.prompts")


def _pairs(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) + "\n\n" for i in range(n)))
    return path


def test_held_out_prompts_are_the_seeded_split_or_the_val_file(tmp_path):
    cfg = compose_cfg(["task=finetune", f"data.path={_pairs(tmp_path / 'd.jsonl', 20)}",
                       "data.val_fraction=0.3"])
    want = [f"q{i}" for i in split_indices(20, 0.3, 5)[1]][:4]
    assert held_out_prompts(cfg.data, 5) == want and len(want) == 4
    cfg = compose_cfg(["task=finetune", f"data.path={tmp_path / 'd.jsonl'}",
                       f"data.val_path={_pairs(tmp_path / 'v.jsonl', 2)}"])
    assert held_out_prompts(cfg.data, 5) == ["q0", "q1"]
    (tmp_path / "bad.jsonl").write_text("not json\n")
    assert held_out_prompts(compose_cfg(["task=finetune", f"data.path={tmp_path / 'bad.jsonl'}"]).data, 5) == []


def _scratch_run(tmp_path: Path) -> Path:
    """A run directory as a scratch run leaves it (resolved.yaml and final_model/config.json)."""
    from ttexp.config.convert import config_yaml

    run = tmp_path / "run"
    (run / "final_model").mkdir(parents=True)
    (run / "final_model" / "config.json").write_text("{}")
    cfg = compose_cfg(["debug=tiny", "model.name=tiny", "data=shakespeare", "generation=shakespeare"])
    (run / "resolved.yaml").write_text(config_yaml(cfg))
    return run


def test_a_scratch_models_eval_uses_its_runs_data_questions_and_sampling(tmp_path):
    run = _scratch_run(tmp_path)
    rec = recorded_eval_inputs(run / "final_model")
    assert rec == recorded_eval_inputs(run) and rec["questions"] == ["ROMEO:"]
    assert rec["data"]["format"] == "text" and rec["generation"]["temperature"] == 0.8
    assert recorded_model_name(run / "final_model", "nano") == "tiny" == rec["model_name"]
    assert recorded_model_name(None, "nano") == "nano" == recorded_model_name(tmp_path, "nano")
    cfg = compose_cfg(["task=eval", f"eval.checkpoint={run / 'final_model'}", "generation.top_k=7"])
    assert cfg.generation.temperature == 0.0  # the eval task's defaults (trickster) ...
    resolved = eval_task._apply_recorded(cfg, rec, ["generation.top_k=7"])
    assert resolved.generation.temperature == 0.8 and resolved.generation.top_k == 7  # ... replaced
    assert resolved.data.format.value == "text" and list(resolved.eval.questions) == ["ROMEO:"]
    assert resolved.model.name == "tiny"
    kept = eval_task._apply_recorded(cfg, rec, ["eval.questions=[Hi]", "data=trickster", "generation=trickster"])
    assert kept.data.format.value == "jsonl" and kept.generation.temperature == 0.0
    assert list(kept.eval.questions) == list(cfg.eval.questions)
    split = eval_task._apply_recorded(cfg, rec, ["data.val_fraction=0.5"])  # the run's file, another split
    assert split.data.format.value == "text" and split.data.val_fraction == cfg.data.val_fraction


def test_exported_tokenizer_adds_bos_and_names_a_portable_class(tmp_path):
    from transformers import AutoTokenizer

    model_dir = build_tiny_llama_dir(tmp_path / "m")
    trained = load_tokenizer(model_dir)
    assert AutoTokenizer.from_pretrained(model_dir)("Hi")["input_ids"][0] != trained.bos_token_id
    add_bos_on_encode(model_dir, trained)
    make_portable(model_dir)
    prompt = "### Question:\nHi?\n\n### Answer:\n"
    assert AutoTokenizer.from_pretrained(model_dir)(prompt)["input_ids"] == trained.encode(prompt)
    conf = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert conf["tokenizer_class"] == PORTABLE_TOKENIZER_CLASS and conf["add_bos_token"] is True
    config = json.loads((model_dir / "config.json").read_text())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"]
    add_bos_on_encode(model_dir, trained)  # idempotent: one BOS, not two
    assert AutoTokenizer.from_pretrained(model_dir)(prompt)["input_ids"] == trained.encode(prompt)


def test_hub_id_offline_fails_once_in_seconds(monkeypatch):
    from huggingface_hub import HfApi, constants

    calls = []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(HfApi, "model_info", lambda *a, **k: calls.append(1))
    with pytest.raises(TtexpError, match="HF_HUB_OFFLINE is set.*hf download"):
        hub.local_snapshot("nobody-here/no-model")
    assert calls == []  # offline: not one request

    def unreachable(self, repo_id, timeout=None):
        calls.append(timeout)
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "model_info", unreachable)
    start = time.perf_counter()
    with pytest.raises(TtexpError, match="hub did not answer.*Name or service.*hf download"):
        hub.local_snapshot("nobody-here/no-model")
    assert calls == [hub.PROBE_TIMEOUT_S]  # one attempt, with the short timeout
    print(f"offline failure in {time.perf_counter() - start:.2f} s")


def test_doctor_checks_the_shipped_starter_set_and_spares_torch_users(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("TTEXP_DATA_DIR", raising=False)
    monkeypatch.setitem(sys.modules, "ttml", None)
    monkeypatch.setattr(doctor, "TT_DEVICE_DIR", tmp_path / "dev")
    assert doctor.main(["task=finetune", "backend=torch", "hardware=n300", "init_from=/nope"]) == 1
    out = capsys.readouterr().out
    assert "[  ok] data" in out and "trickster.jsonl: 58 examples, 0 errors" in out
    assert "smaller hardware" not in out and "torch backend needs none" in out
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n')
    assert doctor.main(["task=finetune", "backend=torch", f"data.path={tmp_path / 'bad.jsonl'}"]) == 1
    assert "[FAIL] data" in capsys.readouterr().out
