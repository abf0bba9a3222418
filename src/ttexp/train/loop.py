"""The training loop: one loop for every backend and every training task.

The loop owns the cadence (learning-rate schedule, accumulation, clipping, validation, validation
samples, checkpoints, the NaN guard, progress and timing); the backend owns the tensors
(:mod:`ttexp.backends.base`); the record owns the files (:mod:`ttexp.record.run_record`).

Timing: ``train_s`` covers micro-steps and optimizer steps only; validation, sampling and
checkpointing are timed separately as ``eval_s`` and ``checkpoint_s``, so tokens/s measures
training (reference/perf_anchors.md §1: nanoGPT's headline time mixes the two).
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Protocol

from ttexp.backends.base import Backend, SamplingParams
from ttexp.config.schema import RunConfig
from ttexp.data.batch import Batch
from ttexp.errors import Diverged, Interrupted
from ttexp.models.metrics import perplexity
from ttexp.record.job import resume_command
from ttexp.record.run_record import RunRecord
from ttexp.train.checkpoint import CheckpointManager
from ttexp.train.slurm import SpareChildren, hand_over, preempt_signal
from ttexp.train.plan import RunPlan
from ttexp.train.progress import Pace, TrainingProgress, hms
from ttexp.train.ranks import Ranks
from ttexp.train.schedule import learning_rate_at
from ttexp.train.speed import mfu

log = logging.getLogger("ttexp")


class TrainData(Protocol):
    """What the loop needs from a dataset (text corpus or prompt/response pairs)."""

    def train_batch(self, step: int, micro_step: int, batch_size: int) -> Batch: ...

    def val_batches(self, batch_size: int, max_batches: Optional[int] = None) -> Iterable[Batch]: ...

    def format_prompt(self, text: str) -> str:
        """The text the model is given for a generation prompt (a prompt template, or ``text``)."""
        ...


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
    log_s: float = 0.0
    last_checkpoint: Optional[str] = None
    last_val_step: Optional[int] = None

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
        plan: batch arithmetic from :func:`ttexp.train.plan.make_plan`.
        backend: a built backend (model and optimizer exist).
        data: training and validation batches.
        tokenizer: encodes validation prompts and decodes samples.
        record: the run record that receives metrics, samples and results (a
            :class:`~ttexp.record.run_record.NullRecord` on ranks other than 0).
        ranks: this process among the run's ranks (:meth:`Ranks.single` in one process).
        peak_flops: the device's peak FLOP/s that MFU divides by; None = no MFU.
    """

    def __init__(self, cfg: RunConfig, plan: RunPlan, backend: Backend, data: TrainData,
                 tokenizer: Any, record: RunRecord, ranks: Ranks,
                 peak_flops: Optional[float] = None):
        self.cfg, self.plan, self.backend, self.data = cfg, plan, backend, data
        self.ranks = ranks
        self.peak_flops = peak_flops
        self.tokenizer, self.record = tokenizer, record
        self.t = cfg.training
        self.sampling = SamplingParams.from_config(cfg.generation, tokenizer)
        self.result = LoopResult()
        self.checkpoints = CheckpointManager(record.dir, cfg, self.t.keep_last_n, self.t.keep_best_n)
        self._signal: Optional[int] = None
        self._saved_handlers: dict[int, Any] = {}  # the handlers the loop replaced (submitit's)

    def restore(self, trainer_state: dict[str, Any]) -> int:
        """Continue the counters of a resumed run; returns the step to start from."""
        saved = trainer_state.get("loop", {})
        for key, value in saved.items():
            if hasattr(self.result, key):
                setattr(self.result, key, value)
        return int(trainer_state["step"])

    def lr(self, step: int) -> float:
        s = self.cfg.scheduler
        return learning_rate_at(step, self.t.learning_rate, self.t.warmup_steps, self.t.max_steps,
                                s.name.value, s.min_lr_ratio)

    def run(self, start_step: int = 0) -> LoopResult:
        """Train to ``training.max_steps``; returns the figures for result.json.

        Raises:
            Diverged: NaN or Inf in the loss or gradients (names the step and last checkpoint).
            Interrupted: SIGINT or SIGTERM (after saving a checkpoint).
        """
        t = self.t
        # training.stop_at_step ends the loop early while lr() keeps the max_steps schedule, so a
        # later resume=auto continues the very curve an uninterrupted run follows (halving rungs).
        last = min(t.stop_at_step or t.max_steps, t.max_steps)
        expect = getattr(self.backend, "expect_steps", None)  # torch: what compile=auto weighs
        if callable(expect):
            expect(last - start_step)
        pace = Pace(start_step, last)
        tokens0, train_s0 = self.result.tokens, self.result.train_s  # a resume's totals so far
        with TrainingProgress(last, start_step) as bar, self._catch_signals():
            for step in range(start_step, last):
                stats, lr, _ = self.train_step(step)
                done = step + 1
                tick = time.perf_counter()
                pace.update(done, self.result.tokens - tokens0, self.result.train_s - train_s0)
                bar.update(done, stats.loss, lr, pace)
                self._log_step(done, start_step, stats.loss, stats.grad_norm, lr, pace)
                self.result.log_s += time.perf_counter() - tick
                if _due(done, t.validation_frequency, last):
                    self.validate(done)
                if t.checkpoint_frequency > 0 and done % t.checkpoint_frequency == 0:
                    self.checkpoint(done)
                if self.ranks.any(self._signal is not None):  # every rank stops at the same step
                    self._stop(done)
        if start_step < last < t.max_steps and self.result.steps_done == last and \
                not (self.result.last_checkpoint or "").endswith(f"step_{last}"):
            self.checkpoint(last)  # what the next rung resumes from
        return self.result

    def train_step(self, step: int) -> tuple[Any, float, float]:
        """One optimizer step (0-based ``step``): micro-steps, update, NaN guard, metrics line.

        Returns (StepStats, learning rate, tokens/s of this step). ``python -m ttexp.bench`` times
        exactly this method against a hand-written loop.
        """
        plan, r = self.plan, self.result
        lr = self.lr(step)
        tick = time.perf_counter()
        # Every rank draws the same global batches, so the step's scored tokens (all micro-steps,
        # all ranks) are known here without communication; each shard's mean loss is weighted by
        # its share of them (torchtune/torchtitan's normalisation), so batch 8 x accumulation 4
        # and batch 32 x accumulation 1 give the same gradient on padded prompt/response data.
        batches = [self.data.train_batch(step, micro, plan.global_batch_size)
                   for micro in range(plan.gradient_accumulation_steps)]
        scored = max(1, sum(b.num_scored for b in batches))
        tokens = sum(b.num_tokens for b in batches)  # padding included: what the device computed
        for batch in batches:
            shard = self.ranks.shard(batch)
            if shard.num_scored:  # a shard of only prompt/padding adds nothing (its mean is 0/0)
                self.backend.micro_step(shard, self.ranks.world_size * shard.num_scored / scored)
        stats = self.backend.optimizer_step(lr, self._max_norm)  # the one host sync of the step
        elapsed = time.perf_counter() - tick
        done = step + 1
        r.train_s += elapsed
        r.tokens += tokens
        r.steps_done, r.final_train_loss = done, stats.loss
        self._guard(done, stats.loss, stats.grad_norm)
        tick = time.perf_counter()
        tps = tokens / elapsed
        metrics = {"train/loss": stats.loss, "train/lr": lr,
                   "train/grad_norm": stats.grad_norm, "train/tokens_per_s": tps}
        if self.peak_flops:
            metrics["train/mfu"] = mfu(tps, plan.flops_per_token, self.peak_flops)
        self.record.log_metrics(done, metrics)
        r.log_s += time.perf_counter() - tick
        return stats, lr, tps

    @property
    def _max_norm(self) -> Optional[float]:
        return self.t.clip_grad_norm_max_norm if self.t.use_clip_grad_norm else None

    def _catch_signals(self) -> Any:
        """SIGINT/SIGTERM set a flag; the loop finishes the step, checkpoints and stops. A second
        signal restores the default handler, so a second Ctrl-C stops at once. Under submitit its
        preemption signal (SIGUSR2) does the same, then goes on to submitit's handler, which
        requeues the job (:mod:`ttexp.train.slurm`)."""
        loop = self

        class _Handlers:
            def __enter__(self) -> None:
                self.saved = {}
                if threading.current_thread() is not threading.main_thread():
                    return
                preempt = preempt_signal()
                for sig in (signal.SIGINT, signal.SIGTERM, *([preempt] if preempt else [])):
                    self.saved[sig] = signal.signal(sig, self._handle)
                loop._saved_handlers = self.saved
                self.spared = SpareChildren(preempt).__enter__()  # SLURM signals the compiler too

            def _handle(self, signum: int, frame: Any) -> None:
                loop._signal = signum
                signal.signal(signum, self.saved.get(signum, signal.SIG_DFL))
                log.warning("%s received: finishing this step, then saving a checkpoint "
                            "(send it again to stop at once).", signal.Signals(signum).name)

            def __exit__(self, *exc: Any) -> None:
                if self.saved:
                    self.spared.__exit__()
                for sig, handler in self.saved.items():
                    signal.signal(sig, handler)

        return _Handlers()

    def _stop(self, step: int) -> None:
        name = signal.Signals(self._signal).name
        path = self.result.last_checkpoint
        if not path or not path.endswith(f"step_{step}"):
            path = str(self.checkpoint(step))
        previous = self._saved_handlers.get(self._signal)
        if self._signal not in (signal.SIGINT, signal.SIGTERM) and callable(previous):
            raise Interrupted(f"Preempted ({name}) after step {step}; checkpoint saved to {path}; "
                              f"{hand_over(previous, self._signal)}.")
        raise Interrupted(
            f"Stopped by {name} after step {step}; checkpoint saved to {path}. Continue with: "
            f"{resume_command(self.record.dir, self.record.result.overrides)}"
        )

    def _guard(self, step: int, loss: float, grad_norm: float) -> None:
        if math.isfinite(loss) and math.isfinite(grad_norm):
            return
        last = self.result.last_checkpoint or "none (no checkpoint was written yet)"
        raise Diverged(
            f"Training diverged at step {step}: loss={loss}, grad_norm={grad_norm}. The last good "
            f"checkpoint is {last}. Lower training.learning_rate or raise training.warmup_steps."
        )

    def _log_step(self, done: int, start_step: int, loss: float, grad_norm: float, lr: float,
                  pace: Pace) -> None:
        r = self.result
        if done == start_step + min(3, self.t.max_steps - start_step):
            # Honest estimate: measured on the steps so far (the first one includes warm-up).
            per_step = r.train_s / (done - start_step)
            remaining = per_step * (self.t.max_steps - done)
            log.info("Measured %.2f s/step: the remaining %s steps take about %s (plus validation).",
                     per_step, f"{self.t.max_steps - done:,}", hms(remaining))
        if done % self.t.log_frequency == 0 or done == self.t.max_steps:
            util = mfu(pace.tokens_per_s, self.plan.flops_per_token, self.peak_flops)
            shown = f" | MFU {util:.1%}" if util is not None else ""
            log.info("Step %d/%d | loss %.4f | lr %.3e | grad_norm %.3f | %s tok/s%s | elapsed %s "
                     "| ETA %s", done, self.t.max_steps, loss, lr, grad_norm,
                     f"{pace.tokens_per_s:,.0f}", shown, hms(pace.elapsed_s), pace.eta_text)

    def validate(self, step: int) -> float:
        """Validation loss and perplexity, plus one sample per prompt, recorded at ``step``."""
        tick = time.perf_counter()
        batches = self.data.val_batches(self.t.validation_batch_size or self.plan.global_batch_size,
                                        self.t.validation_batches)
        loss = self.backend.evaluate(self.ranks.shard(b) for b in batches)
        if not math.isfinite(loss):
            raise Diverged(f"Validation loss at step {step} is {loss}. The last good checkpoint is "
                           f"{self.result.last_checkpoint or 'none'}. Lower training.learning_rate "
                           "or raise training.warmup_steps.")
        samples = []
        for prompt in self.cfg.generation.prompts if self.ranks.is_main else []:
            text = self.data.format_prompt(prompt)
            ids = self.backend.generate(self.tokenizer.encode(text), self.sampling)
            samples.append((text, self.tokenizer.decode(ids)))
        r = self.result
        r.final_val_loss, r.last_val_step = loss, step
        if r.best_val_loss is None or loss < r.best_val_loss:
            r.best_val_loss, r.best_val_step = loss, step
        ppl = perplexity(loss)
        self.record.log_metrics(step, {"val/loss": loss, "val/ppl": ppl})
        self.record.log_validation(step, loss, samples)
        r.eval_s += time.perf_counter() - tick
        log.info("Step %d | validation loss %.4f | perplexity %.2f", step, loss, ppl)
        for prompt, completion in samples[:1]:
            log.info("Sample:\n%s%s", prompt, completion)
        return loss

    def checkpoint(self, step: int) -> Path:
        """Save a complete checkpoint for ``step`` (validation loss attached when measured at it)."""
        tick = time.perf_counter()
        r = self.result
        val = r.final_val_loss if r.last_val_step == step else None
        state = {
            "step": step,
            "data_position": {"step": step, "micro_step": 0, "seed": self.t.seed},
            "scheduler": {"name": self.cfg.scheduler.name.value, "step": step},
            "val_loss": val,
            "loop": {k: v for k, v in asdict(r).items() if k != "last_checkpoint"},
        }
        if self.ranks.is_main:  # weights and optimizer state are identical on every rank
            path = self.checkpoints.save(step, self.backend, state, val)
        else:
            path = self.checkpoints.dir / f"step_{step}"
        r.last_checkpoint = str(path)
        r.checkpoint_s += time.perf_counter() - tick
        log.info("Checkpoint saved to %s", path)
        return path
