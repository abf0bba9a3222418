"""Device leases for sweep.pin_devices: no two live jobs ever share a device, whatever order jobs
finish in (the old rule, job k on device k mod N, put jobs 0 and 2 together when job 1 finished
first)."""

from __future__ import annotations

import threading
import time

from ttexp.sweeps.sweep import lease_device


def test_jobs_finishing_out_of_order_never_share_a_device(tmp_path):
    # 2 fake devices, 6 jobs as threads (each its own lock object: the OS lock is per open file,
    # so threads contend exactly like processes). Job 0 is slow, job 1 fast: with k mod 2, job 2
    # would join job 0 on device 0 while device 1 sat idle.
    durations = [0.6, 0.05, 0.3, 0.05, 0.2, 0.0]
    spans: list[tuple[int, int, float, float]] = []
    guard = threading.Lock()

    def job(j: int) -> None:
        k, lease = lease_device(tmp_path, 2, poll_s=0.01)
        start = time.monotonic()
        time.sleep(durations[j])
        end = time.monotonic()
        lease.release()
        with guard:
            spans.append((j, k, start, end))

    threads = []
    for j in range(len(durations)):
        threads.append(threading.Thread(target=job, args=(j,)))
        threads[-1].start()
        time.sleep(0.02)  # jobs start in order, as a launcher dispatches them
    for t in threads:
        t.join(timeout=10)
    assert len(spans) == len(durations)
    for a in spans:
        for b in spans:
            if a[0] < b[0] and a[1] == b[1]:
                assert a[3] <= b[2] or b[3] <= a[2], f"jobs {a[0]} and {b[0]} shared device {a[1]}"
    device_of = {j: k for j, k, _, _ in spans}
    assert device_of[0] == 0 and device_of[1] == 1
    assert device_of[2] == 1  # job 1 finished first: job 2 got its device, not 2 mod 2 = 0
