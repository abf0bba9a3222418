"""Backend conformance: every backend available passes the same steps (torch on CPU always, the
strict ttml double always; CUDA where present). Train a tiny model and see the loss fall, match
the golden first 20 losses, resume from a checkpoint after losing the later ones and match the
uninterrupted losses exactly, generate the same tokens with and without the KV cache, and load
the exported ``final_model/`` in ``transformers`` with logits close to the backend's.

Regenerate the golden file (after a deliberate numerical change, say why in the commit):
    TTEXP_REGENERATE_GOLDEN=1 python -m pytest tests/integration/test_conformance.py
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ttml_double as dbl  # noqa: E402

from conftest import compose_cfg, run_cfg  # noqa: E402
from ttexp.backends.base import SamplingParams  # noqa: E402
from ttexp.backends.torch_generate import generate_cached, generate_windowed  # noqa: E402

pytestmark = pytest.mark.slow

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "conformance_losses.json"
REGENERATE = os.environ.get("TTEXP_REGENERATE_GOLDEN") == "1"
STEPS = 20
# debug=tiny, 20 steps, no dropout, fp32: a layout, RoPE or mask error shows as a number.
ARGS = ["debug=tiny", f"training.max_steps={STEPS}", "training.checkpoint_frequency=5",
        "training.validation_frequency=10", "training.precision=fp32", "training.seed=7",
        "training.learning_rate=3e-3", "generation.max_new_tokens=4"]
KINDS = ["torch", "ttml-double"] + (["torch-cuda"] if torch.cuda.is_available() else [])


def _args(kind: str) -> list[str]:
    extra = {"torch": ["backend=torch", "device=cpu"], "ttml-double": ["backend=ttml"],
             "torch-cuda": ["backend=torch", "device=cuda"]}[kind]
    return ARGS + extra


def _install_double(kind: str, monkeypatch) -> None:
    if kind == "ttml-double":
        ttml, ttnn = dbl.make()
        monkeypatch.setitem(sys.modules, "ttml", ttml)
        monkeypatch.setitem(sys.modules, "ttnn", ttnn)


def _run(kind: str, out: Path, corpus: Path, *extra: str) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        _install_double(kind, mp)
        return run_cfg(compose_cfg([*_args(kind), f"data.path={corpus}", *extra], out))


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


@pytest.fixture(scope="module", params=KINDS)
def trained(request, tmp_path_factory, corpus) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(request.param) / "run"
    result = _run(request.param, out, corpus)
    assert result["status"] == "completed", result["error"]
    return request.param, out


def test_loss_falls_and_matches_the_golden_first_20_losses(trained):
    kind, out = trained
    got = [losses(out)[s] for s in range(1, STEPS + 1)]
    assert np.mean(got[-5:]) < np.mean(got[:5]) - 0.3, got
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    if REGENERATE:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({**golden, kind: got}, indent=1) + "\n")
        return
    assert kind in golden, f"no golden losses for {kind}; run with TTEXP_REGENERATE_GOLDEN=1"
    np.testing.assert_allclose(got, golden[kind], rtol=1e-4, atol=0)


def _resume_check(kind: str, full: Path, out: Path, corpus: Path, lost: tuple[int, ...], *extra: str):
    """The suite's resume step: copy the finished run, delete its newest checkpoints (as if killed
    just after the one before was written), ``resume=auto``; the result and the failures, if any."""
    shutil.copytree(full, out, symlinks=True)
    for step in lost:
        shutil.rmtree(out / "checkpoints" / f"step_{step}")
    result = _run(kind, out, corpus, "resume=auto", *extra)
    want = f"step_{min(lost) - 5}"
    problems = [] if result["status"] == "completed" else [f"status {result['status']}: {result['error']}"]
    if not str(result.get("resumed_from") or "").endswith(want):
        problems.append(f"resumed from {result.get('resumed_from')}, not {want}")
    if losses(out) != losses(full):
        problems.append("losses differ from the uninterrupted run")
    return result, problems


def test_resume_after_losing_the_newest_checkpoints_matches_exactly(trained, tmp_path, corpus):
    kind, full = trained
    _, problems = _resume_check(kind, full, tmp_path / "run", corpus, (15, 20))
    assert problems == []  # losses equal exactly


def test_the_suite_fails_when_ttml_checkpoints_carry_the_first_formats_names(tmp_path, corpus, monkeypatch):
    """Negative control: the first ttml backend wrote its optimizer under its own name
    (``optimizer_ttml.pkl``), not the one checkpoint.py requires, so every ttml checkpoint failed
    verification and ``resume=auto`` started again from step 0. Renaming the file after it is
    written (the manifest still lists the required name) must fail the resume step."""
    from ttexp.train import checkpoint as ck

    real = ck.write_checkpoint_files

    def first_format_names(directory, backend, trainer_state, config_text):
        real(directory, backend, trainer_state, config_text)
        if backend.name == "ttml":
            (directory / ck.OPTIMIZER_TENSORS).rename(directory / "optimizer_ttml.pkl")

    monkeypatch.setattr(ck, "write_checkpoint_files", first_format_names)
    short = ("training.max_steps=10",)
    full = tmp_path / "full"
    assert _run("ttml-double", full, corpus, *short)["status"] == "completed"
    _, problems = _resume_check("ttml-double", full, tmp_path / "resumed", corpus, (10,), *short)
    assert any("not step_5" in p for p in problems), problems


def _backend_from(kind: str, final: Path, monkeypatch):
    """The backend the run used, rebuilt from its final_model/ weights."""
    from ttexp.backends.base import OneProcess
    from ttexp.backends.factory import create_backend
    from ttexp.models.spec import ModelSpec

    _install_double(kind, monkeypatch)
    cfg = compose_cfg(_args(kind))
    backend = create_backend(cfg, "ttml" if kind == "ttml-double" else "torch", OneProcess())
    backend.build_model(ModelSpec.from_config(cfg.model), init_from=final)
    return backend


def _logits(backend, ids: list[int]) -> np.ndarray:
    if backend.name == "torch":
        with torch.no_grad():
            x = torch.tensor([ids], device=backend.device)
            return backend.model(input_ids=x).logits[0].float().cpu().numpy()
    from ttexp.backends.ttml.tensors import padded_tokens

    host = padded_tokens(ids)
    out = backend.to_host(backend.logits(backend.to_device(host, tile=False),
                                         backend.causal(host.shape[-1])))
    backend.ctx.reset_graph()
    return out.reshape(-1, out.shape[-1])[: len(ids), : backend.spec.vocab_size]


def _generate_both_ways(backend, prompt: list[int], params: SamplingParams) -> tuple[list, list]:
    if backend.name == "torch":
        with torch.no_grad():
            backend.model.eval()
            return (generate_cached(backend.model, prompt, params, backend.device),
                    generate_windowed(backend.model, prompt, params, backend.device))
    cached = backend.generate(prompt, params)
    assert backend.api.has_kv_cache
    backend.api = replace(backend.api, has_kv_cache=False)
    return cached, backend.generate(prompt, params)


def test_cached_and_uncached_generation_agree_and_transformers_loads_the_export(trained, monkeypatch):
    from transformers import AutoModelForCausalLM

    kind, out = trained
    backend = _backend_from(kind, out / "final_model", monkeypatch)
    try:
        prompt = [70, 105, 114, 115, 116]  # "First"
        cached, windowed = _generate_both_ways(backend, prompt, SamplingParams(max_new_tokens=8,
                                                                                temperature=0.0))
        assert cached == windowed and len(cached) == 8
        hf = AutoModelForCausalLM.from_pretrained(str(out / "final_model"), dtype=torch.float32)
        ids = list(range(60, 80))
        with torch.no_grad():
            want = hf(input_ids=torch.tensor([ids])).logits[0].numpy()
        np.testing.assert_allclose(_logits(backend, ids), want, atol=2e-3, rtol=0)
    finally:
        backend.close()


def test_the_suite_fails_when_the_optimizer_state_is_pickled(tmp_path, corpus, monkeypatch):
    """Negative control: the first format's ttml save (pickle of get_state_dict) fails here."""
    import pickle

    from ttexp.backends.ttml.backend import TtmlBackend

    def pickled(self):
        return pickle.dumps(self.optimizer.get_state_dict())

    monkeypatch.setattr(TtmlBackend, "optimizer_state", pickled)
    result = _run("ttml-double", tmp_path / "run", corpus, "training.max_steps=5")
    assert result["status"] == "failed" and "cannot pickle" in result["error"]


# -- LoRA: adapter=lora on a tiny pretrained Llama (torch: PEFT; ttml: ttml.modules.lora) --------
# All seven projections (on ttml: fused kv_linear, so K and V share one A), no dropout, fp32.
LORA_ARGS = ["task=finetune", "adapter=lora", "adapter.r=4", "adapter.lora_alpha=8",
             "adapter.lora_dropout=0", "training.precision=fp32", "training.seed=7",
             "adapter.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]",
             "training.max_steps=10", "training.batch_size=4", "training.learning_rate=1e-2",
             "training.checkpoint_frequency=5", "training.validation_frequency=10",
             "training.log_frequency=1", "generation.max_new_tokens=4"]


def _run_lora(kind: str, out: Path, base: Path, *extra: str) -> dict:
    backend = {"torch": ["backend=torch", "device=cpu"], "ttml-double": ["backend=ttml"],
               "torch-cuda": ["backend=torch", "device=cuda"]}[kind]
    with pytest.MonkeyPatch.context() as mp:
        _install_double(kind, mp)
        return run_cfg(compose_cfg([*LORA_ARGS, *backend, f"model.pretrained_path={base}", *extra], out))


@pytest.fixture(scope="module")
def lora_base(tmp_path_factory, tiny_llama_dir) -> Path:
    from conftest import bf16_exact_copy

    return bf16_exact_copy(tiny_llama_dir, tmp_path_factory.mktemp("lora") / "base")


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # PEFT 0.21 on transformers 5
@pytest.mark.parametrize("kind", KINDS)
def test_lora_trains_the_adapter_alone_resumes_exactly_and_exports_what_peft_loads(kind, lora_base, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    full = tmp_path / "full"
    result = _run_lora(kind, full, lora_base)
    assert result["status"] == "completed", result["error"]
    got = [losses(full)[s] for s in range(1, 11)]
    # A random tiny base's head (std 0.02) caps what LoRA can move: about 0.06 nats in 10 steps.
    assert np.mean(got[-3:]) < got[0] - 0.04, got
    # Only the adapter is checkpointed and optimised: AdamW's two moments match it in size (on
    # ttml K and V share one A, which the PEFT-format file holds twice: 2 layers x r 4 x d 32).
    ckpt = full / "checkpoints" / "step_10"
    assert not (ckpt / "model.safetensors").exists()
    adapter = sum(t.numel() for t in _tensors(ckpt / "adapter_model.safetensors").values())
    moments = sum(t.numel() for k, t in _tensors(ckpt / "optimizer.safetensors").items() if "exp_avg" in k)
    shared = 2 * 4 * 32 if kind == "ttml-double" else 0
    assert moments == 2 * result["trainable_parameters"] == 2 * (adapter - shared)
    base, merged = _tensors(lora_base / "model.safetensors"), _tensors(full / "final_model" / "model.safetensors")
    assert {k for k in base if not torch.equal(base[k], merged[k])} == {k for k in base if k.endswith("_proj.weight")}
    # Exact resume: lose the last checkpoint, resume=auto from step_5, same losses.
    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed, symlinks=True)
    shutil.rmtree(resumed / "checkpoints" / "step_10")
    again = _run_lora(kind, resumed, lora_base, "resume=auto")
    assert again["status"] == "completed" and str(again["resumed_from"]).endswith("step_5")
    assert losses(resumed) == losses(full)
    if kind == "ttml-double":  # task=eval loads final_model/adapter onto the base (torch's: test_lora_finetune)
        with pytest.MonkeyPatch.context() as mp:
            _install_double(kind, mp)
            ev = run_cfg(compose_cfg(["task=eval", "backend=ttml",
                                      f"eval.checkpoint={full / 'final_model' / 'adapter'}"], tmp_path / "eval"))
        assert ev["status"] == "completed" and np.isfinite(ev["final_val_loss"]), ev["error"]
    # The merged export and PEFT's adapter on the base give the same logits.
    ids = torch.tensor([list(range(5, 25))])
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(full / "final_model").eval()(input_ids=ids).logits
        on_base = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lora_base),
                                            full / "final_model" / "adapter").eval()
        np.testing.assert_allclose(on_base(input_ids=ids).logits.numpy(), want.numpy(), atol=1e-5, rtol=0)
