"""``training.compile``: true, false, or auto (compile when the run is long enough to repay it).

What is compiled is the decoder layer, not the whole model ("regional compilation", the
torch.compile tutorial of that name): every layer of a Llama runs the same code, so Dynamo and
Inductor compile one layer's graph once and every layer reuses it. That cuts the cold compile
several-fold against compiling the whole model, and keeps most of its speed: the elementwise work
that eager mode spends most of its non-matmul time on (RMSNorm, RoPE, SwiGLU) lives in the layers.

``auto`` runs the first steps eagerly, measures their time, and switches the model to
``torch.compile`` when the steps still to run would save more time than compiling costs::

    remaining_steps x step_s x gain > cost x load

where ``load`` = max(1, 1-minute load average / CPU count): on a shared machine the measured
steps are slowed by the other processes, and so is compiling (mostly single-threaded Python),
so without it a loaded machine would compile short runs. ``gain`` and ``cost`` are what this
machine measured for the same shape before (:class:`CompileCosts`), else GAIN and COST_S.

The CPU defaults were measured on a 2-core Xeon (AVX-512 BF16/AMX, torch 2.13, idle), nano at
16 x 512 in fp32 with ``python -m ttexp.bench``: compiling the layers took the step from 1.59 s
to 1.40 s (12% saved) and the cold compile cost about 20 s; with a warm cache the whole bench
took no longer than the eager one. Compiled kernels are cached across runs under the user cache
(:func:`enable_compile_cache`). The CUDA figures are placeholders until a GPU run measures them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

from ttexp.config.values import compile_setting  # noqa: F401  (re-exported: the setting's parser)
from ttexp.files import read_json_dict, write_json_atomic

GAIN: dict[str, float] = {"cpu": 0.12, "cuda": 0.30}
"""Fraction of the eager step time that ``torch.compile`` saves, per device type."""
COST_S: dict[str, float] = {"cpu": 20.0, "cuda": 60.0}
"""Seconds the first compiled step costs over an eager one (cold Inductor cache), per device type."""
MEASURED_STEPS = 3
"""Eager steps timed before ``auto`` decides (the first step of a run is warm-up and not timed)."""


def load_factor() -> float:
    """max(1, 1-minute load average / CPU count): how much longer than on an idle machine a
    CPU-bound job takes now (1.0 where the load average is unavailable)."""
    try:
        return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    except (OSError, AttributeError):
        return 1.0


def worth_compiling(step_s: float, remaining_steps: int, device_type: str, load: float = 1.0,
                    cost_s: Optional[float] = None, gain: Optional[float] = None) -> bool:
    """True when compiling now saves more time over ``remaining_steps`` than it costs.

    Args:
        step_s: measured eager seconds per optimizer step.
        remaining_steps: optimizer steps still to run in this process.
        device_type: 'cpu' or 'cuda' (other types never compile).
        load: :func:`load_factor` when the steps were measured (stretches the compile cost).
        cost_s: the compile cost measured for this shape before (:class:`CompileCosts`);
            :data:`COST_S` when None.
        gain: the fraction of the step time compiling saved for this shape before;
            :data:`GAIN` when None.
    """
    if device_type not in GAIN:
        return False
    cost = COST_S[device_type] if cost_s is None else cost_s
    saved = GAIN[device_type] if gain is None else gain
    return remaining_steps * step_s * saved > cost * load


def enable_compile_cache(cache_root: Path) -> Path:
    """Point Inductor's on-disk caches (FX graph and kernel caches) at ``cache_root/inductor``
    unless the user set ``TORCHINDUCTOR_CACHE_DIR``; returns the directory used. A second run
    of the same model shape then reuses the compiled kernels instead of compiling again."""
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not chosen:
        chosen = str(Path(cache_root) / "inductor")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = chosen
    return Path(chosen)


def decoder_layers(model: Any) -> list[Any]:
    """The repeated blocks of ``model``: the modules of its first ``ModuleList`` named ``layers``
    (transformers' ``model.model.layers``, also under a PEFT wrapper); [] when it has none."""
    import torch

    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] == "layers" and isinstance(module, torch.nn.ModuleList):
            return list(module)
    return []


def compile_regions(model: Any) -> Any:
    """Compile ``model`` for training and return what to call for the forward pass.

    Each decoder layer is compiled in place (``nn.Module.compile``); the model itself is returned,
    so its embedding, final norm, head and loss stay eager. A model without ``layers`` is compiled
    whole (``torch.compile(model)``).
    """
    import torch

    layers = decoder_layers(model)
    if not layers:
        return torch.compile(model)
    for layer in layers:
        layer.compile()
    return model


class CompileCosts:
    """What compiling a shape cost and saved on this machine before, so ``auto`` weighs measured
    figures: a warm Inductor cache makes a repeat far cheaper than :data:`COST_S`, and at some
    shapes compiling saves nothing (a 4 x 128 model on 768-token steps: its step time is Python
    and dispatch overhead that the compiled layer keeps), where :data:`GAIN` would be wrong.

    Stored as JSON at ``<cache>/compile_costs.json``: {key: {"cost_s": s, "gain": fraction}}, the
    key naming the model shape, batch, precision, device type, torch version and thread count
    (:func:`cost_key`). A missing or unreadable file means no measurement (never an error).
    """

    def __init__(self, path: Path):
        self.path = path

    def get(self, key: str) -> dict[str, float]:
        """The figures measured for ``key``: 'cost_s' (seconds) and 'gain' (fraction of the
        eager step time saved), each present only when measured; {} when none."""
        entry = read_json_dict(self.path).get(key)
        if not isinstance(entry, dict):
            return {}
        return {k: float(v) for k, v in entry.items()
                if k in ("cost_s", "gain") and isinstance(v, (int, float))}

    def put(self, key: str, **figures: float) -> None:
        """Record ``cost_s=`` and/or ``gain=`` for ``key`` (atomic replace; a failure to write
        is ignored: the run goes on with what it measured)."""
        table = read_json_dict(self.path)
        entry = table.get(key) if isinstance(table.get(key), dict) else {}
        entry.update({k: round(float(v), 3) for k, v in figures.items()})
        table[key] = entry
        try:
            write_json_atomic(self.path, table)
        except OSError:
            pass


def cost_key(config: Any, batch_shape: tuple, precision: str, lora: bool, checkpointing: bool,
             device_type: str) -> str:
    """The :class:`CompileCosts` key: what a compile's cost depends on. ``config`` is the
    transformers model config (its shape), ``batch_shape`` the micro-batch (rows, tokens); then
    precision, LoRA, activation checkpointing, device type and model (the CPU's, or the first
    GPU's name), torch version and intra-op threads."""
    import torch

    from ttexp.backends.detect import cpu_model

    c = config
    hardware = torch.cuda.get_device_name() if device_type == "cuda" else cpu_model()
    return (f"{c.hidden_size}x{c.num_hidden_layers} heads {c.num_attention_heads}/"
            f"{c.num_key_value_heads} mlp {c.intermediate_size} vocab {c.vocab_size} "
            f"batch {'x'.join(str(n) for n in batch_shape)} {precision}"
            f"{' lora' if lora else ''}{' checkpointing' if checkpointing else ''}"
            f"|{device_type} {hardware}|torch {torch.__version__}|{torch.get_num_threads()} threads")


class AutoCompile:
    """Times the eager steps of a ``compile=auto`` run and says once whether to compile.

    After it decides to compile it goes on timing: the first compiled step's excess over the
    eager step time is the compile cost, and the next :data:`MEASURED_STEPS` compiled steps give
    the gain (1 - compiled / eager step time); both are stored in ``costs`` under ``key``, so
    the next run of this shape weighs what this machine measured instead of COST_S and GAIN.

    Args:
        planned_steps: optimizer steps this process will run (:meth:`expect_steps` corrects it
            once a resume says where the run starts).
        device_type: 'cpu' or 'cuda'.
        clock: seconds clock (injectable for tests).
        load: the machine's load factor (:func:`load_factor`; injectable for tests).
        costs: measured figures (None: always :data:`COST_S` and :data:`GAIN`).
        key: this run's :func:`cost_key` (set before the decision; the torch backend sets it
            at the first micro-step, when the batch shape is known).
    """

    def __init__(self, planned_steps: int, device_type: str, clock=time.perf_counter,
                 load=load_factor, costs: Optional[CompileCosts] = None, key: str = ""):
        self.planned_steps, self.device_type, self.clock = planned_steps, device_type, clock
        self.load, self.costs, self.key = load, costs, key
        self.steps = 0
        self._since: Optional[float] = None
        self._compiled_steps = 0
        self.decided: Optional[bool] = None
        self.step_s: Optional[float] = None
        """Eager seconds per step, once decided."""
        self.cost_s: Optional[float] = None
        """The compile cost weighed (measured before, else COST_S), once decided."""
        self.gain: Optional[float] = None
        """The gain weighed (measured before, else GAIN), once decided."""
        self.cost_source = "expected"
        """'measured for this shape before' or 'expected' (COST_S and GAIN), once decided."""
        self.measured_cost_s: Optional[float] = None
        """This run's compile cost, once the first compiled step has run."""
        self.measured_gain: Optional[float] = None
        """This run's gain, once MEASURED_STEPS compiled steps after that have run."""

    def expect_steps(self, remaining: int) -> None:
        """Say how many optimizer steps this process will actually run (a resumed run starts
        part-way, so fewer than ``planned_steps``); only before the decision."""
        if self.decided is None:
            self.planned_steps = self.steps + max(0, int(remaining))

    def _record(self, **figures: float) -> None:
        if self.costs is not None and self.key:
            self.costs.put(self.key, **figures)

    def _after_compiling(self) -> None:
        """Time the compiled steps: the first gives the cost, the next MEASURED_STEPS the gain."""
        now = self.clock()
        self._compiled_steps += 1
        if self._compiled_steps == 1:
            self.measured_cost_s = max(0.0, now - self._since - self.step_s)
            self._record(cost_s=self.measured_cost_s)
            self._since = now
        elif self._compiled_steps == 1 + MEASURED_STEPS:
            compiled_s = (now - self._since) / MEASURED_STEPS
            self.measured_gain = 1.0 - compiled_s / self.step_s
            self._record(gain=self.measured_gain)

    @property
    def pending(self) -> bool:
        """True until the decision, and after a decision to compile until the compiled steps
        that give this run's gain have been timed."""
        return self.decided is None or (self.decided and self.measured_gain is None)

    def step_done(self) -> bool:
        """Call after each optimizer step; True exactly once, when compiling is now worth it."""
        self.steps += 1
        if self.decided is not None:
            if self.decided and self.measured_gain is None:
                self._after_compiling()
            return False
        if self.steps == 1:  # the first step pays allocator and thread-pool warm-up
            self._since = self.clock()
            return False
        if self.steps < 1 + MEASURED_STEPS:
            return False
        now = self.clock()
        self.step_s = (now - self._since) / MEASURED_STEPS
        known = self.costs.get(self.key) if self.costs is not None and self.key else {}
        self.cost_s = known.get("cost_s", COST_S.get(self.device_type))
        self.gain = known.get("gain", GAIN.get(self.device_type))
        if known:
            self.cost_source = "measured for this shape before"
        self.decided = worth_compiling(self.step_s, self.planned_steps - self.steps,
                                       self.device_type, self.load(), cost_s=known.get("cost_s"),
                                       gain=known.get("gain"))
        self._since = now  # the next step is the first compiled one: it times the compile
        return self.decided
