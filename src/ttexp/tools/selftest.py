"""``python -m ttexp.doctor --selftest``: the backend conformance steps on a Tenstorrent device,
checked against the torch backend on the host CPU, printed as a table for a bug report.

    python -m ttexp.doctor --selftest                          # one device (hardware=n150)
    python -m ttexp.doctor --selftest hardware=n300            # the data-parallel mesh [1, 2]
    python -m ttexp.doctor --selftest hardware.device_ids=[1]  # another chip of this host

The steps are those of tests/integration/test_conformance.py, on a fixed tiny tied Llama
(:data:`SPEC`) and one fixed random batch, so no corpus and no download is needed: both backends
start from the same safetensors and take :data:`STEPS` optimizer steps (loss deltas, and the loss
must fall on the device); the device checkpoints at step :data:`RESUME_AT` through the checkpoint
module, a fresh device backend resumes from it and must reproduce the later losses exactly;
greedy generation with and without the KV cache must give the same tokens; the weights exported
under Hugging Face names must load in ``transformers`` with logits close to the device's.

Exit status (:data:`EXIT_PASSED`, :data:`EXIT_FAILED`, :data:`EXIT_USAGE`,
:data:`EXIT_NO_DEVICE`): 0 every step passed; 1 a step failed (the table says which); 2 the
overrides do not compose; 69 (``EX_UNAVAILABLE`` of BSD's sysexits.h, "a service is
unavailable") no Tenstorrent device is present: ttml does not import or no device opens, so
nothing ran. It writes only into a temporary directory, removed at the end.
"""

from __future__ import annotations

import math
import platform
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ttexp.backends.base import SamplingParams
from ttexp.backends.detect import ttml_device_status
from ttexp.config.compose import compose_run_config
from ttexp.config.schema import RunConfig
from ttexp.data.batch import Batch
from ttexp.models.spec import ModelSpec

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE, EXIT_NO_DEVICE = 0, 1, 2, 69
"""Exit codes; 69 is sysexits.h's EX_UNAVAILABLE (Python's ``os.EX_UNAVAILABLE`` on POSIX)."""

SPEC = ModelSpec(name="selftest", vocab_size=256, hidden_dim=64, num_layers=2, num_heads=4,
                 num_kv_heads=2, mlp_dim=128, max_seq_len=64, rope_theta=10000.0,
                 rms_norm_eps=1e-5, tie_word_embeddings=True, dropout=0.0)
"""Tiny, tied (as nano), GQA, tile-aligned (64 = 2 tiles), eps 1e-5 as ttml's fixed RMSNorm eps."""
STEPS, RESUME_AT, LR, MAX_GRAD_NORM = 8, 4, 3e-3, 1.0
LOSS_RTOL = 5e-2
"""Relative loss gap allowed over the first 3 steps: bf16 on the device vs fp32 on the host
(the figure tests/hardware/test_ttml_hardware.py allows)."""
LOGITS_RTOL = 5e-2
"""Largest |device - transformers| logit allowed, as a fraction of the largest |logit|."""
PROMPT = [70, 105, 114, 115, 116]  # "First"


@dataclass
class Row:
    """One line of the table: ``verdict`` is PASS, FAIL or 'not run'."""

    check: str
    figure: str
    verdict: str


def fixed_batch(num_devices: int) -> Batch:
    """``4 * num_devices`` sequences of ``SPEC.max_seq_len`` random bytes (seed 0): shards evenly."""
    w = np.random.default_rng(0).integers(0, SPEC.vocab_size, size=(4 * num_devices, SPEC.max_seq_len + 1))
    return Batch(w[:, :-1], w[:, 1:])


def _train(backend: Any, batch: Batch, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        backend.micro_step(batch, 1.0)
        out.append(backend.optimizer_step(LR, MAX_GRAD_NORM).loss)
    return out


def device_logits(backend: Any, ids: list[int]) -> np.ndarray:
    """The ttml backend's logits ``[len(ids), vocab]`` for one sequence (padded to the tile)."""
    from ttexp.backends.ttml.tensors import padded_tokens

    host = padded_tokens(ids)
    try:
        out = backend.to_host(backend.logits(backend.to_device(host, tile=False),
                                             backend.causal(host.shape[-1])))
    finally:
        backend.ctx.reset_graph()
    return out.reshape(-1, out.shape[-1])[: len(ids), : backend.spec.vocab_size]


class SelfTest:
    """The steps, run in order; a step that raises fails and the later ones are 'not run'."""

    def __init__(self, cfg: RunConfig, work: Path, make_device: Callable[[], Any]):
        self.cfg, self.work, self.make_device = cfg, work, make_device
        self.rows: list[Row] = []
        self.device: Any = None

    def host_and_device_losses(self) -> tuple[list[float], list[float], Path]:
        import torch

        from ttexp.backends.torch_backend import TorchBackend
        from ttexp.train.checkpoint import CheckpointManager

        torch.manual_seed(0)
        host = TorchBackend(torch.device("cpu"), "fp32", self.cfg.optimizer,
                           weight_decay=self.cfg.training.weight_decay)
        host.build_model(SPEC)
        start = self.work / "start"
        start.mkdir()
        host.save_weights(start)
        self.device = self.make_device()
        self.device.build_model(SPEC, init_from=start)
        batch = fixed_batch(self.device.mesh.num_devices)
        want = _train(host, batch, STEPS)
        got = _train(self.device, batch, RESUME_AT)
        ckpt = CheckpointManager(self.work / "run", self.cfg, None, None).save(
            RESUME_AT, self.device, {"step": RESUME_AT}, None)
        got += _train(self.device, batch, STEPS - RESUME_AT)
        return want, got, ckpt

    def run(self) -> list[Row]:
        steps = [(("loss vs torch", "loss falls on device"), self.step_losses),
                 (("resume exactness",), self.step_resume),
                 (("cached vs uncached generation",), self.step_generation),
                 (("HF export logits",), self.step_export)]
        failed = None
        try:
            for names, step in steps:
                if failed:
                    self.rows += [Row(n, f"(after {failed} failed)", "not run") for n in names]
                    continue
                try:
                    step()
                except Exception as exc:  # the table is the report: name the error, go on
                    failed = names[0]
                    self.rows.append(Row(names[0], f"{type(exc).__name__}: {exc}"[:300], "FAIL"))
                    self.rows += [Row(n, f"(after {failed} failed)", "not run") for n in names[1:]]
        finally:
            if self.device is not None:
                self.device.close()
        return self.rows

    def step_losses(self) -> None:
        want, got, self.ckpt = self.host_and_device_losses()
        self.got = got
        rel = [abs(g - w) / abs(w) for g, w in zip(got, want)]
        ok = max(rel[:3]) <= LOSS_RTOL and all(map(math.isfinite, got))
        self.rows.append(Row("loss vs torch", f"first {got[0]:.4f} vs {want[0]:.4f}; max rel delta "
                             f"{max(rel[:3]):.2e} (steps 1-3), {max(rel):.2e} (1-{STEPS})",
                             "PASS" if ok else "FAIL"))
        falls = got[-1] < got[0]
        self.rows.append(Row("loss falls on device", f"{got[0]:.4f} -> {got[-1]:.4f} in {STEPS} steps",
                             "PASS" if falls else "FAIL"))

    def step_resume(self) -> None:
        from ttexp.train.checkpoint import load_checkpoint

        self.device.close()  # one device is open at a time (AutoContext is a singleton)
        self.device = self.make_device()
        self.device.build_model(SPEC)
        step = load_checkpoint(self.ckpt, self.device)["step"]
        again = _train(self.device, fixed_batch(self.device.mesh.num_devices), STEPS - step)
        delta = max(abs(a - b) for a, b in zip(again, self.got[step:]))
        self.rows.append(Row("resume exactness", f"steps {step + 1}-{STEPS} after resuming from "
                             f"step_{step}: max abs delta {delta:.3g}", "PASS" if delta == 0 else "FAIL"))

    def step_generation(self) -> None:
        b = self.device
        if not b.api.has_kv_cache:
            self.rows.append(Row("cached vs uncached generation", "this ttml has no KV cache", "not run"))
            return
        # Seeded sampling at temperature 1: varied tokens from a barely trained model (greedy repeats
        # one token), the same draws on both paths, so equal logits give equal tokens.
        params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=1234)
        cached = b.generate(PROMPT, params)
        api, b.api = b.api, replace(b.api, has_kv_cache=False)
        try:
            windowed = b.generate(PROMPT, params)
        finally:
            b.api = api
        self.rows.append(Row("cached vs uncached generation", f"seeded sampling at T=1: cached {cached} / "
                             f"uncached {windowed}",
                             "PASS" if cached == windowed else "FAIL"))

    def step_export(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from ttexp.models.hf import llama_config

        out = self.work / "export"
        out.mkdir()
        self.device.save_weights(out)
        llama_config(SPEC).save_pretrained(str(out))
        hf = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32, trust_remote_code=False)
        ids = list(range(60, 80))
        with torch.no_grad():
            want = hf(input_ids=torch.tensor([ids])).logits[0].numpy()
        got = device_logits(self.device, ids)
        delta, scale = float(np.abs(got - want).max()), float(np.abs(want).max())
        self.rows.append(Row("HF export logits", f"max abs delta {delta:.3g} (max abs logit {scale:.3g})",
                             "PASS" if delta <= LOGITS_RTOL * scale else "FAIL"))


def format_table(cfg: RunConfig, header: dict[str, str], rows: list[Row]) -> str:
    """The report: a few ``key: value`` lines, then a Markdown table (pastes into an issue)."""
    lines = [f"ttexp self-test (hardware={cfg.hardware.name}, mesh {list(cfg.hardware.mesh_shape)})"]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "| check | figure | verdict |", "|---|---|---|"]
    lines += [f"| {r.check} | {r.figure.replace('|', '/')} | {r.verdict} |" for r in rows]
    return "\n".join(lines)


def _header(device: Any) -> dict[str, str]:
    import torch

    from ttexp import __version__

    return {"backend": getattr(device, "device_name", "ttml"),
            "API generation": device.api.describe() if device is not None else "?",
            "host": f"torch {torch.__version__} on CPU, Python {platform.python_version()}",
            "ttexp": __version__,
            "model": f"{SPEC.num_layers} x {SPEC.hidden_dim}, {SPEC.num_heads} heads / "
                     f"{SPEC.num_kv_heads} KV, tied; {STEPS} steps at lr {LR:g}"}


def main(argv: list[str]) -> int:
    """Run the self-test for the config composed from ``argv``; print the table; the exit code."""
    try:
        cfg = compose_run_config(["backend=ttml", "training.weight_decay=0.0", *argv])
    except Exception as exc:  # Hydra's errors name the bad override
        print(f"[FAIL] config: {exc}")
        return EXIT_USAGE
    mesh = [int(n) for n in cfg.hardware.mesh_shape]
    ok, why = ttml_device_status(mesh)
    if not ok:
        print(f"No Tenstorrent device is present: {why}.\nThe self-test needs tt-train's ttml and a "
              f"device for mesh {mesh} (N150, N300, ...); nothing was run (exit {EXIT_NO_DEVICE}).")
        return EXIT_NO_DEVICE

    from ttexp.backends.base import OneProcess
    from ttexp.backends.factory import create_backend

    with tempfile.TemporaryDirectory(prefix="ttexp-selftest-") as tmp:
        test = SelfTest(cfg, Path(tmp), lambda: create_backend(cfg, "ttml", OneProcess()))
        rows = test.run()
        print(format_table(cfg, _header(test.device), rows))
    failed = [r for r in rows if r.verdict == "FAIL"]
    print(f"\n{len(failed)} check(s) failed." if failed else "\nEvery check passed.")
    return EXIT_FAILED if failed else EXIT_PASSED
