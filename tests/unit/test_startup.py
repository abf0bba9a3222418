"""Start-up: ``python -m ttexp.bench --startup`` (ttexp.tools.startup) times what it says it times,
and the entry point stays light (usage errors, ``--help`` and ``--cfg`` answer before torch loads)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import log_to, run_in_process

from ttexp.tools import startup


def _fake_python(tmp_path: Path, body: str) -> str:
    """An executable standing in for ``python -m ttexp ...``: a shell script with ``body``."""
    exe = tmp_path / "fake-python"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(0o755)
    return str(exe)


def test_the_first_step_is_timed_when_its_line_arrives(tmp_path):
    py = _fake_python(tmp_path, 'echo "Model nano:"\nsleep 0.3\necho "Step 1/3 | loss 5.5 | lr 3e-4"\n'
                                'sleep 0.3\necho "Step 2/3 | loss 5.4 | lr 3e-4"\n')
    row = startup.time_one_run(py, ["debug=fast"], tmp_path / "run")
    assert row["returncode"] == 0
    assert 0.3 <= row["first_step_s"] < 0.6 <= row["exit_s"]


def test_a_run_that_never_steps_fails_the_bench(tmp_path, capsys):
    py = _fake_python(tmp_path, 'echo "ERROR: training.batch_sise is not a key" >&2\n'
                                'echo "Set HYDRA_FULL_ERROR=1 for a complete stack trace." >&2\nexit 2\n')
    assert startup.main(["--runs", "2", "--python", py]) == 1
    # the reason, not only the count: the run's ERROR line, not the line after it
    assert "no step line (2 runs failed): ERROR: training.batch_sise is not a key" in capsys.readouterr().out


def test_the_bench_times_the_step_line_the_loop_logs(tmp_path, corpus):
    log = tmp_path / "console.txt"
    with log_to(log):
        run_in_process(startup.DEFAULT_OVERRIDES + [f"data.path={corpus}"], tmp_path / "run")
    lines = log.read_text().splitlines()
    firsts = [i for i, line in enumerate(lines) if startup.FIRST_STEP.match(line)]
    assert len(firsts) == 1 and lines[firsts[0]].startswith("Step 1/3 |")
    assert not any(startup.FIRST_STEP.match(line) for line in lines[:firsts[0]])


def test_the_entry_point_imports_no_heavy_package():
    heavy = ("torch", "transformers", "matplotlib", "wandb", "peft", "optuna", "scipy", "safetensors")
    code = f"import sys, ttexp.__main__; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_breakdown_marks_every_stage_of_a_real_start_up_in_order(corpus):
    stages = startup.stage_breakdown(sys.executable, startup.DEFAULT_OVERRIDES + [f"data.path={corpus}"])
    labels = [label for label, _ in stages["marks"]]
    # each patched function still exists under its name, and runs in the order of the flow
    assert labels == ["python started <", "Hydra composes >", "Hydra composes <", "Hydra composes >",
                      "Hydra composes <", "import torch <", "import ttexp.runner <", "runner.run >",
                      "resolve, validate, write the config >", "resolve, validate, write the config <",
                      "build the model >", "import transformers' Llama <", "build the model <",
                      "first step >", "first step <"]
    times = [at for _, at in stages["marks"]]
    assert times == sorted(times) and times[-1] < stages["total_s"]
