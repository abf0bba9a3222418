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
                        "optimizer.use_moreh_adamw=true", "generation.temperature=0.0", "generation.top_k=50"])
    keys = ("model", "hardware", "task", "optimizer", "scheduler", "training", "generation")
    assert sections(got, *keys) == sections(ours, *keys)
    assert got.training.batch_size * got.training.gradient_accumulation_steps == 32
    for key in ("validation_batch_size=2", "num_epochs=3", "tokenizer_type='bpe'", "use_wandb=False",
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
