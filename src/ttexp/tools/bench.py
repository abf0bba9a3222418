"""``python -m ttexp.bench [--steps N] [--warmup W] [--json FILE] [overrides ...]``

Times a fixed, short training workload three ways in one process, on the same machine state:

1. **ttexp**: the framework's own training step (:meth:`ttexp.train.loop.TrainingLoop.train_step`:
   data sampling, micro-steps with accumulation, clipping, AdamW, the NaN guard, the metrics line);
2. **minimal**: a hand-written PyTorch loop over the same ``transformers`` Llama at the same shape,
   precision and batch, with ttexp's eager CPU modules where ttexp uses them (forward,
   cross-entropy, backward, clip, AdamW step): the framework's overhead is the ratio of the two
   step times;
3. **nanoGPT fp32**: a nanoGPT-style GPT (learned positions, LayerNorm, GELU MLP 4x, tied head,
   SDPA causal attention) at the same width, depth, heads, batch and context, in fp32 eager mode,
   the way nanoGPT runs on a CPU by default (reference/perf_anchors.md §5).

Each figure is the median step time over ``--steps`` timed steps after ``--warmup`` untimed ones.
The loops are interleaved (one step of each per round), so load from other processes on a shared
machine falls on all three alike and the ratios stay fair.

ttexp runs as a long run would (``training.max_steps`` 1,000,000): with ``training.compile=auto``
(the default) its first steps run alone until auto has decided whether compiling the decoder
layers repays itself, and, when it compiled, has timed the compiled steps it records as the
shape's gain (interleaved, auto would time the other loops' steps too). The hand-written loop
then compiles its layers the same way, or not. ``training.compile=false`` times eager mode,
``true`` compiles from the start.
Defaults: ``model=nano``, batch 16 x 512, accumulation 1. Any run override applies, e.g.
``python -m ttexp.bench model=midi training.batch_size=32 training.precision=fp32``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ttexp.backends.compile import compile_regions
from ttexp.backends.detect import cpu_model, cpu_speed_flags
from ttexp.backends.factory import create_backend
from ttexp.backends.torch_eager import use_fast_eager
from ttexp.config.compose import compose_run_config
from ttexp.config.schema import RunConfig
from ttexp.config.validate import validate_config
from ttexp.data.text import TextData
from ttexp.errors import TtexpError
from ttexp.models.hf import llama_config
from ttexp.record.run_record import NullRecord
from ttexp.train.loop import TrainingLoop
from ttexp.train.plan import make_plan
from ttexp.train.ranks import Ranks
from ttexp.train.speed import peak_flops_for, peak_memory_bytes, speed_figures

DEFAULT_OVERRIDES = ["model=nano", "training.batch_size=16", "training.gradient_accumulation_steps=1",
                     "training.warmup_steps=0", "training.max_steps=1000000", "model.dropout=0.0"]
SETTLE_STEPS = 16
"""Most solo steps ttexp runs while ``training.compile=auto`` decides (it needs 1 + 3 to decide
and 1 + 3 more to time a compile: :data:`ttexp.backends.compile.MEASURED_STEPS`)."""


def compose(overrides: list[str]) -> RunConfig:
    """The run config for ``overrides`` (on top of the bench defaults), typed and validated.

    Raises:
        hydra.errors.ConfigCompositionException: an override Hydra cannot apply.
        ConfigError: the composed config breaks a cross-field rule.
    """
    cfg = compose_run_config(DEFAULT_OVERRIDES + overrides, output_dir="bench")
    validate_config(cfg)
    return cfg


def _time_rounds(steps: dict[str, Callable[[int], None]], warmup: int, rounds: int
                 ) -> dict[str, list[float]]:
    """Step times (s) of each named step function, interleaved: every round runs one step of
    each in turn, so a burst of load from other processes hits every loop alike."""
    for i in range(warmup):
        for step in steps.values():
            step(i)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup, warmup + rounds):
        for name, step in steps.items():
            tick = time.perf_counter()
            step(i)
            times[name].append(time.perf_counter() - tick)
    return times


def bench_ttexp(cfg: Any) -> dict[str, Any]:
    """The framework's step on random windows of a synthetic corpus (no file I/O); returns the
    step function (``"step"``), the backend and the plan."""
    import numpy as np

    plan = make_plan(cfg)
    torch.manual_seed(0)
    tokens = np.random.default_rng(0).integers(0, plan.spec.vocab_size, size=2_000_000)
    data = TextData(tokens, plan.seq_len, 0.0, seed=0)
    backend = create_backend(cfg, plan.backend, Ranks.single())
    backend.build_model(plan.spec)
    loop = TrainingLoop(cfg, plan, backend, data, None, NullRecord("."), Ranks.single())
    return {"device": backend.device_name, "precision": backend.precision_name,
            "autocast": backend.autocast_dtype, "step": loop.train_step, "plan": plan,
            "backend": backend}


def _compile_state(backend: Any) -> str:
    """The torch backend's ``compile_state``; 'eager' for a backend without one (ttml)."""
    return getattr(backend, "compile_state", "eager")


def settle_compile(ours: dict[str, Any], limit: int = SETTLE_STEPS) -> int:
    """Run ttexp's step alone while ``training.compile=auto`` is deciding (see the module
    docstring); returns how many steps that took (0 when the setting is true or false)."""
    n = 0
    while _compile_state(ours["backend"]) == "deciding" and n < limit:
        ours["step"](n)
        n += 1
    return n


def bench_minimal(plan: Any, device: torch.device, autocast: Any, compile_model: bool,
                  fast_eager: bool = True) -> Callable[[int], None]:
    """A hand-written loop over the same transformers Llama, same precision and batch
    (``fast_eager=False``: transformers' stock modules even in eager mode on CPU)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(plan.spec)).to(device).train()
    fwd = compile_regions(model) if compile_model else model  # as ttexp compiles
    if device.type == "cpu" and not compile_model and fast_eager:
        use_fast_eager(model)  # the same model as ttexp's eager step (ttexp.backends.torch_eager)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=True)  # as ttexp (fused on CPU and CUDA)
    b, t, v = plan.global_batch_size, plan.seq_len, plan.spec.vocab_size
    data = torch.randint(0, v, (8, b, t + 1), device=device)

    def step(i: int) -> None:
        w = data[i % 8]
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            logits = fwd(input_ids=w[:, :-1], use_cache=False).logits  # as ttexp trains
        loss = F.cross_entropy(logits.float().view(-1, v), w[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # one host sync per step, as in ttexp

    return step


class _Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.fc, self.out = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class NanoGPTStyle(nn.Module):
    """GPT-2 shaped model as nanoGPT builds it (bias-free), for the baseline only."""

    def __init__(self, vocab: int, d: int, layers: int, heads: int, context: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.blocks = nn.ModuleList(_Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.ln(x) @ self.wte.weight.T  # tied head


def bench_nanogpt_fp32(plan: Any, device: torch.device) -> Callable[[int], None]:
    """nanoGPT's default CPU path at the run's width, depth, heads, batch and context: fp32 eager."""
    s = plan.spec
    torch.manual_seed(0)
    model = NanoGPTStyle(s.vocab_size, s.hidden_dim, s.num_layers, s.num_heads, s.max_seq_len).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    b, t = plan.global_batch_size, plan.seq_len
    data = torch.randint(0, s.vocab_size, (8, b, t + 1), device=device)

    def step(i: int) -> None:
        w = data[i % 8]
        loss = F.cross_entropy(model(w[:, :-1]).view(-1, s.vocab_size), w[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()

    return step


def _row(name: str, times: list[float], plan: Any, peak: float | None, precision: str,
         layers: str) -> dict[str, Any]:
    median = statistics.median(times)
    tps = plan.global_batch_size * plan.gradient_accumulation_steps * plan.seq_len / median
    speed = speed_figures(tps, plan.flops_per_token, peak)
    return {"loop": name, "precision": precision, "layers": layers, "step_s": median, "tokens_per_s": tps,
            "achieved_tflops": speed["achieved_flops_per_s"] / 1e12, "mfu": speed["mfu"]}


def run_bench(overrides: list[str], warmup: int, steps: int, baselines: bool = True) -> dict[str, Any]:
    """Run the three loops and return the report (see module docstring)."""
    cfg = compose(overrides)
    ours = bench_ttexp(cfg)
    plan, device_name = ours["plan"], ours["device"]
    device = torch.device(device_name.split(" ")[0])
    solo = settle_compile(ours)
    compiled = _compile_state(ours["backend"]) == "compiled"  # true or auto's
    first = ours["step"]
    steps_fns = {"ttexp": lambda i: first(solo + i)}
    if baselines and plan.backend == "torch":
        steps_fns["minimal"] = bench_minimal(plan, device, ours["autocast"], compiled)
        steps_fns["nanoGPT fp32"] = bench_nanogpt_fp32(plan, device)
    times = _time_rounds(steps_fns, warmup, steps)
    ours["backend"].close()
    gc.collect()
    peak, source = peak_flops_for(plan.backend, plan.hardware, device_name, ours["precision"])
    layers = "compiled" if compiled else "eager"
    rows = [_row("ttexp", times["ttexp"], plan, peak, ours["precision"], layers)]
    if "minimal" in times:
        rows.append(_row("minimal", times["minimal"], plan, peak, ours["precision"], layers))
        fp32_peak, _ = peak_flops_for("torch", plan.hardware, device_name, "fp32")
        rows.append(_row("nanoGPT fp32", times["nanoGPT fp32"], plan, fp32_peak, "fp32", "eager"))
    by = {r["loop"]: r for r in rows}
    report = {
        "model": plan.spec.name, "backend": plan.backend, "hardware": plan.hardware,
        "device": device_name, "batch": plan.global_batch_size, "seq_len": plan.seq_len,
        "accumulation": plan.gradient_accumulation_steps, "flops_per_token": plan.flops_per_token,
        "peak_flops": peak, "peak_flops_source": source, "steps": steps, "warmup": warmup,
        "peak_memory_bytes": peak_memory_bytes(device_name), "rows": rows,
        "compile": {"setting": str(cfg.training.compile), "layers": layers, "solo_steps": solo},
        "machine": machine(),
    }
    if "minimal" in by:
        report["overhead_ratio"] = by["ttexp"]["step_s"] / by["minimal"]["step_s"]
        report["speedup_vs_nanogpt_fp32"] = by["ttexp"]["tokens_per_s"] / by["nanoGPT fp32"]["tokens_per_s"]
    return report


ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
"""Environment variables that cap the instruction set torch, oneDNN and MKL use."""


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU model and speed flags, ATen's CPU capability, the
    ISA caps set in the environment (``ONEDNN_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY``,
    ``MKL_ENABLE_INSTRUCTIONS``: how an fp32-only or AVX2-only CPU is emulated), threads, torch."""
    return {"cpu": cpu_model(), "flags": cpu_speed_flags(),
            "aten_capability": torch.backends.cpu.get_cpu_capability(),
            "isa_caps": {k: os.environ[k] for k in ISA_CAPS if k in os.environ},
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def print_report(report: dict[str, Any]) -> None:
    """Print the report of :func:`run_bench` as a table: one row per loop, then peak and ratios."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=(f"{report['model']} on {report['device']}, batch {report['batch']} x "
                         f"{report['seq_len']} (x{report['accumulation']}), median of "
                         f"{report['steps']} steps"))
    for col in ("loop", "precision", "layers", "step (s)", "tokens/s", "TFLOP/s", "MFU"):
        table.add_column(col, justify="left" if col in ("loop", "precision", "layers") else "right")
    for r in report["rows"]:
        table.add_row(r["loop"], r["precision"], r["layers"], f"{r['step_s']:.3f}", f"{r['tokens_per_s']:,.0f}",
                      f"{r['achieved_tflops']:.3f}", "-" if r["mfu"] is None else f"{r['mfu']:.1%}")
    console = Console()
    console.print(table)
    c = report["compile"]
    if c["solo_steps"]:
        console.print(f"training.compile={c['setting']}: ttexp ran {c['solo_steps']} steps alone first, "
                      f"as a {report['model']} run of this length would; its layers are {c['layers']} "
                      "(training.compile=false times eager mode)")
    console.print(f"FLOPs/token {report['flops_per_token']:,}; peak "
                  f"{(report['peak_flops'] or 0) / 1e12:.2f} TFLOP/s ({report['peak_flops_source']}); "
                  f"peak memory {report['peak_memory_bytes'] / 2**20:,.0f} MiB")
    m = report["machine"]
    caps = "".join(f"; {k}={v}" for k, v in m["isa_caps"].items())
    console.print(f"CPU: {m['cpu']} ({' '.join(m['flags']) or 'no flags read'}); ATen "
                  f"{m['aten_capability']}{caps}; {m['threads']} threads; torch {m['torch']}")
    if "overhead_ratio" in report:
        console.print(f"ttexp step time / minimal loop: {report['overhead_ratio']:.3f}x; "
                      f"ttexp tokens/s / nanoGPT fp32: {report['speedup_vs_nanogpt_fp32']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    """``python -m ttexp.bench [--steps N] [--warmup N] [--json FILE] [--no-baselines] OVERRIDES``;
    returns the exit status (0, or 2 with the message on stderr when the run config is refused)."""
    parser = argparse.ArgumentParser(prog="python -m ttexp.bench", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Start-up of a run: python -m ttexp.bench --startup --help")
    parser.add_argument("--steps", type=int, default=8, help="timed steps (default 8)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON ('-' = stdout)")
    parser.add_argument("--no-baselines", action="store_true", help="time ttexp only")
    parser.add_argument("overrides", nargs="*", help="run overrides, e.g. model=midi")
    args = parser.parse_args(argv)
    try:
        report = run_bench(args.overrides, args.warmup, args.steps, not args.no_baselines)
    except TtexpError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    print_report(report)
    if args.json:
        text = json.dumps(report, indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
