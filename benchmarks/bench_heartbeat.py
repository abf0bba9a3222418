"""What the run-directory lease costs: one heartbeat write, and the lock's acquire + release.

    python benchmarks/bench_heartbeat.py [--n 2000]

Prints the mean and 95th percentile of one heartbeat (an atomic write of a ~80-byte JSON file,
the work the daemon thread does every HEARTBEAT_S seconds), and its share of a run's time at that
interval. Timings on a shared machine are noisy; compare the figures with each other, not with
another machine's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ttexp.record.liveness import HEARTBEAT_S, RunLease, liveness


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        lease = RunLease.acquire(Path(d))
        acquire_ms = (time.perf_counter() - t0) * 1e3
        beats = []
        for _ in range(n):
            t = time.perf_counter()
            lease.beat()
            beats.append(time.perf_counter() - t)
        checks = []
        for _ in range(n):
            t = time.perf_counter()
            liveness(Path(d), "running")
            checks.append(time.perf_counter() - t)
        lease.release()
    beats.sort()
    mean = statistics.mean(beats)
    print(f"lease acquire (lock, owner file, temp-file sweep, first beat): {acquire_ms:.2f} ms")
    print(f"heartbeat write: mean {mean * 1e6:.0f} us, p95 {beats[int(0.95 * n)] * 1e6:.0f} us "
          f"over {n}; every {HEARTBEAT_S:.0f} s that is {mean / HEARTBEAT_S:.2e} of the run's time")
    print(f"liveness check (a summary row): mean {statistics.mean(checks) * 1e6:.0f} us")


if __name__ == "__main__":
    main()
