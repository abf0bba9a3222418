"""adapter=lora on the torch backend: a LoRA fine-tune of a tiny local Hugging Face Llama on the
starter JSONL lowers held-out loss, trains only the adapters, writes a merged final_model/ that
plain transformers loads and a PEFT adapter that PEFT loads onto the base (same logits), evaluates
either, and resumes exactly after SIGKILL."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import pytest
import torch

from conftest import run_in_process, start_cli, wait_for
from test_resume import losses
from ttexp.models.adapter import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, FINAL_ADAPTER_DIR

pytestmark = pytest.mark.slow

# All seven projections, dropout on and two micro-steps: an exact resume needs the adapter, its
# AdamW state, the RNG (dropout masks on the adapter input) and the data position restored.
ARGS = ["task=finetune", "adapter=lora", "adapter.r=4", "adapter.lora_alpha=8",
        "adapter.lora_dropout=0.1",
        "adapter.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]",
        "training.precision=fp32", "training.max_steps=24", "training.batch_size=8",
        "training.gradient_accumulation_steps=2", "training.learning_rate=1e-2",
        "training.validation_frequency=12", "training.checkpoint_frequency=4",
        "training.log_frequency=4", "generation.max_new_tokens=4"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_llama_dir) -> Path:
    out = tmp_path_factory.mktemp("lora") / "run"
    result = run_in_process([*ARGS, f"model.pretrained_path={tiny_llama_dir}"], out)
    assert result["status"] == "completed", result["error"]
    return out


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_only_the_adapters_are_trained_and_checkpointed(lora_run: Path, tiny_llama_dir: Path):
    ckpt = lora_run / "checkpoints" / "step_24"
    names = sorted(p.name for p in ckpt.iterdir())
    assert "model.safetensors" not in names and ADAPTER_WEIGHTS_NAME in names
    adapter = _weights(ckpt / ADAPTER_WEIGHTS_NAME)
    # 2 layers x r=4 x (in + out) per projection: q,o 32+32; k,v 32+16; gate,up 32+64; down 64+32
    assert sum(t.numel() for t in adapter.values()) == 2 * 4 * (64 * 2 + 48 * 2 + 96 * 3)
    # AdamW's moments exist for the adapter tensors alone (two per tensor, plus step counters)
    optimizer = _weights(ckpt / "optimizer.safetensors")
    moments = [t for k, t in optimizer.items() if k.endswith("exp_avg")]
    assert len(moments) == len(adapter) and sum(t.numel() for t in moments) == sum(
        t.numel() for t in adapter.values())
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["base_model"]["sha256"]["model.safetensors"]  # the frozen base, by fingerprint
    result = json.loads((lora_run / "result.json").read_text())
    assert result["trainable_parameters"] == sum(t.numel() for t in adapter.values())
    # The merged model differs from the base exactly where LoRA was applied and nowhere else.
    base, merged = _weights(tiny_llama_dir / "model.safetensors"), _weights(
        lora_run / "final_model" / "model.safetensors")
    assert base.keys() == merged.keys()
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed == {k for k in base if k.endswith("_proj.weight")}


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # PEFT 0.21 on transformers 5
def test_merged_model_and_adapter_on_base_give_the_same_logits(lora_run: Path, tiny_llama_dir: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    final = lora_run / "final_model"
    adapter_dir = final / FINAL_ADAPTER_DIR
    assert (adapter_dir / ADAPTER_CONFIG_NAME).is_file() and (adapter_dir / ADAPTER_WEIGHTS_NAME).is_file()
    merged = AutoModelForCausalLM.from_pretrained(final).eval()
    on_base = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                                        adapter_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    x = torch.randint(0, merged.config.vocab_size, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b, c = merged(x).logits, on_base(x).logits, base(x).logits
    diff = (a - b).abs().max().item()
    print(f"merged vs adapter-on-base logits: max abs diff {diff:.3e}; "
          f"vs base {(a - c).abs().max().item():.3e}")
    assert diff < 1e-4
    assert (a - c).abs().max().item() > 100 * diff  # the adapter changed the model


def test_eval_of_the_adapter_and_of_the_merged_model_lowers_held_out_loss(lora_run: Path, tmp_path):
    r_adapter = run_in_process(["task=eval", f"eval.checkpoint={lora_run / 'final_model' / 'adapter'}",
                                "eval.compare_to=base", "eval.questions=[]"], tmp_path / "a")
    r_merged = run_in_process(["task=eval", f"eval.checkpoint={lora_run / 'final_model'}",
                               "eval.questions=[]"], tmp_path / "m")
    r_step = run_in_process(["task=eval", f"eval.checkpoint={lora_run / 'checkpoints' / 'step_24'}",
                             "eval.questions=[]"], tmp_path / "s")
    print(f"held-out loss: base {r_adapter['base_val_loss']:.4f}, LoRA {r_adapter['final_val_loss']:.4f}"
          f" (merged {r_merged['final_val_loss']:.4f})")
    assert r_adapter["final_val_loss"] < r_adapter["base_val_loss"] - 0.05
    assert r_merged["final_val_loss"] == pytest.approx(r_adapter["final_val_loss"], abs=1e-4)
    assert r_step["final_val_loss"] == pytest.approx(r_adapter["final_val_loss"], abs=1e-6)
    assert r_step["eval"]["compare_to"] is None and r_step["status"] == "completed"


def test_sigkill_then_resume_reproduces_the_lora_losses_exactly(lora_run: Path, tiny_llama_dir: Path,
                                                                tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ttexp")
    out = tmp_path / "run"
    args = [*ARGS, f"model.pretrained_path={tiny_llama_dir}"]
    proc = start_cli([*args, f"hydra.run.dir={out}"])
    wait_for(out / "checkpoints" / "step_8", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(losses(out)) < 24, "the run finished before it was killed"

    result = run_in_process([*args, "resume=auto"], out)
    assert result["status"] == "completed", result["error"]
    assert "Resumed from" in caplog.text
    got, want = losses(out), losses(lora_run)
    assert sorted(got) == list(range(1, 25))  # lines logged after the last checkpoint were dropped
    assert got == want  # exactly, not approximately
