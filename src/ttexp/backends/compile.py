"""``training.compile``: true, false, or auto (compile when the run is long enough to repay it).

``auto`` runs the first steps eagerly, measures their time, and switches the model to
``torch.compile`` when the steps still to run would save more time than compiling costs::

    remaining_steps x step_s x GAIN[device] > COST_S[device] x load

where ``load`` = max(1, 1-minute load average / CPU count): on a shared machine the measured
steps are slowed by the other processes, and so is compiling (mostly single-threaded Python),
so without it a loaded machine would compile short runs.

The CPU figures come from reference/perf_anchors.md §5 (2-core EPYC, torch 2.13: Inductor gave
+16% on the nano step and cost 25-36 s of compile); they were not re-measured on the shared
2-core Xeon of issue 17, whose load made timings meaningless. Compiled kernels are cached across
runs under the user cache (:func:`enable_compile_cache`), so a repeat run compiles faster than
COST_S says. The CUDA figures are placeholders until a GPU run measures them (issue 17).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

from ttexp.config.values import compile_setting  # noqa: F401  (re-exported: the setting's parser)

GAIN: dict[str, float] = {"cpu": 0.15, "cuda": 0.30}
"""Fraction of the eager step time that ``torch.compile`` saves, per device type."""
COST_S: dict[str, float] = {"cpu": 35.0, "cuda": 60.0}
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


def worth_compiling(step_s: float, remaining_steps: int, device_type: str, load: float = 1.0) -> bool:
    """True when compiling now saves more time over ``remaining_steps`` than it costs.

    Args:
        step_s: measured eager seconds per optimizer step.
        remaining_steps: optimizer steps still to run in this process.
        device_type: 'cpu' or 'cuda' (other types never compile).
        load: :func:`load_factor` when the steps were measured (stretches the compile cost).
    """
    if device_type not in GAIN:
        return False
    return remaining_steps * step_s * GAIN[device_type] > COST_S[device_type] * load


def enable_compile_cache(cache_root: Path) -> Path:
    """Point Inductor's on-disk caches (FX graph and kernel caches) at ``cache_root/inductor``
    unless the user set ``TORCHINDUCTOR_CACHE_DIR``; returns the directory used. A second run
    of the same model shape then reuses the compiled kernels instead of compiling again."""
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not chosen:
        chosen = str(Path(cache_root) / "inductor")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = chosen
    return Path(chosen)


class AutoCompile:
    """Times the eager steps of a ``compile=auto`` run and says once whether to compile.

    Args:
        planned_steps: optimizer steps this process will run.
        device_type: 'cpu' or 'cuda'.
        clock: seconds clock (injectable for tests).
        load: the machine's load factor (:func:`load_factor`; injectable for tests).
    """

    def __init__(self, planned_steps: int, device_type: str, clock=time.perf_counter,
                 load=load_factor):
        self.planned_steps, self.device_type, self.clock = planned_steps, device_type, clock
        self.load = load
        self.steps = 0
        self._since: Optional[float] = None
        self.decided: Optional[bool] = None
        self.step_s: Optional[float] = None

    def step_done(self) -> bool:
        """Call after each optimizer step; True exactly once, when compiling is now worth it."""
        self.steps += 1
        if self.decided is not None:
            return False
        if self.steps == 1:  # the first step pays allocator and thread-pool warm-up
            self._since = self.clock()
            return False
        if self.steps < 1 + MEASURED_STEPS:
            return False
        self.step_s = (self.clock() - self._since) / MEASURED_STEPS
        self.decided = worth_compiling(self.step_s, self.planned_steps - self.steps,
                                       self.device_type, self.load())
        return self.decided
