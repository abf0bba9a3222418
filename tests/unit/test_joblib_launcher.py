"""hydra/launcher=joblib is ttexp's launcher (the plugin's JoblibLauncher subclassed, with the
plugin's options); after a broken pool it keeps the jobs that ended and re-dispatches the rest; a
sweep job's training process records its supervisor's death. The whole fault, a SIGKILLed loky
worker, is tests/integration/test_faults.py (marked ``faults``)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from conftest import ROOT
from ttexp.config.compose import compose_config
from ttexp.record.liveness import record_orphaned
from ttexp.record.result import RunResult

pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason='pip install -e ".[sweeps]"')


def test_hydra_launcher_joblib_is_ttexps_launcher_with_the_plugins_options():
    from hydra.core.plugins import Plugins
    from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

    from ttexp.config.launchers import TARGET

    cfg = compose_config(["hydra/launcher=joblib", "hydra.launcher.n_jobs=3"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == TARGET
    assert set(launcher) == {f.name for f in dataclasses.fields(JobLibLauncherConf)}
    assert launcher.n_jobs == 3 and launcher.prefer == "processes"  # the plugin's defaults
    plugin = Plugins.instance()._instantiate(launcher)  # as Hydra's sweeper does
    # The plugin's class, by name: Hydra's plugin scan re-executes its module, a new class object.
    assert JoblibLauncher.__name__ in [c.__name__ for c in type(plugin).__mro__[1:]]
    assert type(plugin).__name__ == "RecoveringJoblibLauncher"
    assert plugin.joblib["n_jobs"] == 3
    with pytest.raises(ConfigCompositionException):  # still type-checked by the plugin's dataclass
        compose_config(["hydra/launcher=joblib", "hydra.launcher.n_jobs=many"], return_hydra_config=True)


def _record(job_dir: Path, status: str, best: float | None = None) -> None:
    job_dir.mkdir(parents=True)
    (job_dir / "result.json").write_text(json.dumps(
        {"status": status, "best_val_loss": best, "overrides": []}))


def test_after_a_broken_pool_ended_jobs_are_kept_and_the_others_redispatched(tmp_path, monkeypatch):
    from ttexp.sweeps import joblib_launcher

    sweep = tmp_path / "sweep"
    _record(sweep / "0", "lost")  # the killed worker's job: its training process wrote this
    _record(sweep / "1", "running")  # killed by loky with its worker
    _record(sweep / "3", "completed", best=5.0)  # ended as the pool broke
    monkeypatch.setattr(joblib_launcher, "_job_config", lambda launcher, idx, overrides: OmegaConf.create(
        {"hydra": {"sweep": {"dir": str(sweep), "subdir": str(idx)}, "job": {"name": "app"}}}))
    todo = {i: [f"x={i}", "sweep.resume=false"] for i in range(5)}
    returns = {4: "returned by its worker"}
    again = joblib_launcher._triage(None, todo, 0, returns, sweep)
    assert again == {1: ["x=1", "sweep.resume=true"], 2: ["x=2", "sweep.resume=true"]}  # 2: never started
    assert math.isinf(returns[0].return_value) and returns[3].return_value == 5.0
    assert returns[0].overrides == ["x=0", "sweep.resume=false"] and returns[0].working_dir == str(sweep / "0")
    assert returns[4] == "returned by its worker"


@pytest.mark.parametrize("recoveries, breaks", [(2, 1), (1, 2), (0, 1)])
def test_the_pool_is_replaced_at_most_sweep_recoveries_times(tmp_path, monkeypatch, recoveries, breaks):
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    from ttexp.sweeps import joblib_launcher

    launcher = SimpleNamespace(joblib={"n_jobs": 2}, config=OmegaConf.create({
        "hydra": {"hydra_logging": None, "verbose": False, "sweep": {"dir": str(tmp_path)}},
        "sweep": {"recoveries": recoveries}}))
    pools = []

    def dispatch(launcher, joblib_cfg, todo, initial_job_idx, returns):
        pools.append(dict(todo))
        if len(pools) <= breaks:  # job 0 ends, then a worker dies
            returns[0] = "job 0"
            raise TerminatedWorkerError("...\nThe exit codes of the workers are {SIGKILL(-9)}\n...")
        returns.update({i: f"job {i}" for i in todo})

    monkeypatch.setattr(joblib_launcher, "configure_log", lambda *a: None)
    monkeypatch.setattr(joblib_launcher, "_dispatch", dispatch)
    monkeypatch.setattr(joblib_launcher, "_triage", lambda launcher, todo, idx, returns, sweep_dir: {
        i: joblib_launcher.with_resume(o) for i, o in todo.items() if i not in returns})
    overrides = [["a=1"], ["a=2"], ["a=3"]]
    if breaks > recoveries:
        with pytest.raises(TerminatedWorkerError):
            joblib_launcher.launch(launcher, overrides, 0)
        assert len(pools) == recoveries + 1
        return
    assert joblib_launcher.launch(launcher, overrides, 0) == ["job 0", "job 1", "job 2"]  # in job order
    assert pools == [{0: ["a=1"], 1: ["a=2"], 2: ["a=3"]},
                     {1: ["a=2", "sweep.resume=true"], 2: ["a=3", "sweep.resume=true"]}]


def test_record_orphaned_closes_only_a_running_record(tmp_path):
    _record(tmp_path / "a", "running")
    _record(tmp_path / "b", "completed", best=1.0)
    assert record_orphaned(tmp_path / "a", 4321) and not record_orphaned(tmp_path / "b", 4321)
    a = RunResult.read(tmp_path / "a")
    assert a.status == "lost" and a.ended_at
    assert "(pid 4321, the sweep's joblib worker) was killed" in a.error
    assert "last logged step none, last checkpoint none" in a.error
    assert RunResult.read(tmp_path / "b").status == "completed"


ORPHAN = """
import sys, time
from pathlib import Path
from ttexp.train.launch import die_with_parent
die_with_parent(lambda pid: Path(sys.argv[1]).write_text(str(pid)))
print("ready", flush=True)
time.sleep(60)
"""
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.faults
@pytest.mark.parametrize("first", ["parent", "child"])
def test_a_supervised_process_records_its_parents_death_but_not_its_own_kill(tmp_path, first):
    """Killing the parent (the killed joblib worker) makes the child write its mark and stop;
    killing the child first, then the parent (what loky does to the other workers) leaves none."""
    mark = tmp_path / "orphaned"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, ORPHAN, str(mark)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    if first == "child":
        os.kill(child, signal.SIGKILL)
        time.sleep(0.2)
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while Path(f"/proc/{child}").exists() and time.time() < deadline:
        time.sleep(0.02)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    if first == "parent":
        assert mark.read_text() == str(parent.pid)
    else:
        assert not mark.exists()


@pytest.mark.faults
def test_a_supervised_process_whose_parent_died_while_it_started_records_it(tmp_path):
    """Its parent passed its pid (supervise() does): already re-parented, it records and stops."""
    mark = tmp_path / "orphaned"
    code = ("import sys; from pathlib import Path; from ttexp.train.launch import die_with_parent; "
            "die_with_parent(lambda pid: Path(sys.argv[1]).write_text(str(pid)), parent=int(sys.argv[2])); "
            "print('still running')")
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that existed and has gone
    proc = subprocess.run([sys.executable, "-c", code, str(mark), str(gone.pid)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL and "still running" not in proc.stdout
    assert mark.read_text() == str(gone.pid)
