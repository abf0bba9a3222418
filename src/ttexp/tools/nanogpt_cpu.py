"""``python -m ttexp.tools.nanogpt_cpu [--data FILE]``: nanoGPT's README CPU run, as a baseline.

nanoGPT itself is not installed here (it is a repository, not a package), so this is its README
CPU command rebuilt on the bench's nanoGPT-style GPT (:class:`ttexp.tools.bench.NanoGPTStyle`:
learned positions, bias-free LayerNorm, GELU MLP 4x, tied head, SDPA causal attention) with
nanoGPT's hyperparameters from ``config/train_shakespeare_char.py`` and the README's overrides::

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
      --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
      --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0

i.e. char vocabulary (65), first 90% train / last 10% val, random windows, AdamW (0.9, 0.99),
weight decay 0.1 on matrices, lr 1e-3 with 100 warm-up iterations and cosine decay to 1e-4, clip
1.0, fp32 (nanoGPT's CPU path has no autocast), N(0, 0.02) init with the residual projections
scaled by 1/sqrt(2 n_layer), and a 20-batch estimate of the val loss every 250 iterations and at
the end. The README reports "a loss of only 1.88" in "about ~3 minutes" (2023 MacBook);
reference/perf_anchors.md §5 measured the real train.py at val 1.8857, 94.8 s on a 2-core EPYC.
Prints the wall time from process start to each estimate, so it compares with ``experiment=cpu_quick``.
"""

from __future__ import annotations

import argparse
import math
import time

T0 = time.monotonic()  # before the heavy imports: start-up counts

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ttexp.tools.bench import NanoGPTStyle  # noqa: E402


def _lr(it: int, lr: float = 1e-3, min_lr: float = 1e-4, warmup: int = 100, decay: int = 2000) -> float:
    """nanoGPT's get_lr: linear warm-up, cosine decay to ``min_lr`` at ``decay`` iterations."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    ratio = min(1.0, (it - warmup) / (decay - warmup))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def _init(model: NanoGPTStyle, n_layer: int) -> None:
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("proj.weight", "out.weight")) else 0.02
            torch.nn.init.normal_(p, 0.0, std)


def main(argv: list[str] | None = None) -> int:
    """Train and print ``iter, val loss, wall s since start``; returns 0."""
    parser = argparse.ArgumentParser(prog="python -m ttexp.tools.nanogpt_cpu")
    parser.add_argument("--data", default="../shared/data/tinyshakespeare.txt")
    parser.add_argument("--max-iters", type=int, default=2000)
    args = parser.parse_args(argv)
    text = open(args.data, encoding="utf-8").read()
    chars = sorted(set(text))
    lut = {c: i for i, c in enumerate(chars)}
    data = np.array([lut[c] for c in text], dtype=np.int64)
    n = int(0.9 * len(data))
    splits = {"train": torch.from_numpy(data[:n]), "val": torch.from_numpy(data[n:])}
    block, batch, n_layer = 64, 12, 4
    torch.manual_seed(1337)
    model = NanoGPTStyle(len(chars), 128, n_layer, 4, block)
    _init(model, n_layer)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.99))

    def get_batch(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        d = splits[split]
        ix = torch.randint(len(d) - block, (batch,))
        x = torch.stack([d[i:i + block] for i in ix])
        return x, torch.stack([d[i + 1:i + 1 + block] for i in ix])

    @torch.no_grad()
    def val_loss() -> float:
        model.eval()
        losses = [F.cross_entropy(model(x).view(-1, len(chars)), y.view(-1)).item()
                  for x, y in (get_batch("val") for _ in range(20))]
        model.train()
        return float(np.mean(losses))

    for it in range(args.max_iters + 1):
        if it % 250 == 0 or it == args.max_iters:
            print(f"iter {it} val {val_loss():.4f} wall {time.monotonic() - T0:.1f}s", flush=True)
        if it == args.max_iters:
            break
        for g in opt.param_groups:
            g["lr"] = _lr(it)
        x, y = get_batch("train")
        loss = F.cross_entropy(model(x).view(-1, len(chars)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
