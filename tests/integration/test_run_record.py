"""A real short run from the command line leaves every file of the record, and final_model/
loads in transformers with the same logits as the run's last checkpoint."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from conftest import TINY, run_cli

pytestmark = pytest.mark.slow

# debug=tiny with two micro-steps per step; max_steps is repeated to see it in result.json's overrides.
ARGS = [TINY, "training.max_steps=4", "training.gradient_accumulation_steps=2",
        "generation.max_new_tokens=16"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("cli") / "run"
    proc = run_cli([*ARGS, f"data.path={corpus}", f"hydra.run.dir={out}"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (out / "console.txt").write_text(proc.stdout)
    return out


def test_every_record_file_is_written(run_dir: Path):
    expected = [
        ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "resolved.yaml",
        "training.log", "metrics.jsonl", "validation.txt", "training_curves.png", "result.json",
        "checkpoints/step_2/model.safetensors", "checkpoints/step_2/optimizer.safetensors",
        "checkpoints/step_2/optimizer.json", "checkpoints/step_2/rng.safetensors",
        "checkpoints/step_2/rng.json", "checkpoints/step_2/trainer_state.json",
        "checkpoints/step_2/config.yaml", "checkpoints/step_2/manifest.json",
        "checkpoints/step_4/model.safetensors",
        "final_model/config.json", "final_model/model.safetensors", "final_model/tokenizer.json",
    ]
    missing = [f for f in expected if not (run_dir / f).is_file()]
    assert not missing
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))  # no half-written checkpoint
    assert (run_dir / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_result_json_holds_the_runs_facts(run_dir: Path):
    r = json.loads((run_dir / "result.json").read_text())
    assert r["status"] == "completed" and r["error"] is None
    assert r["steps_done"] == 4 and r["backend"] == "torch"
    assert r["best_val_loss"] <= r["final_val_loss"] and r["best_val_step"] in (2, 4)
    assert 0 < r["final_train_loss"] < math.log(256) + 1
    assert r["tokens"] == 4 * 4 * 2 * 32 and r["tokens_per_s"] > 0
    assert r["train_s"] > 0 and r["eval_s"] > 0 and r["wall_s"] >= r["train_s"]
    assert r["plan"]["effective_batch_size"] == 8 and r["plan"]["micro_batch_size"] == 4
    assert r["num_parameters"] == r["plan"]["num_parameters"] > 0
    assert r["data"]["sha256"] == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert "training.max_steps=4" in r["overrides"]
    assert set(r["git"]) == {"commit", "dirty", "dirty_files", "changed_by_ttexp", "repo"}
    assert r["versions"]["torch"] == torch.__version__ and r["max_steps"] == 4
    assert set(r["versions"]) == {"python", "torch", "transformers", "hydra-core", "omegaconf", "ttml", "ttexp"}
    # Speed against the hardware (reference/perf_anchors.md §6).
    assert r["flops_per_token"] == r["plan"]["flops_per_token"] > 0
    assert r["peak_flops"] > 0 and "measured CPU" in r["peak_flops_source"]
    assert r["achieved_flops_per_s"] == pytest.approx(r["tokens_per_s"] * r["flops_per_token"], rel=1e-3)
    assert r["mfu"] == pytest.approx(r["achieved_flops_per_s"] / r["peak_flops"], rel=1e-3)
    assert r["peak_memory_bytes"] > 10 * 2**20 and r["log_s"] >= 0


def test_metrics_and_validation_blocks(run_dir: Path):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in lines if "train/loss" in x]
    val = [x for x in lines if "val/loss" in x]
    assert [x["step"] for x in train] == [1, 2, 3, 4]
    assert [x["step"] for x in val] == [2, 4]
    assert all(x["val/ppl"] == pytest.approx(math.exp(x["val/loss"]), rel=1e-6) for x in val)
    assert all(x["train/grad_norm"] > 0 and x["train/lr"] > 0 and 0 < x["train/mfu"] < 1 for x in train)
    text = (run_dir / "validation.txt").read_text()
    assert text.count("=== Step ") == 2 and text.count("ROMEO:") >= 2


def test_console_ends_with_the_lessons_lines(run_dir: Path):
    console = (run_dir / "console.txt").read_text()
    for line in ("Final training loss:", "Final validation loss:", "Model saved to:",
                 "Training curves saved to:", "Total parameters:", "Batch size: 4 (per-device: 4)",
                 "Device mesh: [1, 1]", "Throughput:", "FLOPs per token:"):
        assert line in console
    log = (run_dir / "training.log").read_text()
    assert "Final training loss:" in log and "Step 4/4" in log
    # every step line carries the current rate, the elapsed time and a live ETA (0 s at the end)
    step_lines = [line for line in log.splitlines() if "| loss " in line and "Step " in line]
    assert step_lines and all(re.search(r"\| [\d,]+ tok/s.* \| elapsed \d+m \d\ds \| ETA "
                                        r"(\d+m \d\ds|\?)$", line) for line in step_lines)
    assert step_lines[-1].endswith("ETA 0m 00s")


def test_final_model_loads_in_transformers_with_identical_logits(run_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ttexp.backends.torch_backend import TorchBackend
    from ttexp.models.spec import ModelSpec
    from omegaconf import OmegaConf

    hf = AutoModelForCausalLM.from_pretrained(run_dir / "final_model").eval()
    tok = AutoTokenizer.from_pretrained(run_dir / "final_model")
    ids = torch.tensor([tok.encode("ROMEO:\nWhat light")])
    assert ids.tolist()[0] == list(b"ROMEO:\nWhat light")

    cfg = OmegaConf.load(run_dir / "resolved.yaml")
    ours = TorchBackend(torch.device("cpu"), "fp32", cfg.optimizer, 0.1)
    ours.build_model(ModelSpec.from_config(cfg.model), init_from=run_dir / "checkpoints/step_4")
    ours.model.eval()
    with torch.no_grad():
        assert torch.equal(hf(ids).logits, ours.model(ids).logits)
