"""Composition of every group option and preset, and every cross-field validation rule."""

from __future__ import annotations


import pytest
from hydra.errors import ConfigCompositionException

from conftest import ROOT, compose_cfg, run_cli
from ttexp.errors import ConfigError
from ttexp.config.validate import config_warnings, data_parallel_size, validate_config

GROUPS = {
    "model": ["nano", "mini", "midi", "mega", "tinyllama"],
    "hardware": ["n150", "n300", "t3k", "galaxy", "p150"],
    "task": ["scratch", "finetune", "eval"],
    "scheduler": ["constant", "warmup_cosine", "warmup_linear"],
}
PRESETS = sorted(p.stem for p in (ROOT / "conf/experiment").glob("*.yaml")) + sorted(
    p.stem for p in (ROOT / "experiments").glob("*.yaml")
)


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_group_option_composes_and_validates(group, option):
    # Galaxy has 32 data-parallel devices: the default global batch of 16 cannot split over them.
    extra = ["training.batch_size=32", "training.gradient_accumulation_steps=1"] if option == "galaxy" else []
    # Fine-tuning needs weights and evaluation a model (each refused without: test_finetune_config).
    extra += {"finetune": ["init_from=some/final_model"], "eval": ["eval.checkpoint=some/final_model"]}.get(option, [])
    cfg = compose_cfg([f"{group}={option}", *extra])
    section = getattr(cfg, group)
    assert getattr(section.name, "value", section.name) == option
    validate_config(cfg)


def test_conf_folders_hold_exactly_the_documented_options():
    for group, options in GROUPS.items():
        found = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
        assert found == sorted(options), group


@pytest.mark.parametrize("preset", PRESETS)
def test_every_experiment_preset_composes_and_validates(preset):
    cfg = compose_cfg([f"experiment={preset}"])
    validate_config(cfg)


def test_presets_are_found_in_both_folders():
    assert "nano_trickster" in PRESETS and "nano_cpu" in PRESETS
    assert "example_short_nano" in PRESETS  # from the top-level experiments/ folder


def test_nano_trickster_has_the_lessons_exact_values():
    cfg = compose_cfg(["experiment=nano_trickster"])
    t, m = cfg.training, cfg.model
    assert (m.vocab_size, m.hidden_dim, m.num_layers, m.num_heads, m.mlp_dim, m.max_seq_len) == (
        256, 256, 6, 8, 768, 512)
    assert m.dropout == 0.1 and m.tie_word_embeddings
    assert (t.batch_size, t.gradient_accumulation_steps, t.max_steps, t.warmup_steps) == (16, 2, 10000, 1000)
    assert (t.learning_rate, t.weight_decay, t.clip_grad_norm_max_norm) == (3e-4, 0.1, 1.0)
    assert (cfg.optimizer.beta1, cfg.optimizer.beta2) == (0.9, 0.95)
    assert (t.log_frequency, t.validation_frequency, t.checkpoint_frequency) == (50, 500, 1000)
    assert cfg.scheduler.name.value == "warmup_cosine" and cfg.scheduler.min_lr_ratio == 0.1
    assert list(cfg.hardware.mesh_shape) == [1, 1] and not cfg.hardware.enable_ddp


def test_finetune_task_switches_to_a_constant_schedule_unless_overridden():
    assert compose_cfg(["task=finetune"]).scheduler.name.value == "constant"
    assert compose_cfg(["task=finetune", "scheduler=warmup_cosine"]).scheduler.name.value == "warmup_cosine"


@pytest.mark.parametrize("hw,mesh,dp", [("n150", [1, 1], 1), ("n300", [1, 2], 2), ("t3k", [1, 8], 8),
                                        ("galaxy", [1, 32], 32), ("p150", [1, 1], 1)])
def test_hardware_meshes(hw, mesh, dp):
    cfg = compose_cfg([f"hardware={hw}"])
    assert list(cfg.hardware.mesh_shape) == mesh
    assert data_parallel_size(cfg.hardware) == dp


@pytest.mark.parametrize("overrides,expected", [
    (["model.num_heads=7"], "model.num_heads=7 does not divide model.hidden_dim=256"),
    (["model.num_heads=256"], "odd; RoPE needs an even head dimension"),
    (["model.num_kv_heads=3"], "model.num_kv_heads=3 must divide model.num_heads=8"),
    (["model.hidden_dim=0"], "model.hidden_dim=0 must be positive"),
    (["model.dropout=1.5"], "model.dropout=1.5 must be in [0, 1)"),
    (["model.vocab_size=100"], "too small for the byte tokenizer"),
    (["model.tokenizer=pretrained"], "needs model.pretrained_path"),
    (["hardware.mesh_shape=[2,4]", "hardware.enable_ddp=true"], "supports only [1, N] meshes; use [1, 8]"),
    (["hardware.mesh_shape=[1,2,3]"], "must be two positive integers"),
    (["hardware=n300", "hardware.enable_ddp=false"], "has 2 devices but hardware.enable_ddp=false"),
    (["hardware=n150", "hardware.enable_ddp=true"], "needs more than one device"),
    (["hardware=n300", "training.batch_size=5"], "training.batch_size=5 cannot be split over the 2"),
    (["hardware=t3k", "training.batch_size=12"], "use a multiple of 8"),
    (["training.max_steps=0"], "training.max_steps=0 must be at least 1"),
    (["training.gradient_accumulation_steps=0"], "training.gradient_accumulation_steps=0 must be at least 1"),
    (["training.learning_rate=-1"], "training.learning_rate=-1.0 must be positive"),
    (["training.warmup_steps=-1"], "training.warmup_steps=-1 must be >= 0"),
    (["training.validation_frequency=-1"], "training.validation_frequency=-1 must be >= 0"),
    (["training.validation_batches=0"], "training.validation_batches=0 must be at least 1"),
    (["training.clip_grad_norm_max_norm=0"], "training.clip_grad_norm_max_norm=0.0 must be positive"),
    (["generation.top_p=0"], "generation.top_p=0.0 must be in (0, 1]"),
    (["generation.temperature=-0.5"], "generation.temperature=-0.5 must be >= 0"),
    (["data.val_fraction=1.0"], "data.val_fraction=1.0 must be in [0, 1)"),
    (["data.val_fraction=0"], "leaves no validation data"),
    (["training.keep_last_n=0"], "training.keep_last_n=0 must be at least 1"),
    (["sweep.pin_devices=0"], "sweep.pin_devices=0 must be at least 1"),
    (["sweep.recoveries=-1"], "sweep.recoveries=-1 must be 0"),
])
def test_each_validation_rule_names_the_key_and_the_fix(overrides, expected):
    with pytest.raises(ConfigError) as info:
        validate_config(compose_cfg(overrides))
    assert expected in str(info.value)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as info:
        validate_config(compose_cfg(["model.num_heads=7", "training.max_steps=0", "generation.top_k=-1"]))
    msg = str(info.value)
    # Three problems, one error (a warmup longer than the run is a warning, not an error).
    assert msg.count("\n  - ") == 3
    assert "num_heads=7" in msg and "max_steps=0 must be" in msg and "top_k=-1" in msg


def test_frequency_beyond_max_steps_is_a_warning_not_an_error():
    cfg = compose_cfg(["training.max_steps=100", "training.warmup_steps=10"])
    validate_config(cfg)
    warnings = config_warnings(cfg)
    assert any("validation_frequency=500 exceeds training.max_steps=100" in w for w in warnings)


@pytest.mark.parametrize("override", ["training.batch_size=abc", "training.lr=1e-3", "backend=cuda",
                                      "model=nope"])
def test_schema_rejects_bad_types_unknown_keys_and_options(override):
    with pytest.raises(ConfigCompositionException):
        compose_cfg([override])


@pytest.mark.slow
@pytest.mark.parametrize("args,expected", [
    (["training.batch_size=abc"], "Value 'abc' of type 'str' could not be converted to Integer"),
    (["model.num_heads=7"], "model.num_heads=7 does not divide model.hidden_dim=256"),
    (["hardware=n300", "training.batch_size=5"], "cannot be split over the 2 data-parallel devices"),
])
def test_cli_bad_override_fails_with_message_and_nonzero_exit(tmp_path, args, expected):
    proc = run_cli([*args, f"hydra.run.dir={tmp_path}/run"])
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert expected in out
    assert "Traceback" not in out


def test_a_warmup_as_long_as_the_run_is_a_warning_that_says_the_peak_is_never_reached():
    cfg = compose_cfg(["training.max_steps=30", "training.warmup_steps=1000", "training.learning_rate=3e-4"])
    validate_config(cfg)  # a user typing training.max_steps=30 expects a run
    (warning,) = [w for w in config_warnings(cfg) if "warmup_steps" in w]
    assert "never reaches its peak 0.0003" in warning and "9e-06" in warning  # 3e-4 * 30 / 1000
