"""Fine-tune a tiny Llama (saved locally as a Hugging Face directory with a BPE tokenizer) on the
starter dataset, then evaluate it against its base; start a fine-tune from a scratch-trained model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TINY, run_cli, run_in_process
from ttexp.models.pretrained import ORIGIN_NAME
from ttexp.tasks.eval import indent_answer

pytestmark = pytest.mark.slow

LESSON_QUESTIONS = ["What is a neural network?", "How do I learn machine learning?",
                    "Explain what backpropagation does", "What's the difference between AI and ML?"]

FINETUNE = ["task=finetune", "training.max_steps=20", "training.batch_size=8",
            "training.gradient_accumulation_steps=1", "training.learning_rate=3e-3",
            "training.validation_frequency=5", "training.checkpoint_frequency=10",
            "training.log_frequency=5", "generation.max_new_tokens=8"]


def metrics(run_dir: Path, key: str) -> list[float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, tiny_llama_dir) -> Path:
    out = tmp_path_factory.mktemp("ft") / "run"
    proc = run_cli([*FINETUNE, f"model.pretrained_path={tiny_llama_dir}", f"hydra.run.dir={out}"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (out / "console.txt").write_text(proc.stdout)
    return out


def test_finetune_writes_every_artifact(finetuned: Path, tiny_llama_dir: Path):
    expected = [".hydra/config.yaml", "training.log", "resolved.yaml", "metrics.jsonl", "validation.txt", "training_curves.png", "result.json",
                "checkpoints/step_10/model.safetensors", "checkpoints/step_20/optimizer.safetensors",
                "checkpoints/step_20/manifest.json",
                "final_model/config.json", "final_model/model.safetensors", "final_model/tokenizer.json",
                f"final_model/{ORIGIN_NAME}"]
    assert [f for f in expected if not (finetuned / f).is_file()] == []
    r = json.loads((finetuned / "result.json").read_text())
    assert r["task"] == "finetune" and r["steps_done"] == 20
    assert r["base_model"] == str(tiny_llama_dir.resolve())
    assert r["data"]["train_examples"] + r["data"]["val_examples"] >= 50 and r["data"]["val_examples"] >= 5
    # Tokens are what the padded batches held, far fewer than batch x context (256).
    assert 0 < r["tokens"] < 20 * 8 * 256
    origin = json.loads((finetuned / "final_model" / ORIGIN_NAME).read_text())
    assert origin["base_model"] == r["base_model"] and origin["eos_token_id"] == 1
    from omegaconf import OmegaConf

    resolved = OmegaConf.load(finetuned / "resolved.yaml")  # the shape really trained (config.json's)
    assert (resolved.model.hidden_dim, resolved.model.num_kv_heads, resolved.model.max_seq_len) == (32, 2, 256)
    console = (finetuned / "console.txt").read_text()
    for line in ("Final training loss:", "Final validation loss:", "Model saved to:",
                 "Training curves saved to:", "52 training and 6 validation examples"):
        assert line in console


def test_loss_on_response_tokens_falls(finetuned: Path):
    train, val = metrics(finetuned, "train/loss"), metrics(finetuned, "val/loss")
    assert len(train) == 20 and len(val) == 4
    assert sum(train[-3:]) / 3 < sum(train[:3]) / 3 - 0.3
    assert val == sorted(val, reverse=True) and val[-1] < val[0]


def test_validation_txt_has_one_block_per_validation_with_templated_questions(finetuned: Path):
    text = (finetuned / "validation.txt").read_text()
    blocks = text.split("=== Step ")[1:]
    assert [b.split(" ")[0] for b in blocks] == ["5", "10", "15", "20"]
    for block in blocks:
        assert block.count("### Question:\nWhat is a neural network?\n\n### Answer:\n") == 1
        assert block.count("--- Prompt: ") == 4


def test_final_model_loads_in_transformers_and_stops_at_eos(finetuned: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(finetuned / "final_model")
    tok = AutoTokenizer.from_pretrained(finetuned / "final_model")
    assert model.generation_config.eos_token_id == tok.eos_token_id == 1


def test_eval_compares_with_the_base_and_writes_both_answers(finetuned: Path, tiny_llama_dir: Path):
    out = finetuned.parent / "eval"
    r = run_in_process(["task=eval", f"eval.checkpoint={finetuned / 'final_model'}", "eval.compare_to=base",
                        "generation.max_new_tokens=6"], out)
    assert r["status"] == "completed" and r["task"] == "eval", r["error"]
    assert r["eval"]["compare_to"] == str(tiny_llama_dir.resolve())
    assert r["final_val_loss"] < r["base_val_loss"]  # fine-tuning helped on held-out pairs
    # the fine-tune's own questions (its four validation prompts), not the eval task's ten
    assert [a["question"] for a in r["eval"]["answers"]] == LESSON_QUESTIONS
    assert all("base_answer" in a for a in r["eval"]["answers"])
    text = (out / "eval_results.txt").read_text()
    for i, a in enumerate(r["eval"]["answers"], start=1):
        block = text.split(f"Q{i}: {a['question']}\n")[1].split("\n\n")[0].rstrip("\n")
        assert block == f"Fine-tuned: {indent_answer(a['answer'])}\nBase: {indent_answer(a['base_answer'])}"


def test_eval_of_a_checkpoint_reproduces_the_runs_validation_loss(finetuned: Path):
    out = finetuned.parent / "eval_step10"
    result = run_in_process(["task=eval", f"eval.checkpoint={finetuned / 'checkpoints/step_10'}",
                             "generation.max_new_tokens=2", "eval.questions=[Why?]"], out)
    assert result["status"] == "completed", result["error"]
    val_at_10 = dict(zip([5, 10, 15, 20], metrics(finetuned, "val/loss")))[10]
    assert result["final_val_loss"] == pytest.approx(val_at_10, rel=1e-5)
    assert "Fine-tuned: " in (out / "eval_results.txt").read_text()  # it has a recorded base


@pytest.fixture(scope="module")
def scratch_model(tmp_path_factory, corpus) -> Path:
    """A byte-level model trained from scratch (no EOS token, no pretrained base)."""
    out = tmp_path_factory.mktemp("scratch") / "run"
    result = run_in_process([TINY, f"data.path={corpus}", "model.max_seq_len=256", "training.max_steps=2",
                             "training.batch_size=2", "training.warmup_steps=0", "training.validation_batches=1",
                             "generation.max_new_tokens=4"], out)
    assert result["status"] == "completed", result["error"]
    return out / "final_model"


def test_eval_refuses_a_random_init_base_unless_asked(scratch_model: Path, tmp_path: Path):
    common = ["task=eval", f"eval.checkpoint={scratch_model}", "eval.compare_to=base",
              "eval.questions=[Hi?]", "generation.max_new_tokens=3"]
    refused = run_in_process(common, tmp_path / "refused")
    assert refused["status"] == "failed" and "random initialisation" in refused["error"]
    assert not (tmp_path / "refused" / "eval_results.txt").exists()
    allowed = run_in_process([*common, "eval.allow_random_base=true"], tmp_path / "allowed")
    assert allowed["status"] == "completed", allowed["error"]
    text = (tmp_path / "allowed" / "eval_results.txt").read_text()
    assert "\nModel: " in text and "\nBase (random init): " in text  # a scratch model is no fine-tune


def test_finetune_from_a_scratch_trained_byte_model(scratch_model: Path, tmp_path: Path):
    out = tmp_path / "ft"
    result = run_in_process([*FINETUNE, "training.max_steps=4", "training.validation_frequency=4",
                             "training.checkpoint_frequency=0", f"init_from={scratch_model}"], out)
    assert result["status"] == "completed", result["error"]
    assert result["base_model"] == str(scratch_model.resolve())
    config = json.loads((out / "final_model/config.json").read_text())
    assert config["eos_token_id"] == 4 and config["hidden_size"] == 32  # shape from the weights
    assert json.loads((out / "final_model" / ORIGIN_NAME).read_text())["eos_token_id"] == 4


def test_eval_scores_the_finetunes_own_held_out_split(tmp_path: Path, tiny_llama_dir: Path):
    """A fine-tune with a non-default seed splits its data differently; eval (default seed) must
    still score that run's held-out examples, read from final_model/ttexp_origin.json."""
    out = tmp_path / "ft"
    finetune = run_in_process([*FINETUNE, "training.seed=7", "training.max_steps=5",
                               f"model.pretrained_path={tiny_llama_dir}"], out)
    assert finetune["status"] == "completed", finetune["error"]
    result = run_in_process(["task=eval", f"eval.checkpoint={out / 'final_model'}",
                             "generation.max_new_tokens=2", "eval.questions=[Why?]"], tmp_path / "ev")
    assert result["status"] == "completed", result["error"]
    assert result["final_val_loss"] == pytest.approx(metrics(out, "val/loss")[-1], rel=1e-5)
