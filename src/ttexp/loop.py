"""The training loop: one loop for every backend and every training task.

The loop owns the cadence (learning-rate schedule, accumulation, clipping, validation, validation
samples, checkpoints, the NaN guard, progress and timing); the backend owns the tensors
(:mod:`ttexp.backends.base`); the record owns the files (:mod:`ttexp.record`).

Timing: ``train_s`` covers micro-steps and optimizer steps only; validation, sampling and
checkpointing are timed separately as ``eval_s`` and ``checkpoint_s``, so tokens/s measures
training (reference/perf_anchors.md §1: nanoGPT's headline time mixes the two).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Protocol

from ttexp.backends.base import Backend, SamplingParams
from ttexp.checkpoint import save_checkpoint
from ttexp.data.batch import Batch
from ttexp.errors import TtexpError
from ttexp.plan import RunPlan
from ttexp.progress import TrainingProgress
from ttexp.record import RunRecord
from ttexp.schedule import learning_rate_at

log = logging.getLogger("ttexp")


class TrainData(Protocol):
    """What the loop needs from a dataset (text corpus or prompt/response pairs)."""

    def train_batch(self, step: int, micro_step: int, batch_size: int) -> Batch: ...

    def val_batches(self, batch_size: int, max_batches: Optional[int] = None) -> Iterable[Batch]: ...

    def format_prompt(self, text: str) -> str:
        """The text the model is given for a generation prompt (a prompt template, or ``text``)."""
        ...


class Diverged(TtexpError):
    """The loss or the gradient norm became NaN or infinite."""


@dataclass
class LoopResult:
    steps_done: int = 0
    final_train_loss: Optional[float] = None
    final_val_loss: Optional[float] = None
    best_val_loss: Optional[float] = None
    best_val_step: Optional[int] = None
    tokens: int = 0
    train_s: float = 0.0
    eval_s: float = 0.0
    checkpoint_s: float = 0.0
    last_checkpoint: Optional[str] = None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_s if self.train_s > 0 else 0.0


def _due(step: int, frequency: int, last: int) -> bool:
    """True at multiples of ``frequency`` (0 = never) and at the last step."""
    return step == last or (frequency > 0 and step % frequency == 0)


class TrainingLoop:
    """Runs optimizer steps ``start_step + 1 .. max_steps`` (1-based "step N" = N updates done).

    Args:
        cfg: the composed config (reads ``training``, ``scheduler``, ``generation``).
        plan: batch arithmetic from :func:`ttexp.plan.make_plan`.
        backend: a built backend (model and optimizer exist).
        data: training and validation batches.
        tokenizer: encodes validation prompts and decodes samples.
        record: the run record that receives metrics, samples and results.
    """

    def __init__(self, cfg: Any, plan: RunPlan, backend: Backend, data: TrainData,
                 tokenizer: Any, record: RunRecord):
        self.cfg, self.plan, self.backend, self.data = cfg, plan, backend, data
        self.tokenizer, self.record = tokenizer, record
        self.t = cfg.training
        g = cfg.generation
        self.sampling = SamplingParams(
            max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_k=g.top_k,
            top_p=g.top_p, repetition_penalty=g.repetition_penalty, seed=g.seed,
            eos_token_id=getattr(tokenizer, "eos_token_id", None),
        )
        self.result = LoopResult()

    def lr(self, step: int) -> float:
        s = self.cfg.scheduler
        name = getattr(s.name, "value", s.name)
        return learning_rate_at(step, self.t.learning_rate, self.t.warmup_steps, self.t.max_steps,
                                name, s.min_lr_ratio)

    def run(self, start_step: int = 0) -> LoopResult:
        """Train to ``training.max_steps``; returns the figures for result.json.

        Raises:
            Diverged: NaN or Inf in the loss or gradients (names the step and last checkpoint).
        """
        t, plan, r = self.t, self.plan, self.result
        max_norm = t.clip_grad_norm_max_norm if t.use_clip_grad_norm else None
        scale = 1.0 / plan.gradient_accumulation_steps
        with TrainingProgress(t.max_steps, start_step) as bar:
            for step in range(start_step, t.max_steps):
                lr = self.lr(step)
                tick = time.perf_counter()
                tokens = 0  # what the batches really hold: prompt/response batches vary in length
                for micro in range(plan.gradient_accumulation_steps):
                    batch = self.data.train_batch(step, micro, plan.global_batch_size)
                    tokens += batch.num_tokens
                    self.backend.micro_step(batch, scale)
                stats = self.backend.optimizer_step(lr, max_norm)  # the one host sync of the step
                elapsed = time.perf_counter() - tick
                done = step + 1
                r.train_s += elapsed
                r.tokens += tokens
                r.steps_done, r.final_train_loss = done, stats.loss
                self._guard(done, stats.loss, stats.grad_norm)
                tps = tokens / elapsed
                self.record.log_metrics(done, {"train/loss": stats.loss, "train/lr": lr,
                                               "train/grad_norm": stats.grad_norm,
                                               "train/tokens_per_s": tps})
                bar.update(done, stats.loss, lr, tps)
                self._log_step(done, start_step, stats.loss, stats.grad_norm, lr)
                if _due(done, t.validation_frequency, t.max_steps):
                    self.validate(done)
                if t.checkpoint_frequency > 0 and done % t.checkpoint_frequency == 0:
                    self.checkpoint(done)
        return r

    def _guard(self, step: int, loss: float, grad_norm: float) -> None:
        if math.isfinite(loss) and math.isfinite(grad_norm):
            return
        last = self.result.last_checkpoint or "none (no checkpoint was written yet)"
        raise Diverged(
            f"Training diverged at step {step}: loss={loss}, grad_norm={grad_norm}. The last good "
            f"checkpoint is {last}. Lower training.learning_rate or raise training.warmup_steps."
        )

    def _log_step(self, done: int, start_step: int, loss: float, grad_norm: float, lr: float) -> None:
        r = self.result
        if done == start_step + min(3, self.t.max_steps - start_step):
            # Honest estimate: measured on the steps so far (the first one includes warm-up).
            per_step = r.train_s / (done - start_step)
            remaining = per_step * (self.t.max_steps - done)
            log.info("Measured %.2f s/step: the remaining %s steps take about %s (plus validation).",
                     per_step, f"{self.t.max_steps - done:,}", _hms(remaining))
        if done % self.t.log_frequency == 0 or done == self.t.max_steps:
            log.info("Step %d/%d | loss %.4f | lr %.3e | grad_norm %.3f | %s tok/s",
                     done, self.t.max_steps, loss, lr, grad_norm, f"{r.tokens_per_s:,.0f}")

    def validate(self, step: int) -> float:
        """Validation loss and perplexity, plus one sample per prompt, recorded at ``step``."""
        tick = time.perf_counter()
        loss = self.backend.evaluate(self.data.val_batches(
            self.t.validation_batch_size or self.plan.global_batch_size, self.t.validation_batches))
        samples = []
        for prompt in self.cfg.generation.prompts:
            text = self.data.format_prompt(prompt)
            ids = self.backend.generate(self.tokenizer.encode(text), self.sampling)
            samples.append((text, self.tokenizer.decode(ids)))
        r = self.result
        r.final_val_loss = loss
        if r.best_val_loss is None or loss < r.best_val_loss:
            r.best_val_loss, r.best_val_step = loss, step
        ppl = math.exp(min(loss, 50.0))
        self.record.log_metrics(step, {"val/loss": loss, "val/ppl": ppl})
        self.record.log_validation(step, loss, samples)
        r.eval_s += time.perf_counter() - tick
        log.info("Step %d | validation loss %.4f | perplexity %.2f", step, loss, ppl)
        for prompt, completion in samples[:1]:
            log.info("Sample:\n%s%s", prompt, completion)
        return loss

    def checkpoint(self, step: int) -> Path:
        tick = time.perf_counter()
        r = self.result
        path = save_checkpoint(
            self.record.dir / "checkpoints" / f"step_{step}",
            self.backend,
            {"step": step, "best_val_loss": r.best_val_loss, "best_val_step": r.best_val_step,
             "tokens": r.tokens},
        )
        r.last_checkpoint = str(path)
        r.checkpoint_s += time.perf_counter() - tick
        log.info("Checkpoint saved to %s", path)
        return path


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"
