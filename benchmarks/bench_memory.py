"""The memory plan against measured bytes: nano, mini and a tiny Llama, full and LoRA, with and
without activation checkpointing, fp32 and bf16 autocast; then TinyLlama on n150 (ttml).

    python benchmarks/bench_memory.py [--batch 2] [--seq 128]

Estimated: ttexp.models.memory.activation_bytes. Measured: tests/memory_probe.py (bytes saved
for backward, via torch.autograd.graph.saved_tensors_hooks, one count per storage). Model shapes
come from conf/model/*.yaml (dropout as configured); the tiny Llama is conftest's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS / "unit"))
from conftest import compose_cfg  # noqa: E402
from memory_probe import checkpointed_activation_bytes, saved_activation_bytes  # noqa: E402
from test_memory_plan import LORA, PRECISIONS, TINY_LLAMA, build  # noqa: E402

from ttexp.models.memory import activation_bytes  # noqa: E402
from ttexp.models.spec import ModelSpec  # noqa: E402
from ttexp.train.memory import memory_plan  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(1)
    specs = [ModelSpec.from_config(compose_cfg([f"model={m}"]).model) for m in ("nano", "mini")]
    specs.append(TINY_LLAMA)
    b, s = args.batch, args.seq
    print(f"micro-batch {b} x {s} tokens; bytes saved for backward in one step (KiB)")
    print(f"| model | adapter | precision | checkpointing | estimated | measured | est/meas |")
    print("|---|---|---|---|---:|---:|---:|")
    worst = 0.0
    for spec in specs:
        for lora in (None, LORA):
            for prec, (dtype, profile) in PRECISIONS.items():
                plain, per_layer = saved_activation_bytes(build(spec, lora, False), b, s,
                                                          spec.vocab_size, dtype)
                ckpt = checkpointed_activation_bytes(build(spec, lora, True), b, s,
                                                     spec.vocab_size, dtype, max(per_layer))
                for on, measured in ((False, plain), (True, ckpt)):
                    est = activation_bytes(spec, b, s, profile, lora, on)
                    worst = max(worst, abs(est / measured - 1))
                    print(f"| {spec.name} | {'lora r4 q,v' if lora else 'full'} | {prec} | "
                          f"{'on' if on else 'off'} | {est / 1024:,.0f} | {measured / 1024:,.0f} | "
                          f"{est / measured:.3f} |")
    print(f"largest deviation: {worst:.1%}")
    for adapter in ("none", "lora"):
        cfg = compose_cfg(["experiment=trickster_n150", f"adapter={adapter}"])
        plan = memory_plan(cfg, "ttml", micro_batch_size=8)
        print(f"\nTinyLlama on n150 (ttml), adapter={adapter}:")
        print("\n".join(plan.lines()))


if __name__ == "__main__":
    main()
