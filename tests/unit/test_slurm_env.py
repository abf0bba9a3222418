"""What a job reads from SLURM and W&B's environment: a restarted job resumes, submitit's
ranks come from srun's variables, and WANDB_* variables win over config defaults but not over
values the user set. (The preemption signal itself: tests/integration/test_preemption.py.)"""

from __future__ import annotations

import os

import pytest

from conftest import compose_cfg
from ttexp.record.run_record import RunRecord
from ttexp.record.wandb_tracker import init_arguments
from ttexp.train.slurm import export_torch_env, restart_resume


def test_a_restarted_job_resumes_and_an_explicit_resume_is_kept(monkeypatch):
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert restart_resume(None) is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert restart_resume(None) is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert restart_resume(None) == "auto"
    assert restart_resume("/runs/a/checkpoints/step_10") == "/runs/a/checkpoints/step_10"


def test_srun_tasks_become_torch_ranks(monkeypatch):
    pytest.importorskip("submitit")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key in [k for k in os.environ if k.startswith(("SLURM_", "SUBMITIT_"))]:
        monkeypatch.delenv(key)
    assert export_torch_env() is False  # not under srun
    slurm = {"SLURM_JOB_ID": "42", "SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
             "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]"}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    assert export_torch_env() is True
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("3", "4", "1")
    assert os.environ["MASTER_ADDR"] == "gpu07" and 20000 <= int(os.environ["MASTER_PORT"]) <= 60000
    monkeypatch.setenv("RANK", "0")
    assert export_torch_env() is False  # torchrun's variables win


def test_wandb_environment_wins_over_defaults_and_loses_to_set_values(tmp_path, monkeypatch):
    env = {"WANDB_MODE": "offline", "WANDB_PROJECT": "p-env", "WANDB_ENTITY": "team",
           "WANDB_RUN_GROUP": "g-env", "WANDB_NAME": "n-env", "WANDB_JOB_TYPE": "j-env",
           "WANDB_TAGS": "a, b", "WANDB_NOTES": "from env"}
    cfg = compose_cfg(["logger=wandb"], tmp_path / "run")
    record = RunRecord(tmp_path / "run", cfg, [])
    got = init_arguments(cfg, record, env)
    assert (got["mode"], got["project"], got["entity"], got["group"], got["name"], got["job_type"],
            got["notes"]) == ("offline", "p-env", "team", "g-env", "n-env", "j-env", "from env")
    assert got["tags"][-2:] == ["a", "b"]
    default = init_arguments(cfg, record, {})
    picked = (default["mode"], default["project"], default["group"], default["job_type"])
    assert picked == (None, "ttexp", None, "scratch")
    explicit = compose_cfg(["logger=wandb", "logger.wandb.mode=disabled", "logger.wandb.project=mine",
                            "logger.wandb.group=g"], tmp_path / "run2")
    got = init_arguments(explicit, RunRecord(tmp_path / "run2", explicit, []), env)
    assert (got["mode"], got["project"], got["group"]) == ("disabled", "mine", "g")
