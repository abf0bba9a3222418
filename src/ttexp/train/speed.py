"""Speed against the hardware: peak FLOP/s per device, MFU, and peak memory.

Convention (reference/perf_anchors.md §6): training FLOPs per token = 6N + 12·L·d·T
(:func:`ttexp.models.spec.flops_per_token`); MFU = tokens/s × FLOPs per token ÷ peak FLOP/s of
the devices the run uses. Peaks are dense bf16 (torchtitan's table for NVIDIA; Tenstorrent's
datasheets for Wormhole, HiFi4, the fidelity tt-train trains at). A CPU has no datasheet peak
that a framework can reach, so ttexp measures one: the best bf16 (or fp32) matmul rate of this
machine with torch's thread setting, measured once and cached per CPU, torch version, threads and
dtype.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ttexp.backends.detect import cpu_model
from ttexp.data.corpus import cache_dir as default_cache
from ttexp.files import read_json_dict, write_text_atomic

PEAK_FLOPS: dict[str, float] = {
    "H100": 989e12,  # SXM, dense bf16 (torchtitan get_peak_flops)
    "H200": 989e12,  # same GH100 compute as H100
    "A100": 312e12,
    "n150": 74e12,  # Wormhole n150: 72 Tensix cores, FP16/BF16 HiFi4 (datasheet)
    "n300": 131e12,  # Wormhole n300: both chips
    "t3k": 4 * 131e12,  # four n300 cards
    "galaxy": 32 * 74e12,  # 32 Wormhole chips (per-chip n150 figure)
}
"""Dense bf16 peak FLOP/s of each accelerator, or of the whole mesh for Tenstorrent presets."""


def gpu_peak_flops(device_name: str) -> Optional[float]:
    """Peak FLOP/s of a CUDA device from its name (e.g. 'NVIDIA H100 80GB HBM3'); None if unknown."""
    for key in ("H200", "H100", "A100"):
        if key in device_name:
            return PEAK_FLOPS[key]
    return None


def measure_cpu_matmul_peak(dtype_name: str = "bf16", size: int = 1024, seconds: float = 1.5) -> float:
    """Best square-matmul rate of this CPU in FLOP/s (2·n³ per product), over ~``seconds``."""
    import torch

    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)  # warm-up: thread pool, kernels
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        tick = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - tick))
    return best


PEAK_MAX_AGE_S = 7 * 24 * 3600
"""A cached CPU peak older than a week is measured again (a machine's load and firmware change)."""


@dataclass
class CpuPeak:
    """A measured CPU matmul peak and where it came from.

    Attributes:
        flops: FLOP/s.
        measured_at: Unix time of the measurement.
        cached: True when read from the cache rather than measured by this call.
    """

    flops: float
    measured_at: float
    cached: bool

    def describe(self, dtype_name: str) -> str:
        """'measured CPU bf16 matmul peak, 3 h old (cache)' or '..., measured now'."""
        if not self.cached:
            return f"measured CPU {dtype_name} matmul peak, measured now"
        return f"measured CPU {dtype_name} matmul peak, {_age(time.time() - self.measured_at)} old (cache)"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{max(0.0, seconds):.0f} s"


def _peak_key(dtype_name: str) -> str:
    import torch

    return f"{cpu_model()}|torch {torch.__version__}|{torch.get_num_threads()} threads|{dtype_name}"


def _peak_cache(cache_dir: Optional[Path]) -> tuple[Path, dict[str, Any]]:
    path = (cache_dir or default_cache()) / "cpu_peak_flops.json"
    return path, read_json_dict(path)


def _write_peak_cache(path: Path, cached: dict[str, Any]) -> None:
    try:
        write_text_atomic(path, json.dumps(cached, indent=2))
    except OSError:
        pass  # a read-only home only costs a re-measurement next time


def cpu_peak(dtype_name: str, cache_dir: Optional[Path] = None) -> CpuPeak:
    """This CPU's measured matmul peak for ``dtype_name`` ('bf16' or 'fp32'), cached on disk
    (``~/.cache/ttexp/cpu_peak_flops.json``).

    The cache key is the CPU model, torch version, thread count and dtype, so a new machine, a
    torch upgrade or a different thread setting measures again (about 2 s). A cached figure older
    than :data:`PEAK_MAX_AGE_S`, or one a run has since beaten (:func:`note_achieved_flops`), is
    measured again too.
    """
    path, cached = _peak_cache(cache_dir)
    entry = cached.get(_peak_key(dtype_name))
    if isinstance(entry, dict) and time.time() - float(entry.get("measured_at", 0)) < PEAK_MAX_AGE_S:
        return CpuPeak(float(entry["flops"]), float(entry["measured_at"]), cached=True)
    peak = CpuPeak(measure_cpu_matmul_peak(dtype_name), time.time(), cached=False)
    cached[_peak_key(dtype_name)] = {"flops": peak.flops, "measured_at": peak.measured_at}
    _write_peak_cache(path, cached)
    return peak


def cpu_peak_flops(dtype_name: str, cache_dir: Optional[Path] = None) -> float:
    """The FLOP/s of :func:`cpu_peak`."""
    return cpu_peak(dtype_name, cache_dir).flops


def note_achieved_flops(dtype_name: str, achieved: float, cache_dir: Optional[Path] = None) -> bool:
    """Tell the cache what a run achieved on this CPU. A cached peak below it was measured under
    load; it is dropped, so the next run measures again. Returns True when it was dropped."""
    path, cached = _peak_cache(cache_dir)
    entry = cached.get(_peak_key(dtype_name))
    if isinstance(entry, dict) and achieved > float(entry.get("flops", 0)):
        del cached[_peak_key(dtype_name)]
        _write_peak_cache(path, cached)
        return True
    return False


def peak_flops_for(backend: str, hardware: str, device_name: str, precision: str,
                   processes: int = 1) -> tuple[Optional[float], str]:
    """(peak FLOP/s of everything the run uses, where the figure comes from)."""
    if backend == "ttml":
        peak = PEAK_FLOPS.get(hardware)
        return peak, f"{hardware} datasheet bf16" if peak else f"no peak known for {hardware}"
    if device_name.startswith("cuda"):
        peak = gpu_peak_flops(device_name)
        if peak is None:
            return None, f"no peak known for {device_name}"
        return peak * processes, f"{processes} x datasheet bf16"
    dtype = "bf16" if "bf16" in precision else "fp32"
    # The measured peak is the whole machine's (all cores); ranks share it, so it is not scaled.
    peak = cpu_peak(dtype)
    return peak.flops, peak.describe(dtype)


def reset_peak_memory(device_name: str) -> None:
    """Start counting peak CUDA memory afresh (runs of a sweep share one process). The CPU's
    peak resident set cannot be reset: it stays the process's peak."""
    if device_name.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_memory_bytes(device_name: str) -> int:
    """Peak memory: the CUDA allocator's peak since :func:`reset_peak_memory` on a GPU, else the
    peak resident set of the whole process (on CPU a sweep's later jobs inherit earlier peaks)."""
    if device_name.startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def mfu(tokens_per_s: float, flops_per_token: float, peak: Optional[float]) -> Optional[float]:
    """Model FLOPs utilisation: achieved training FLOP/s over the peak of the devices used.

    Args:
        tokens_per_s: training tokens per second (all ranks).
        flops_per_token: training FLOPs per token (:func:`ttexp.models.spec.flops_per_token`).
        peak: peak FLOP/s of everything the run uses (:func:`peak_flops_for`); None or 0 = unknown.

    Returns:
        A fraction (0.35 = 35 %), or None when the peak is unknown.
    """
    return tokens_per_s * flops_per_token / peak if peak else None


def speed_figures(tokens_per_s: float, flops_per_token: int, peak: Optional[float]) -> dict[str, Any]:
    """Achieved FLOP/s and :func:`mfu` (a fraction, None without a peak) for a token rate."""
    return {"achieved_flops_per_s": tokens_per_s * flops_per_token,
            "mfu": mfu(tokens_per_s, flops_per_token, peak)}
