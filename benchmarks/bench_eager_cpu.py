"""What ttexp's eager CPU modules (ttexp.backends.torch_eager) save, in one process, interleaved.

    python benchmarks/bench_eager_cpu.py [--rounds 12] [--warmup 2] [--chunk-mib 1.5 6 24] [--bf16]
                                         [overrides]

Times one training step (forward, cross-entropy, backward, clip, AdamW) of the bench's minimal
loop (ttexp.tools.bench.bench_minimal) three ways: transformers' stock Llama, the same model with
ttexp's eager modules (RMSNorm, RoPE) and the MLP chunked at each ``--chunk-mib`` size (MiB per
``[rows, mlp_dim]`` intermediate), and the bench's nanoGPT-style fp32 model. Default shape: the
bench's (nano, 16 x 512); fp32, or bf16 autocast for both Llamas with ``--bf16`` (nanoGPT stays
fp32). One step of each per round, so load from other processes falls on all alike; prints the median step time over the rounds and its ratio to nanoGPT's (> 1 = faster).
"""

from __future__ import annotations

import argparse
import statistics

import torch

from ttexp.backends import torch_eager
from ttexp.tools.bench import _time_rounds, bench_minimal, bench_nanogpt_fp32, compose
from ttexp.train.plan import make_plan


def with_chunk(step, chunk_bytes: int):
    """``step`` run with the MLP chunked at ``chunk_bytes`` (restored afterwards)."""
    def run(i: int) -> None:
        saved = torch_eager._ChunkedMLP.chunk_bytes
        torch_eager._ChunkedMLP.chunk_bytes = chunk_bytes
        try:
            step(i)
        finally:
            torch_eager._ChunkedMLP.chunk_bytes = saved
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--chunk-mib", type=float, nargs="+", default=[1.5, 6.0, 24.0])
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the Llamas")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    plan = make_plan(compose(args.overrides))
    device = torch.device("cpu")
    autocast = torch.bfloat16 if args.bf16 else None
    steps = {"nanoGPT fp32": bench_nanogpt_fp32(plan, device),
             "stock": bench_minimal(plan, device, autocast, False, fast_eager=False)}
    for mib in args.chunk_mib:
        rows = torch_eager.chunk_rows(plan.spec.mlp_dim, 2 if args.bf16 else 4, int(mib * 2**20))
        steps[f"fast, chunks of {rows} tokens ({mib:g} MiB)"] = with_chunk(
            bench_minimal(plan, device, autocast, False), int(mib * 2**20))
    times = _time_rounds(steps, args.warmup, args.rounds)
    nano = statistics.median(times["nanoGPT fp32"])
    print(f"{plan.spec.name}, batch {plan.global_batch_size} x {plan.seq_len}, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:40s} {med:7.3f} s/step  {nano / med:5.3f}x nanoGPT  "
              f"(min {min(ts):.3f}, max {max(ts):.3f})")


if __name__ == "__main__":
    main()
