"""Speed accounting: peaks, MFU, the cached CPU peak, and the bench report."""

from __future__ import annotations

import json

import pytest
import torch

from ttexp.backends import detect
from ttexp.models.metrics import perplexity
from ttexp.train import speed as perf
from ttexp.train.speed import gpu_peak_flops, mfu, peak_flops_for, speed_figures


def test_gpu_and_tenstorrent_peaks_follow_the_table():
    assert gpu_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu_peak_flops("NVIDIA H200") == 989e12
    assert gpu_peak_flops("NVIDIA A100-SXM4-40GB") == 312e12
    assert gpu_peak_flops("NVIDIA GeForce RTX 4090") is None
    assert peak_flops_for("ttml", "n150", "N150", "bf16")[0] == 74e12
    assert peak_flops_for("ttml", "n300", "N300", "bf16")[0] == 131e12
    assert peak_flops_for("torch", "n300", "cuda:0 (NVIDIA H100)", "bf16 autocast", processes=2)[0] == 2 * 989e12


def test_mfu_is_achieved_over_peak():
    s = speed_figures(tokens_per_s=1000.0, flops_per_token=6_000_000, peak=12e9)
    assert s["achieved_flops_per_s"] == 6e9 and s["mfu"] == pytest.approx(0.5)
    assert speed_figures(1000.0, 6, None)["mfu"] is None
    assert mfu(1000.0, 6_000_000, 12e9) == pytest.approx(0.5) and mfu(1000.0, 6, 0.0) is None


def test_perplexity_is_exp_of_the_loss_clamped_at_50_nats():
    assert perplexity(0.0) == 1.0 and perplexity(2.0) == pytest.approx(7.389056)
    assert perplexity(1e6) == perplexity(50.0) == pytest.approx(5.1847055e21)
    assert perplexity(float("inf")) == perplexity(50.0)


def test_cpu_peak_is_measured_once_and_cached_per_dtype(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(perf, "measure_cpu_matmul_peak", lambda d: calls.append(d) or 1e11)
    assert perf.cpu_peak_flops("bf16", tmp_path) == 1e11
    assert perf.cpu_peak_flops("bf16", tmp_path) == 1e11
    assert perf.cpu_peak_flops("fp32", tmp_path) == 1e11
    assert calls == ["bf16", "fp32"]
    assert len(json.loads((tmp_path / "cpu_peak_flops.json").read_text())) == 2


def test_a_week_old_or_beaten_cpu_peak_is_measured_again(tmp_path, monkeypatch):
    rates = iter([1e11, 2e11, 3e11])
    monkeypatch.setattr(perf, "measure_cpu_matmul_peak", lambda d: next(rates))
    first = perf.cpu_peak("bf16", tmp_path)
    assert (first.flops, first.cached) == (1e11, False) and "measured now" in first.describe("bf16")
    again = perf.cpu_peak("bf16", tmp_path)
    assert again.cached and again.flops == 1e11 and "old (cache)" in again.describe("bf16")
    monkeypatch.setattr(perf.time, "time", lambda: first.measured_at + perf.PEAK_MAX_AGE_S + 1)
    assert perf.cpu_peak("bf16", tmp_path).flops == 2e11  # a week old: measured again
    monkeypatch.undo()
    monkeypatch.setattr(perf, "measure_cpu_matmul_peak", lambda d: 3e11)
    assert not perf.note_achieved_flops("bf16", 1.5e11, tmp_path)  # below the peak: kept
    assert perf.cpu_peak("bf16", tmp_path).flops == 2e11
    assert perf.note_achieved_flops("bf16", 2.5e11, tmp_path)  # a run beat it: dropped
    assert perf.cpu_peak("bf16", tmp_path).flops == 3e11


def test_measured_cpu_peak_is_a_plausible_rate():
    rate = perf.measure_cpu_matmul_peak("fp32", size=256, seconds=0.2)
    assert 1e8 < rate < 1e14


@pytest.mark.slow
def test_bench_reports_three_loops_with_ratios(tmp_path, monkeypatch, capsys):
    from ttexp.tools.bench import main

    monkeypatch.setattr(perf, "cpu_peak", lambda dtype, cache_dir=None: perf.CpuPeak(1e11, 0.0, True))
    out = tmp_path / "bench.json"
    # debug=tiny for the model; the batch is the bench's own override (16) unless given here.
    assert main(["--steps", "2", "--warmup", "1", "--json", str(out), "debug=tiny",
                 "training.batch_size=4", "training.compile=false"]) == 0
    report = json.loads(out.read_text())
    assert [r["loop"] for r in report["rows"]] == ["ttexp", "minimal", "nanoGPT fp32"]
    assert [r["layers"] for r in report["rows"]] == ["eager"] * 3
    assert report["compile"] == {"setting": "False", "layers": "eager", "solo_steps": 0}
    for r in report["rows"]:
        assert r["step_s"] > 0 and r["tokens_per_s"] == pytest.approx(4 * 32 / r["step_s"])
        assert r["mfu"] == pytest.approx(r["tokens_per_s"] * report["flops_per_token"] / 1e11)
    by = {r["loop"]: r for r in report["rows"]}
    assert report["overhead_ratio"] == pytest.approx(by["ttexp"]["step_s"] / by["minimal"]["step_s"])
    assert report["speedup_vs_nanogpt_fp32"] == pytest.approx(
        by["ttexp"]["tokens_per_s"] / by["nanoGPT fp32"]["tokens_per_s"])
    printed = capsys.readouterr().out
    assert "ttexp step time / minimal loop" in printed
    m = report["machine"]  # every figure names the CPU and its flags
    assert m["cpu"] and m["threads"] == torch.get_num_threads() and m["torch"] == torch.__version__
    assert set(m["flags"]) <= set(detect.SPEED_FLAGS) and f"CPU: {m['cpu']}" in printed


def test_bench_names_the_cpu_flags_and_the_isa_caps(monkeypatch):
    from ttexp.tools.bench import machine

    info = "model name : Xeon X\nflags : fpu avx2 avx512f amx_bf16 sse\n"
    monkeypatch.setattr(detect, "cpu_info", lambda: info)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    m = machine()
    assert m["cpu"] == "Xeon X" and m["flags"] == ["avx2", "avx512f", "amx_bf16"]
    assert m["isa_caps"] == {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}


def test_bench_rejects_a_bad_override_with_a_message(capsys):
    from ttexp.tools.bench import main

    assert main(["model.num_heads=7"]) == 2
    assert "does not divide" in capsys.readouterr().err


class _Deciding:
    """A backend whose training.compile=auto decides after ``n`` steps."""

    def __init__(self, n: int):
        self.n, self.steps = n, []

    @property
    def compile_state(self) -> str:
        return "deciding" if len(self.steps) < self.n else "compiled"


def test_bench_runs_ttexp_alone_until_compile_auto_has_decided():
    from ttexp.tools.bench import settle_compile

    backend = _Deciding(5)
    ours = {"backend": backend, "step": backend.steps.append}
    assert settle_compile(ours) == 5 and backend.steps == [0, 1, 2, 3, 4]
    assert settle_compile(ours) == 0  # decided: nothing more runs alone
    stuck = _Deciding(10**6)
    assert settle_compile({"backend": stuck, "step": stuck.steps.append}, limit=7) == 7


def test_torch_backend_says_whether_its_layers_are_compiled():
    import torch

    from ttexp.backends.torch_backend import TorchBackend
    from ttexp.config.schema import OptimizerConfig

    def backend(setting):
        return TorchBackend(torch.device("cpu"), "fp32", OptimizerConfig(), 0.0, compile=setting,
                            planned_steps=100)

    assert backend(False).compile_state == "eager"
    assert backend("auto").compile_state == "deciding"
    auto = backend("auto")
    auto._auto.decided = False  # auto found compiling not worth it
    assert auto.compile_state == "eager"
