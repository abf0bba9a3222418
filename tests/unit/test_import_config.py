"""python -m ttexp.import_config: the lessons' configs become presets equal to ours, tt-train's
nested optimizer block is read, and every key without a ttexp equivalent is listed."""

from __future__ import annotations

from pathlib import Path

import yaml

from conftest import compose_cfg
from ttexp.config.convert import config_dict
from ttexp.tools.import_config import main
from ttexp.config.validate import validate_config

# reference/lessons_and_templates.md §2.2 (trickster_n150.yaml), value for value.
TRICKSTER_N150 = {
    "training_config": {
        "model_type": "llama", "seed": 42, "batch_size": 8, "validation_batch_size": 2,
        "num_epochs": 3, "max_steps": 500, "learning_rate": 0.0001, "weight_decay": 0.01,
        "use_moreh_adamw": True, "use_kahan_summation": False, "use_clip_grad_norm": True,
        "clip_grad_norm_max_norm": 1.0, "gradient_accumulation_steps": 4, "eval_every": 50,
        "model_save_interval": 100, "tokenizer_type": "bpe", "checkpoint_dir": "checkpoints_trickster_n150",
        "model_config": "model_configs/tinyllama.yaml", "log_level": "INFO", "use_wandb": False,
        "wandb_project": "trickster-finetune", "wandb_run_name": "n150-tinyllama",
        "checkpoint_frequency": 100, "validation_frequency": 50, "save_strategy": "steps",
        "scheduler_type": "identity",
    },
    "eval_config": {"repetition_penalty": 1.0, "temperature": 0.0, "top_k": 50, "top_p": 1.0},
    "device_config": {"enable_ddp": False, "mesh_shape": [1, 1]},
}
# §2.8 (nano_trickster.yaml).
NANO_TRICKSTER = {
    "model_config": {"vocab_size": 256, "hidden_dim": 256, "num_layers": 6, "num_heads": 8,
                     "mlp_dim": 768, "max_seq_len": 512, "dropout": 0.1},
    "training_config": {
        "batch_size": 16, "gradient_accumulation_steps": 2, "max_steps": 10000, "warmup_steps": 1000,
        "learning_rate": 0.0003, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0,
        "log_interval": 50, "eval_interval": 500, "save_interval": 1000, "log_level": "INFO",
        "use_wandb": False, "checkpoint_frequency": 1000, "validation_frequency": 500,
        "save_strategy": "steps", "keep_best_n": 3,
    },
    "device_config": {"enable_ddp": False, "mesh_shape": [1, 1], "device_type": "tt"},
    "data_config": {"train_data": "data/train.pt", "val_data": "data/val.pt", "tokenizer": "data/tokenizer.pt"},
    "output_config": {"output_dir": "output/nano_trickster"},
}
# tt-train's Gen B layout: nested optimizer block, DDP device config, inline transformer_config.
TT_TRAIN_NESTED = {
    "training_config": {
        "project_name": "tt_train_nano_gpt", "seed": 5489, "model_save_interval": 500, "batch_size": 64,
        "num_epochs": 1, "max_steps": 5000, "gradient_accumulation_steps": 1, "eval_every": 200,
        "tokenizer_type": "char", "scheduler_type": "warmup_linear",
        "optimizer": {"type": "MorehAdamW", "lr": 0.0003, "beta1": 0.9, "beta2": 0.999,
                      "epsilon": 1.0e-8, "weight_decay": 0.01, "amsgrad": False, "stochastic_rounding": False},
    },
    "device_config": {"enable_ddp": True, "mesh_shape": [1, 2]},
    "transformer_config": {"model_type": "llama", "num_heads": 6, "num_groups": 3, "embedding_dim": 384,
                           "num_blocks": 6, "vocab_size": 256, "max_sequence_length": 256, "theta": 500000.0,
                           "dropout_prob": 0.2, "weight_tying": "disabled", "intermediate_dim": 1024,
                           "runner_type": "memory_efficient"},
}


def convert(tmp_path: Path, monkeypatch, source: dict, name: str, capsys) -> tuple[object, str, str]:
    src = tmp_path / f"{name}_src.yaml"
    src.write_text(yaml.safe_dump(source))
    exp = tmp_path / "experiments"
    exp.mkdir(exist_ok=True)
    assert main([str(src), "-o", str(exp / f"{name}.yaml"), "--name", name]) == 0
    err = capsys.readouterr().err
    monkeypatch.setenv("TTEXP_EXPERIMENTS_DIR", str(exp))
    cfg = compose_cfg([f"experiment={name}"])
    validate_config(cfg)
    return cfg, (exp / f"{name}.yaml").read_text(), err


def sections(cfg, *names):
    return {n: config_dict(getattr(cfg, n)) for n in names}


def test_nano_trickster_equals_our_preset(tmp_path, monkeypatch, capsys):
    got, text, err = convert(tmp_path, monkeypatch, NANO_TRICKSTER, "imported_nano", capsys)
    ours = compose_cfg(["experiment=nano_trickster"])
    keys = ("model", "hardware", "task", "optimizer", "scheduler", "training", "generation")
    got_s, ours_s = sections(got, *keys), sections(ours, *keys)
    # Our preset adds keep_last_n: 1 (so resume=auto has the newest step); the lesson has no such key.
    assert ours_s["training"].pop("keep_last_n") == 1 and got_s["training"].pop("keep_last_n") is None
    assert got_s == ours_s
    assert text.startswith("# @package _global_")
    for key in ("log_level='INFO'", "device_type='tt'", "data_config:", "output_config:"):
        assert key in err and key in text, key


def test_trickster_n150_equals_the_finetune_task_with_the_lessons_choices(tmp_path, monkeypatch, capsys):
    got, _, err = convert(tmp_path, monkeypatch, TRICKSTER_N150, "imported_trickster", capsys)
    ours = compose_cfg(["task=finetune", "model=tinyllama", "hardware=n150",
                        "optimizer.use_moreh_adamw=true", "generation.temperature=0.0", "generation.top_k=50",
                        "training.validation_batch_size=2"])
    keys = ("model", "hardware", "task", "optimizer", "scheduler", "training", "generation")
    assert sections(got, *keys) == sections(ours, *keys)
    assert got.training.batch_size * got.training.gradient_accumulation_steps == 32
    assert got.training.validation_batch_size == 2
    for key in ("num_epochs=3", "tokenizer_type='bpe'", "use_wandb=False",
                "wandb_project=", "checkpoint_dir=", "save_strategy="):
        assert key in err, key
    assert "eval_every" not in err and "model_save_interval" not in err  # aliases, mapped


def test_tt_train_nested_optimizer_and_transformer_config(tmp_path, monkeypatch, capsys):
    got, _, err = convert(tmp_path, monkeypatch, TT_TRAIN_NESTED, "imported_tt", capsys)
    assert got.hardware.name == "n300" and got.hardware.enable_ddp is True
    assert got.training.learning_rate == 3e-4 and got.training.weight_decay == 0.01
    assert got.training.seed == 5489 and got.training.validation_frequency == 200
    assert got.training.checkpoint_frequency == 500 and got.training.batch_size == 64
    assert got.optimizer.use_moreh_adamw is True and got.optimizer.beta2 == 0.999
    assert got.scheduler.name.value == "warmup_linear"
    m = got.model
    assert (m.hidden_dim, m.num_heads, m.num_kv_heads, m.num_layers, m.mlp_dim, m.max_seq_len) == \
        (384, 6, 3, 6, 1024, 256)
    assert m.rope_theta == 500000.0 and m.dropout == 0.2 and m.tie_word_embeddings is False
    assert "runner_type='memory_efficient'" in err and "project_name=" in err
    assert "amsgrad" not in err  # false is what ttexp does


def test_not_a_tt_train_file(tmp_path, capsys):
    f = tmp_path / "x.yaml"
    f.write_text("foo: 1\n")
    assert main([str(f)]) == 1
    assert "No tt-train sections" in capsys.readouterr().err


def test_conflicting_aliases_are_reported(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"training_config": {"validation_frequency": 50, "eval_every": 70}}))
    assert main([str(f)]) == 0
    out = capsys.readouterr()
    assert "validation_frequency: 50" in out.out and "eval_every=70 (conflicts" in out.err


# tt-train's own layout (training_configs/ next to model_configs/), see tests/fixtures/tt_train/.
TT_CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "tt_train" / "tt-train" / "configs"


def import_file(tmp_path: Path, monkeypatch, capsys, src: Path, name: str):
    """Run the command as a user would (-o experiments/NAME.yaml from the current directory), then
    compose ``experiment=NAME`` exactly as the header's command says."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TTEXP_EXPERIMENTS_DIR", raising=False)
    assert main([str(src), "-o", f"experiments/{name}.yaml"]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    text = (tmp_path / "experiments" / f"{name}.yaml").read_text()
    assert f"#   python -m ttexp experiment={name}\n" in text  # the printed command, no prefix needed
    cfg = compose_cfg([f"experiment={name}"])
    validate_config(cfg)
    return cfg, text, err


def test_model_config_relative_to_the_configs_folder_and_no_scheduler_means_constant(
        tmp_path, monkeypatch, capsys):
    cfg, _, err = import_file(tmp_path, monkeypatch, capsys,
                              TT_CONFIGS / "training_configs" / "training_shakespeare_nanollama3.yaml", "nl3")
    m = cfg.model
    assert (m.hidden_dim, m.num_heads, m.num_kv_heads, m.num_layers, m.vocab_size, m.max_seq_len) == \
        (384, 6, 3, 6, 32000, 256)
    assert m.rope_theta == 500000.0 and m.dropout == 0.0 and cfg.task.name.value == "scratch"
    # tt-train derives the MLP width: 8/3 x 384 = 1024, already a multiple of 256
    assert m.mlp_dim == 1024 and "gives no intermediate_dim: model.mlp_dim=1024" in err
    # tt-train without a scheduler trains at a constant rate: not our default warmup-cosine
    assert cfg.scheduler.name.value == "constant" and cfg.scheduler.min_lr_ratio == 1.0
    assert cfg.training.warmup_steps == 0 and cfg.training.learning_rate == 3e-4
    assert "model read from" in err and "runner_type='default'" in err


def test_runtime_root_reference_scheduler_config_and_nested_optimizer(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TT_METAL_RUNTIME_ROOT", str(TT_CONFIGS.parents[1]))
    src = tmp_path / "elsewhere" / "run.yaml"  # away from the configs tree: only the env var finds it
    src.parent.mkdir()
    src.write_text((TT_CONFIGS / "training_configs" / "training_runtime_root_scheduler.yaml").read_text())
    cfg, _, err = import_file(tmp_path, monkeypatch, capsys, src, "rr")
    assert cfg.model.hidden_dim == 384 and cfg.model.num_kv_heads == 3
    assert cfg.training.learning_rate == 1e-3  # scheduler_config.max_lr, not optimizer.lr
    assert "max_lr=" in err and "replaces the learning rate 0.0003" in err
    # SpeedrunScheduler: linear warmup, then a straight line to min_lr (warmup_linear, not cosine)
    assert cfg.training.warmup_steps == 100 and cfg.scheduler.name.value == "warmup_linear"
    assert "total_steps=1000; ttexp's warmup_linear reaches it at training.max_steps=5000" in err
    assert abs(cfg.scheduler.min_lr_ratio - 0.1) < 1e-12  # min_lr / max_lr
    assert cfg.optimizer.beta2 == 0.999 and cfg.optimizer.eps == 1e-8 and cfg.optimizer.use_moreh_adamw is False
    assert cfg.training.weight_decay == 0.01 and cfg.training.validation_batch_size == 4
    assert cfg.hardware.name == "n300"


def test_unset_runtime_root_says_it_cannot_resolve(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TT_METAL_RUNTIME_ROOT", raising=False)
    monkeypatch.delenv("TT_METAL_HOME", raising=False)
    src = TT_CONFIGS / "training_configs" / "training_runtime_root_scheduler.yaml"
    assert main([str(src)]) == 0
    out = capsys.readouterr()
    assert "model_config='${TT_METAL_RUNTIME_ROOT}" in out.err and "cannot find it" in out.err
    assert "cannot find it" in out.out  # and in the preset's header


def test_hold_past_max_steps_is_warmup_then_constant(tmp_path, monkeypatch, capsys):
    cfg, _, err = import_file(tmp_path, monkeypatch, capsys,
                              TT_CONFIGS / "training_configs" / "training_gsm8k_hold.yaml", "hold")
    assert cfg.scheduler.name.value == "constant" and cfg.training.warmup_steps == 20
    assert cfg.training.learning_rate == 1e-4  # "1e-4" is a string to YAML 1.1; read as a number


def test_identity_scheduler_drops_a_warmup(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"training_config": {"scheduler_type": "identity", "warmup_steps": 50,
                                                     "learning_rate": 1e-3}}))
    assert main([str(f)]) == 0
    out = capsys.readouterr()
    preset = yaml.safe_load(out.out)
    assert {"override /scheduler": "constant"} in preset["defaults"]
    assert preset["training"]["warmup_steps"] == 0 and "warmup_steps=50 dropped" in out.err


def test_gpt2_nanogpt_is_named_not_imported(tmp_path, capsys):
    src = TT_CONFIGS / "training_configs" / "training_shakespeare_nanogpt.yaml"  # "nanogpt.yaml"
    assert main([str(src), "-o", str(tmp_path / "g.yaml")]) == 1
    err = capsys.readouterr().err
    assert "GPT-2-style nanogpt" in err and "Llama" in err and not (tmp_path / "g.yaml").exists()
    f = tmp_path / "unresolved.yaml"  # not found, but the name says nanogpt
    f.write_text(yaml.safe_dump({"training_config": {"model_config": "nowhere/nanogpt.yaml"}}))
    assert main([str(f)]) == 1 and "GPT-2-style nanogpt" in capsys.readouterr().err


def test_a_shipped_preset_name_is_refused_or_renamed(tmp_path, monkeypatch, capsys):
    f = tmp_path / "trickster_n150.yaml"
    f.write_text(yaml.safe_dump(TRICKSTER_N150))
    monkeypatch.chdir(tmp_path)
    assert main([str(f), "-o", "experiments/trickster_n150.yaml"]) == 1
    assert "ttexp ships" in capsys.readouterr().err and not (tmp_path / "experiments").exists()
    assert main([str(f)]) == 0  # the name came from the file: renamed, with a message
    out = capsys.readouterr()
    assert "named trickster_n150_imported" in out.err
    assert "name: trickster_n150_imported" in out.out and "experiment=trickster_n150_imported" in out.out


def test_output_outside_experiments_prints_a_working_command(tmp_path, monkeypatch, capsys):
    f = tmp_path / "src.yaml"
    f.write_text(yaml.safe_dump(NANO_TRICKSTER))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TTEXP_EXPERIMENTS_DIR", raising=False)
    assert main([str(f), "-o", "presets/mine.yaml"]) == 0
    command = f"TTEXP_EXPERIMENTS_DIR={tmp_path / 'presets'} python -m ttexp experiment=mine"
    assert f"#   {command}\n" in (tmp_path / "presets" / "mine.yaml").read_text()
    monkeypatch.setenv("TTEXP_EXPERIMENTS_DIR", str(tmp_path / "presets"))
    assert compose_cfg(["experiment=mine"]).model.hidden_dim == 256
    assert main([str(f), "-o", "presets/mine.yaml", "--name", "other"]) == 1
    assert "disagree" in capsys.readouterr().err


def test_tt_trains_derived_mlp_width():
    from ttexp.tools.import_config import swiglu_intermediate_dim

    assert swiglu_intermediate_dim(2048) == 5632  # TinyLlama: HF's intermediate_size
    assert swiglu_intermediate_dim(384) == 1024 and swiglu_intermediate_dim(256) == 768  # nano's 768
