"""Liveness of a run directory: one holder at a time (an exclusive lock), a heartbeat while it
lives, and the verdict ``lost`` for a record whose writer died without closing it.

    lease = RunLease.acquire(run_dir)     # refused (RunDirBusy) while another process holds it
    ...                                   # heartbeat.json is rewritten every HEARTBEAT_S seconds
    lease.release()

Files in the run directory: ``.ttexp.lock`` (the lock, via ``filelock``: an OS ``flock`` that the
kernel drops when its holder dies, even by SIGKILL), ``.ttexp.owner.json`` (the holder's pid and
host, for the refusal message), ``.ttexp.rank<N>.lock`` (held by each rank of a multi-process run,
so no new run starts while an old rank still writes here) and ``heartbeat.json`` (pid, host, time,
written atomically by a daemon thread).

A record whose ``status`` is ``running`` is ``lost`` when its heartbeat is older than
:data:`STALE_S`, or its pid is gone on this host (:func:`liveness`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from filelock import FileLock, Timeout

from ttexp.errors import RunDirBusy
from ttexp.files import write_json_atomic
from ttexp.record.result import RunResult, timestamp

LOCK_NAME = ".ttexp.lock"
OWNER_NAME = ".ttexp.owner.json"
HEARTBEAT_NAME = "heartbeat.json"
HEARTBEAT_S = 5.0
"""Seconds between heartbeats. One beat is a small atomic file write on a daemon thread: 3.9 ms
mean on this project's busy 2-core machine (benchmarks/bench_heartbeat.py), 0.08% of a run."""
STALE_S = 60.0
"""A heartbeat older than this (12 missed beats) means the writer is gone; generous because a
heavily loaded machine can stall a thread for seconds, never for a minute."""
TEMP_PATTERNS = (".tmp-*", ".old-*", ".*.tmp")
"""Names of half-done atomic writes (:mod:`ttexp.files`, the checkpoint's ``best`` link)."""


def rank_lock_path(run_dir: Path, rank: int) -> Path:
    """The lock file rank ``rank`` of a multi-process run holds while it lives."""
    return Path(run_dir) / f".ttexp.rank{rank}.lock"


def _owner() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}


def _holder_text(path: Path) -> str:
    try:
        o = json.loads(path.read_text())
        return f"pid {o['pid']} on host {o['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (pid unknown)"


def _try_lock(path: Path) -> Optional[FileLock]:
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return None
    return lock


def hold_rank_lock(run_dir: Path, rank: int) -> FileLock:
    """Take rank ``rank``'s lock for the life of this process (it is dropped when the process
    dies) and record this pid and host beside it.

    Raises:
        RunDirBusy: an older rank ``rank`` still holds ``run_dir``.
    """
    path = rank_lock_path(run_dir, rank)
    lock = _try_lock(path)
    if lock is None:
        raise RunDirBusy(f"{run_dir} is still used by rank {rank} of an earlier run "
                         f"({_holder_text(path.with_suffix('.json'))}).")
    write_json_atomic(path.with_suffix(".json"), _owner())
    return lock


def _take(run_dir: Path) -> FileLock:
    """Lock ``run_dir``; refuse while another process, or a rank of an earlier run, holds it."""
    lock = _try_lock(run_dir / LOCK_NAME)
    if lock is None:
        raise RunDirBusy(f"{run_dir} is in use by another run ({_holder_text(run_dir / OWNER_NAME)})."
                         " Wait for it to end, or choose another directory with hydra.run.dir=DIR.")
    for rank_lock in sorted(run_dir.glob(".ttexp.rank*.lock")):
        probe = _try_lock(rank_lock)
        if probe is None:
            lock.release()
            raise RunDirBusy(f"{run_dir} is still used by a rank of an earlier run "
                             f"({_holder_text(rank_lock.with_suffix('.json'))}); it stops within "
                             "seconds of its controller. Try again shortly.")
        probe.release()
    return lock


def busy_message(run_dir: Path) -> Optional[str]:
    """Why ``run_dir`` cannot be used now (held by a live run or rank), or None; takes nothing
    and creates nothing (Hydra's callback asks before it writes ``.hydra/``)."""
    if not Path(run_dir).is_dir():
        return None
    try:
        _take(Path(run_dir)).release()
    except RunDirBusy as exc:
        return str(exc)
    return None


class RunLease:
    """This process's exclusive hold on a run directory, with its heartbeat thread."""

    def __init__(self, run_dir: Path, lock: FileLock):
        self.dir, self._lock = Path(run_dir), lock
        self._stop = threading.Event()
        self.beat()
        self._thread = threading.Thread(target=self._beat_loop, name="ttexp-heartbeat", daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls, run_dir: Path) -> "RunLease":
        """Lock ``run_dir`` (created if missing), check no rank of an earlier run still holds it,
        remove the temporary files of interrupted writes, and start the heartbeat.

        Raises:
            RunDirBusy: another process holds the directory (its pid and host are named); nothing
                in the directory was touched.
        """
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = _take(run_dir)
        write_json_atomic(run_dir / OWNER_NAME, _owner())
        clean_temporary_files(run_dir)
        return cls(run_dir, lock)

    def beat(self) -> None:
        """Write heartbeat.json now: pid, host, unix time (seconds)."""
        write_json_atomic(self.dir / HEARTBEAT_NAME, {"pid": os.getpid(), "host": socket.gethostname(),
                                                      "time": time.time()})

    def _beat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.beat()
            except OSError:  # a full disk: the run reports its own write errors
                pass

    def release(self) -> None:
        """Stop the heartbeat (the record's status is final now) and unlock the directory."""
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_S)
        self._lock.release()


def clean_temporary_files(run_dir: Path) -> list[Path]:
    """Remove what interrupted atomic writes left in ``run_dir`` and ``run_dir/checkpoints``
    (only call while holding the directory's lock). Returns the paths removed."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        for pattern in TEMP_PATTERNS:
            for path in folder.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
    return removed


@dataclass
class Liveness:
    """The status a reader should show, and why (empty for a record that speaks for itself)."""

    status: str
    reason: str = ""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host lives (a zombie counts as dead; another user's as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    try:  # a zombie (killed, not yet reaped) is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def liveness(run_dir: Path, status: str, now: Optional[float] = None,
             stale_s: float = STALE_S) -> Liveness:
    """``lost`` for a ``running`` record whose writer is gone, else ``status`` unchanged.

    Gone = heartbeat.json older than ``stale_s`` seconds, or its pid dead on this same host, or
    (a record from before heartbeats) no heartbeat and result.json untouched for ``stale_s``.
    """
    if status != "running":
        return Liveness(status)
    now = time.time() if now is None else now
    try:
        beat = json.loads((Path(run_dir) / HEARTBEAT_NAME).read_text())
        last, pid, host = float(beat["time"]), int(beat["pid"]), str(beat["host"])
    except (OSError, ValueError, KeyError, TypeError):
        try:
            last, pid, host = (Path(run_dir) / "result.json").stat().st_mtime, 0, ""
        except OSError:
            return Liveness(status)
    if host == socket.gethostname() and pid and not pid_alive(pid):
        return Liveness("lost", f"its process (pid {pid} on {host}) is gone")
    if now - last > stale_s:
        return Liveness("lost", f"no heartbeat for {now - last:.0f} s (threshold {stale_s:.0f} s)")
    return Liveness(status)


def last_logged_step(run_dir: Path) -> Optional[int]:
    """The step of the last complete line of ``metrics.jsonl``; None when nothing was logged."""
    try:
        lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by the kill
    return None


def last_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest complete checkpoint (``checkpoints/step_N`` with its manifest, written last)."""
    done = [(int(p.parent.name[5:]), p.parent) for p in (Path(run_dir) / "checkpoints").glob(
        "step_*/manifest.json") if p.parent.name[5:].isdigit()]
    return max(done)[1] if done else None


def last_state(run_dir: Path) -> str:
    """"last logged step S, last checkpoint PATH": where a lost run stopped and can resume from."""
    ckpt = last_checkpoint(run_dir)
    step = last_logged_step(run_dir)
    return (f"last logged step {step if step is not None else 'none'}, last checkpoint "
            f"{ckpt.name if ckpt else 'none (a resume starts over)'}")


def record_orphaned(run_dir: Path, supervisor_pid: int) -> bool:
    """Close a ``running`` record as ``lost`` because the process supervising it died.

    Called by a sweep job's training process (``python -m ttexp.worker``) at its supervisor's
    death, just before it stops itself (:func:`ttexp.train.launch.die_with_parent`). Only the
    job whose own joblib worker was killed gets here: loky kills the other workers' process trees
    children first, so their training processes never see their supervisor die. The sweep's
    launcher (:mod:`ttexp.sweeps.joblib_launcher`) reads this to tell that job, which stays lost,
    from the others, which it re-dispatches. Returns whether the record was closed (False when
    it is missing or already final).
    """
    result = RunResult.read(run_dir)
    if result is None or result.status != "running":
        return False
    result.update(status="lost", ended_at=timestamp(), error=(
        f"Its supervising process (pid {supervisor_pid}, the sweep's joblib worker) was killed, "
        f"and its training stopped with it: {last_state(run_dir)}. The sweep's other jobs went on; "
        "continue this one with the sweep's sweep.resume=true command (in experiments.md)."))
    result.write(run_dir)
    return True
