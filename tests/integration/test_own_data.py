"""Your own data, end to end, as a new user: fine-tune the tiny Llama on a JSONL file of one's
own (data.path=), run the eval command the fine-tune prints, evaluate the best checkpoint, export
it as the README says, and answer a question with the README's transformers snippet."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, log_to, run_in_process
from ttexp.config.compose import compose_run_config
from ttexp.data.pairs import split_indices

pytestmark = pytest.mark.slow

PLANETS = {"Mercury": "the closest planet to the Sun", "Venus": "the hottest planet",
           "Earth": "the only planet known to host life", "Mars": "the red planet",
           "Jupiter": "the largest planet", "Saturn": "the planet with the brightest rings"}


def _write_pairs(path: Path) -> list[dict]:
    rows = []
    for planet, fact in PLANETS.items():
        rows += [{"prompt": f"Tell me about {planet}.", "response": f"{planet} is {fact}."},
                 {"prompt": f"Give a fact about {planet}.", "response": f"Fact: {planet} is {fact}."},
                 {"prompt": f"Why study {planet}?", "response": f"Because {planet} is {fact}."},
                 {"prompt": f"Describe {planet}.", "response": f"In one line: {planet}, {fact}."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


@pytest.fixture(scope="module")
def own(tmp_path_factory, tiny_llama_dir):
    """A fine-tune on 24 planet pairs (seed 3, so not the default split); its console log."""
    base = tmp_path_factory.mktemp("own")
    rows = _write_pairs(base / "planets.jsonl")
    run = base / "ft"
    with log_to(base / "console.txt"):
        r = run_in_process(["task=finetune", f"model.pretrained_path={tiny_llama_dir}",
                            f"data.path={base / 'planets.jsonl'}", "data.val_fraction=0.25",
                            "training.seed=3", "training.max_steps=12", "training.batch_size=6",
                            "training.gradient_accumulation_steps=1", "training.learning_rate=3e-3",
                            "training.validation_frequency=4", "training.checkpoint_frequency=4",
                            "generation.max_new_tokens=9"], run)
    assert r["status"] == "completed", r["error"]
    held_out = [rows[i]["prompt"] for i in split_indices(len(rows), 0.25, 3)[1]][:4]
    return run, base, held_out, (base / "console.txt").read_text()


def _val_losses(run: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["val/loss"] for r in rows if "val/loss" in r}


def test_validation_samples_ask_the_held_out_prompts(own):
    run, _, held_out, _ = own
    text = (run / "validation.txt").read_text()
    for prompt in held_out:
        assert text.count(f"### Question:\n{prompt}\n\n### Answer:\n") == 3  # steps 4, 8, 12
    assert "What is a neural network?" not in text


def test_the_printed_eval_command_repeats_the_finetunes_evaluation(own, tmp_path):
    run, base, held_out, console = own
    line = next(x for x in console.splitlines() if x.startswith("Compare it with its base: "))
    argv = shlex.split(line.split(": ", 1)[1])
    assert argv[:3] == ["python", "-m", "ttexp"]
    r = run_in_process(argv[3:], tmp_path / "eval")
    assert r["status"] == "completed", r["error"]
    assert r["final_val_loss"] == pytest.approx(_val_losses(run)[12], rel=1e-5)  # same held-out split
    assert [a["question"] for a in r["eval"]["answers"]] == held_out
    assert r["model"] == "tiny_llama0"  # the name of the fine-tune's base directory, not "nano"
    assert compose_run_config(argv[3:]).name == "eval-tiny_llama0-n150"  # Hydra's run dir name
    resolved = (tmp_path / "eval" / "resolved.yaml").read_text()
    assert str(base / "planets.jsonl") in resolved and "seed: 3" in resolved
    assert "max_new_tokens: 9" in resolved  # the fine-tune's decoding, not the trickster defaults


def test_command_line_overrides_win(own, tmp_path):
    run, *_ = own
    r = run_in_process(["task=eval", f"eval.checkpoint={run / 'final_model'}", "eval.questions=[Hi?]",
                        "generation.max_new_tokens=2", "data=trickster"], tmp_path / "eval")
    assert r["status"] == "completed", r["error"]
    assert [a["question"] for a in r["eval"]["answers"]] == ["Hi?"]
    assert "trickster.jsonl" in (tmp_path / "eval" / "resolved.yaml").read_text()
    assert r["final_val_loss"] != pytest.approx(_val_losses(run)[12], rel=1e-5)


def test_best_checkpoint_evaluates_and_exports_as_the_readme_says(own, tmp_path):
    run, *_ = own
    best_loss = min(_val_losses(run).values())
    r = run_in_process(["task=eval", f"eval.checkpoint={run / 'best'}", "eval.questions=[Hi?]"],
                       tmp_path / "best")
    assert r["status"] == "completed", r["error"]
    assert r["final_val_loss"] == pytest.approx(best_loss, rel=1e-5)
    block = re.search(r"```bash\n(RUN=.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    script = re.sub(r"^RUN=.*$", f"RUN={shlex.quote(str(run))}", block, count=1, flags=re.M)
    subprocess.run(["bash", "-ec", script], check=True)
    exported = run_in_process(["task=eval", f"eval.checkpoint={run / 'best_model'}",
                               "eval.questions=[Hi?]"], tmp_path / "exported")
    assert exported["final_val_loss"] == pytest.approx(best_loss, rel=1e-5)


def test_readme_snippet_answers_like_ttexp_eval(own, tmp_path):
    run, _, held_out, _ = own
    question = held_out[0]
    r = run_in_process(["task=eval", f"eval.checkpoint={run / 'final_model'}", f"eval.questions=[{question!r}]",
                        "generation.max_new_tokens=128", "training.precision=fp32"], tmp_path / "eval")
    assert r["status"] == "completed", r["error"]
    code = re.search(r"```python\n(from transformers import AutoModelForCausalLM.*?)```",
                     (ROOT / "README.md").read_text(), re.S).group(1)
    assert len(code.strip().splitlines()) == 5
    code = re.sub(r"^model_dir, question = .*$", f"model_dir, question = {str(run / 'final_model')!r}, "
                  f"{question!r}", code, count=1, flags=re.M)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue().strip() == r["eval"]["answers"][0]["answer"]
    assert r["eval"]["answers"][0]["answer"]  # a non-empty answer was compared
