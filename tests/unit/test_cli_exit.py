"""``ttexp.__main__.exit_now``: the CLI skips the interpreter's teardown, but never what a normal
exit would have done first (atexit hooks, buffered output, exit code, a live non-daemon thread)."""

import subprocess
import sys

PROGRAM = """
import atexit, sys, threading, time
from ttexp.__main__ import exit_now
atexit.register(lambda: print("hook ran", flush=True))
if sys.argv[1] == "thread":
    threading.Thread(target=lambda: (time.sleep(0.3), print("thread done", flush=True))).start()
print("buffered", end="")  # no newline, no flush: must still come out
exit_now(int(sys.argv[2]))
print(" returned", end="")
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROGRAM, *args], capture_output=True, text=True,
                          timeout=60)


def test_exit_now_runs_the_atexit_hooks_flushes_and_keeps_the_exit_code():
    proc = _run("plain", "3")
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "bufferedhook ran\n"


def test_exit_now_leaves_the_normal_exit_to_python_while_a_thread_still_works():
    proc = _run("thread", "0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("buffered returned") and "thread done" in proc.stdout
    assert proc.stdout.rstrip().endswith("hook ran")
