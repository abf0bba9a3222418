"""The sweep and tracking configs compose: launcher plugins from the installed extras are found,
the Optuna preset minimises, logger=wandb turns W&B on, and the schema rejects a bad mode."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from conftest import compose_cfg, compose_raw
from ttexp.config.compose import compose_config
from ttexp.config.convert import to_run_config


def compose_hydra(*overrides: str):
    return compose_config(list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("launcher, plugin, target", [
    ("joblib", "hydra_plugins.hydra_joblib_launcher", "JoblibLauncher"),
    ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher", "SlurmLauncher"),
])
def test_launcher_plugins_from_the_extra_are_found(launcher, plugin, target):
    pytest.importorskip(plugin, reason='pip install -e ".[sweeps]"')
    cfg = compose_hydra(f"hydra/launcher={launcher}")
    assert cfg.hydra.launcher._target_.endswith(target)


def test_the_end_of_sweep_callback_is_registered():
    cfg = compose_hydra()
    assert cfg.hydra.callbacks.experiments._target_ == "ttexp.callbacks.ExperimentsCallback"
    assert cfg.sweep.journal == "experiments/experiments.md" and cfg.sweep.resume is False


def test_optuna_preset_minimises_in_memory():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason='pip install -e ".[optuna]"')
    cfg = compose_hydra("hparams_search=optuna_lr_batch")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "minimize"
    assert sweeper.storage is None and set(sweeper.params) == {"training.learning_rate", "training.batch_size"}


@pytest.mark.parametrize("choice", ["logger=wandb", "logger=[local,wandb]"])
def test_logger_wandb_turns_wandb_on(choice):
    cfg = compose_cfg([choice, "logger.wandb.mode=offline"])
    assert cfg.logger.wandb.enabled is True and cfg.logger.wandb.mode.value == "offline"
    assert compose_cfg([]).logger.wandb.enabled is False


def test_a_bad_wandb_mode_is_rejected_when_composing():
    with pytest.raises(ConfigCompositionException) as exc:
        compose_cfg(["logger=wandb", "logger.wandb.mode=cloud"])
    assert "online" in str(exc.value.__cause__) and "offline" in str(exc.value.__cause__)


@pytest.mark.parametrize("backend,expected", [("auto", "device=cuda:{k}"), ("torch", "device=cuda:{k}"),
                                              ("ttml", "hardware.device_ids=[{k}]")])
def test_pin_devices_leases_each_sweep_job_a_free_device(tmp_path, backend, expected):
    from ttexp.sweeps.sweep import pin_job_device

    leases = []
    for k in range(3):  # three live jobs take devices 0, 1, 2
        cfg = compose_raw([f"backend={backend}", "sweep.pin_devices=8"])
        pinned, lease = pin_job_device(cfg, tmp_path)
        leases.append(lease)
        assert pinned == expected.format(k=k)
        assert (list(cfg.hardware.device_ids) if backend == "ttml" else cfg.device) == (
            [k] if backend == "ttml" else f"cuda:{k}")
    leases[1].release()  # the job on device 1 finishes first: the next job gets device 1
    assert pin_job_device(compose_raw([f"backend={backend}", "sweep.pin_devices=8"]), tmp_path)[0] \
        == expected.format(k=1)


def test_pin_devices_leaves_an_explicit_device_and_refuses_a_mesh(tmp_path):
    from ttexp.errors import ConfigError
    from ttexp.sweeps.sweep import pin_job_device
    from ttexp.config.validate import validate_config

    cfg = compose_raw(["device=cuda:3", "sweep.pin_devices=8"])
    assert pin_job_device(cfg, tmp_path) == (None, None) and cfg.device == "cuda:3"
    assert pin_job_device(compose_raw(["sweep.pin_devices=null"]), tmp_path) == (None, None)
    mesh = compose_raw(["hardware=n300", "sweep.pin_devices=8"])
    assert pin_job_device(mesh, tmp_path) == (None, None)
    with pytest.raises(ConfigError, match="gives each sweep job one device"):
        validate_config(to_run_config(mesh))


def test_ttml_mesh_plan_takes_device_ids():
    from ttexp.backends.ttml.api import plan_mesh
    from ttexp.errors import BackendUnavailable

    assert plan_mesh([1, 1], False, [5]).device_ids == [5]
    assert plan_mesh([1, 2], True, [2, 3]).device_ids == [2, 3]
    with pytest.raises(BackendUnavailable, match="one id per device"):
        plan_mesh([1, 2], True, [2])
