"""``python -m ttexp.bench --startup [--runs N] [--python PY ...] [--floor] [--breakdown] [overrides ...]``

Times the start-up of a real run: ``python -m ttexp debug=fast [overrides]`` in a fresh process,
``--runs`` times, from just before the process is spawned to the moment its ``Step 1/`` line
arrives on the console (what a user waits for), and to its exit. Each run writes into its own
temporary directory (``hydra.run.dir``), outside ``outputs/``, so the journal is untouched.

    python -m ttexp.bench --startup data.path=/path/to/tinyshakespeare.txt
    python -m ttexp.bench --startup --python /other/venv/bin/python --python .venv/bin/python
    python -m ttexp.bench --startup --breakdown          # where the time goes

With several ``--python`` interpreters (each runs the ttexp installed in its own environment, e.g.
an old checkout against a new one), the runs are interleaved, one of each per round, so load from
other processes on a shared machine falls on all alike; compare the medians.

``--floor`` also times, the same way and interleaved, a process that only imports what the torch
path cannot start without (``torch`` and ``transformers``' Llama, :data:`FLOOR_IMPORTS`): the
difference to the run is ttexp's (and Hydra's) own share of the start-up.

``--breakdown`` adds two runs stopped right after the first optimizer step: one that marks when
each stage starts and ends on the real clock (Hydra's compositions, torch's and transformers'
imports, the runner, the config, the model, the step), and one under ``python -X importtime``
(import time summed by top-level package).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

FIRST_STEP = re.compile(r"^Step 1/\d+ \|")
"""The console line of the first optimizer step (:mod:`ttexp.train.progress`)."""

DEFAULT_OVERRIDES = ["debug=fast", "training.log_frequency=1"]
"""Before the user's overrides: a tiny run that logs its first step."""

FLOOR_IMPORTS = "import torch, transformers.models.llama.modeling_llama"
"""What a torch-path run cannot start without: the floor under its start-up (``--floor``)."""

# Runs ``python -m ttexp ARGS`` in this process (argv: OUT ARGS) and exits right after the first
# optimizer step, writing to OUT (unless "-") the seconds since it started at which each stage of
# the start-up began (">") and ended ("<"). It patches functions as their modules are first
# imported (an import hook), so the run imports in its own order. A string, not a module: it
# runs under any interpreter's ttexp (--python), also a checkout without this file.
_DRIVER = r"""
import importlib.abc, json, os, runpy, sys, time
T0 = time.perf_counter()
out = sys.argv[1]
sys.argv = [sys.argv[0]] + sys.argv[2:]
marks = []
def mark(label):
    marks.append((label, time.perf_counter() - T0))
def finish():
    if out != "-":
        with open(out, "w") as f:
            json.dump(marks, f)
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(0)
def wrap(owner, attr, label, last=False):
    fn = getattr(owner, attr)
    def timed(*args, **kwargs):
        mark(label + " >")
        try:
            return fn(*args, **kwargs)
        finally:
            mark(label + " <")
            if last:
                finish()
    setattr(owner, attr, timed)
PATCHES = {
    "torch": lambda m: mark("import torch <"),
    "ttexp.runner": lambda m: (mark("import ttexp.runner <"), wrap(m, "run", "runner.run"),
                               wrap(m, "prepare", "resolve, validate, write the config")),
    "transformers.models.llama.modeling_llama": lambda m: mark("import transformers' Llama <"),
    "hydra._internal.hydra": lambda m: wrap(m.Hydra, "compose_config", "Hydra composes"),
    "ttexp.backends.torch_backend": lambda m: wrap(m.TorchBackend, "build_model", "build the model"),
    "ttexp.train.loop": lambda m: wrap(m.TrainingLoop, "train_step", "first step", last=True),
}
class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in PATCHES:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        load = spec.loader.exec_module
        def exec_module(module):
            load(module)
            PATCHES[name](module)
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, Hook())
mark("python started <")
runpy.run_module("ttexp", run_name="__main__", alter_sys=True)
"""


def time_one_run(python: str, args: list[str], run_dir: Path, timeout: float = 300.0) -> dict[str, Any]:
    """Spawn ``python -m ttexp ARGS hydra.run.dir=RUN_DIR`` and time it.

    Returns:
        ``{"first_step_s", "exit_s", "returncode", "error"}``: seconds from just before the spawn
        to the arrival of the first ``Step 1/`` console line (None when none came) and to the
        exit; the exit status; for a failed run, its last ``ERROR:`` line (else its last line).

    Raises:
        subprocess.TimeoutExpired: the run took longer than ``timeout`` seconds.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [python, "-m", "ttexp", *args, f"hydra.run.dir={run_dir}"]
    first_step: float | None = None
    last = error = ""
    start = time.perf_counter()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if first_step is None and FIRST_STEP.match(line):
                first_step = time.perf_counter() - start
            if line.strip():
                last = line.strip()
                error = last if last.startswith("ERROR") else error
        code = proc.wait(timeout=timeout)
    return {"first_step_s": first_step, "exit_s": time.perf_counter() - start, "returncode": code,
            "error": (error or last) if code else ""}


def time_floor(python: str) -> dict[str, Any]:
    """Spawn ``python -c FLOOR_IMPORTS`` and time it to its exit (the same keys as
    :func:`time_one_run`; ``first_step_s`` is the exit time, the floor under a first step)."""
    start = time.perf_counter()
    code = subprocess.run([python, "-c", FLOOR_IMPORTS], check=False).returncode
    elapsed = time.perf_counter() - start
    return {"first_step_s": elapsed, "exit_s": elapsed, "returncode": code}


def time_startup(pythons: list[str], args: list[str], runs: int, floor: bool = False
                 ) -> dict[str, list[dict[str, Any]]]:
    """``runs`` timed runs of each interpreter (and of the floor, with ``floor``, under the key
    ``"floor: PYTHON"``), interleaved: one of each per round."""
    results: dict[str, list[dict[str, Any]]] = {py: [] for py in pythons}
    if floor:
        results[f"floor: {pythons[-1]}"] = []
    with tempfile.TemporaryDirectory(prefix="ttexp-startup-") as tmp:
        for i in range(runs):
            for k, py in enumerate(pythons):
                results[py].append(time_one_run(py, args, Path(tmp) / f"r{i}-{k}"))
            if floor:
                results[f"floor: {pythons[-1]}"].append(time_floor(pythons[-1]))
    return results


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max of the first-step and exit times of one interpreter's runs."""
    steps = [r["first_step_s"] for r in rows if r["first_step_s"] is not None]
    exits = [r["exit_s"] for r in rows]
    out: dict[str, Any] = {"runs": len(rows), "failed": sum(r["returncode"] != 0 for r in rows)}
    errors = [r["error"] for r in rows if r.get("error")]
    if errors:
        out["error"] = errors[0]
    if steps:
        out.update(first_step_median_s=statistics.median(steps), first_step_min_s=min(steps),
                   first_step_max_s=max(steps))
    out["exit_median_s"] = statistics.median(exits)
    return out


def _check_driver(done: subprocess.CompletedProcess) -> None:
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-15:])
        raise RuntimeError(f"The start-up breakdown run failed (exit {done.returncode}):\n{tail}")


def import_breakdown(python: str, args: list[str], top: int = 12) -> list[tuple[str, float]]:
    """Seconds of import time per top-level package up to the first step (``-X importtime``
    self times, which that flag inflates by roughly a third), largest first.

    Raises:
        RuntimeError: the run failed before its first step (its stderr's tail is in the message).
    """
    with tempfile.TemporaryDirectory(prefix="ttexp-startup-") as tmp:
        cmd = [python, "-X", "importtime", "-c", _DRIVER, "-", *args, f"hydra.run.dir={tmp}/run"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    _check_driver(done)
    err = done.stderr
    per_package: dict[str, float] = defaultdict(float)
    for line in err.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if m:
            per_package[m[2].split(".")[0]] += int(m[1]) / 1e6
    return sorted(per_package.items(), key=lambda kv: -kv[1])[:top]


def stage_breakdown(python: str, args: list[str]) -> dict[str, Any]:
    """One run stopped right after its first step, with the real-clock time of each stage.

    Returns:
        ``{"total_s": spawn to exit, "marks": [(label, seconds since the interpreter ran the
        first line)]}``; a label ending in ``>`` starts a stage, ``<`` ends one, and the gap to the
        previous mark is what ran in between (imports mostly).

    Raises:
        RuntimeError: the run failed before its first step (its stderr's tail is in the message).
    """
    with tempfile.TemporaryDirectory(prefix="ttexp-startup-") as tmp:
        out = Path(tmp) / "marks.json"
        cmd = [python, "-c", _DRIVER, str(out), *args, f"hydra.run.dir={tmp}/run"]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        total = time.perf_counter() - start
        _check_driver(done)
        return {"total_s": total, "marks": [tuple(m) for m in json.loads(out.read_text())]}


def print_report(args: list[str], results: dict[str, list[dict[str, Any]]]) -> None:
    """The table of medians (and the breakdowns when present) on stdout."""
    print(f"Start-up of `python -m ttexp {' '.join(args)}`: seconds from spawn to the first "
          f"step line, and to exit")
    width = max(len(py) for py in results)
    print(f"{'python':<{width}}  runs  median    min    max   exit (median)")
    for py, rows in results.items():
        s = summary(rows)
        if "first_step_median_s" not in s:
            print(f"{py:<{width}}  {s['runs']:>4}  no step line ({s['failed']} runs failed)"
                  + (f": {s['error']}" if s.get("error") else ""))
            continue
        print(f"{py:<{width}}  {s['runs']:>4}  {s['first_step_median_s']:6.2f} {s['first_step_min_s']:6.2f} "
              f"{s['first_step_max_s']:6.2f}   {s['exit_median_s']:6.2f}")
    print(f"load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs")


def print_breakdown(python: str, imports: list[tuple[str, float]], stages: dict[str, Any]) -> None:
    """The stages of one run up to its first step (real clock) and the import time by package."""
    print(f"\nStages up to the first step ({python}; one run, stopped after it; s since the "
          f"interpreter's first line; gap = since the mark before):")
    before = 0.0
    for label, at in stages["marks"]:
        print(f"  {at:6.3f}  +{at - before:5.3f}  {label}")
        before = at
    print(f"  spawn to exit: {stages['total_s']:.3f} s (interpreter start and exit: "
          f"{stages['total_s'] - before:.3f} s)")
    print("\nImport time by package up to the first step (-X importtime self times, inflated):")
    for name, seconds in imports:
        print(f"  {seconds:6.3f} s  {name}")


def main(argv: list[str] | None = None) -> int:
    """``python -m ttexp.bench --startup``; returns 0, or 1 when a run failed or printed no step."""
    parser = argparse.ArgumentParser(prog="python -m ttexp.bench --startup",
                                     description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per interpreter (default 5)")
    parser.add_argument("--python", action="append", metavar="PY",
                        help="interpreter to time (repeatable; default: this one)")
    parser.add_argument("--floor", action="store_true",
                        help="also time importing torch and transformers' Llama alone (the floor)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also break the start-up down by import and by function")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON ('-' = stdout)")
    parser.add_argument("overrides", nargs="*",
                        help="run overrides after debug=fast training.log_frequency=1, e.g. data.path=...")
    ns = parser.parse_args(argv)
    if ns.runs < 1:
        parser.error(f"--runs={ns.runs}: give at least 1 run")
    args = DEFAULT_OVERRIDES + ns.overrides
    pythons = ns.python or [sys.executable]
    results = time_startup(pythons, args, ns.runs, ns.floor)
    print_report(args, results)
    report: dict[str, Any] = {"args": args, "runs": results,
                              "summary": {py: summary(rows) for py, rows in results.items()}}
    if ns.breakdown:
        report["imports_s"] = import_breakdown(pythons[-1], args)
        report["stages"] = stage_breakdown(pythons[-1], args)
        print_breakdown(pythons[-1], report["imports_s"], report["stages"])
    if ns.json:
        text = json.dumps(report, indent=2)
        print(text) if ns.json == "-" else Path(ns.json).write_text(text + "\n")
    ok = all(r["returncode"] == 0 and r["first_step_s"] is not None for rows in results.values() for r in rows)
    return 0 if ok else 1
