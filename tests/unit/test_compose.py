"""The compose helper (ttexp.config.compose) and the debug group: every debug option composes and
validates, debug=tiny holds the documented tiny run, and Hydra's global state is left as found."""

from __future__ import annotations

import pytest
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

from conftest import ROOT, compose_cfg, run_cli
from ttexp.config.compose import compose_config
from ttexp.config.validate import validate_config

DEBUG = sorted(p.stem for p in (ROOT / "conf/debug").glob("*.yaml"))


def test_debug_options_are_the_documented_ones():
    assert DEBUG == ["fast", "tiny"]


@pytest.mark.parametrize("option", DEBUG)
def test_every_debug_option_composes_and_validates(option):
    validate_config(compose_cfg([f"debug={option}"]))


def test_debug_tiny_is_the_tiny_model_and_a_short_schedule():
    cfg = compose_cfg(["debug=tiny"])
    m, t = cfg.model, cfg.training
    assert (m.hidden_dim, m.num_layers, m.num_heads, m.mlp_dim, m.max_seq_len, m.dropout) == (32, 2, 4, 64, 32, 0.0)
    assert (t.max_steps, t.batch_size, t.gradient_accumulation_steps, t.warmup_steps) == (4, 4, 1, 1)
    assert (t.validation_frequency, t.validation_batches, t.checkpoint_frequency, t.log_frequency) == (2, 2, 2, 1)
    assert cfg.generation.max_new_tokens == 8


def test_debug_comes_after_the_task_and_experiment_and_before_the_command_line():
    cfg = compose_cfg(["experiment=nano_trickster", "debug=fast", "training.max_steps=7"])
    assert cfg.model.hidden_dim == 32 and cfg.training.checkpoint_frequency == 0  # debug over the preset
    assert cfg.training.max_steps == 7  # the command line over debug
    assert compose_cfg([]).model.hidden_dim == 256  # debug: null by default


def test_python_m_ttexp_debug_tiny_prints_its_config():
    proc = run_cli(["debug=tiny", "--cfg", "job"])
    assert proc.returncode == 0, proc.stderr
    assert "hidden_dim: 32" in proc.stdout and "max_steps: 4" in proc.stdout


def test_compose_config_keeps_the_hydra_node_only_when_asked():
    assert "hydra" not in compose_config([])
    cfg = compose_config(["debug=tiny"], return_hydra_config=True)
    assert cfg.hydra.runtime.choices.debug == "tiny"


@pytest.mark.parametrize("override,error", [
    ("model=nope", MissingConfigException),
    ("training.lr=1e-3", ConfigCompositionException),
    ("training.batch_size=abc", ConfigCompositionException),
    ("a=[", OverrideParseException),
])
def test_compose_config_raises_what_its_docstring_says(override, error):
    with pytest.raises(error):
        compose_config([override])
    assert not GlobalHydra.instance().is_initialized()


def test_compose_config_leaves_a_running_hydra_in_place():
    with initialize_config_module(config_module="ttexp.conf", version_base="1.3"):
        outer = GlobalHydra.instance().hydra
        assert compose_config(["debug=tiny"]).model.hidden_dim == 32
        assert GlobalHydra.instance().hydra is outer
    assert not GlobalHydra.instance().is_initialized()
