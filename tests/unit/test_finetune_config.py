"""Config of fine-tuning and evaluation: the lesson's presets, and the rules that stop bad runs."""

from __future__ import annotations

import pytest

from conftest import compose_cfg
from ttexp.errors import ConfigError, TtexpError
from ttexp.models.pretrained import finetune_source
from ttexp.config.validate import validate_config

LESSON_QUESTIONS = ["What is a neural network?", "How do I learn machine learning?",
                    "Explain what backpropagation does", "What's the difference between AI and ML?"]


@pytest.mark.parametrize("preset,batch,accum,val_batch,mesh,ddp", [
    ("trickster_n150", 8, 4, 2, [1, 1], False),
    ("trickster_n300", 16, 2, 4, [1, 2], True),
])
def test_trickster_presets_have_the_lessons_exact_values(preset, batch, accum, val_batch, mesh, ddp):
    cfg = compose_cfg([f"experiment={preset}"])
    t, g = cfg.training, cfg.generation
    assert cfg.task.name.value == "finetune" and cfg.model.name == "tinyllama"
    assert cfg.data.name == "trickster" and cfg.scheduler.name.value == "constant"
    assert (t.batch_size, t.gradient_accumulation_steps, t.validation_batch_size) == (batch, accum, val_batch)
    assert (t.max_steps, t.learning_rate, t.weight_decay, t.seed) == (500, 1e-4, 0.01, 42)
    assert (t.use_clip_grad_norm, t.clip_grad_norm_max_norm, t.warmup_steps) == (True, 1.0, 0)
    assert (t.validation_frequency, t.checkpoint_frequency) == (50, 100)
    assert cfg.optimizer.use_moreh_adamw and not cfg.optimizer.use_kahan_summation
    assert (g.temperature, g.top_k, g.top_p, g.repetition_penalty) == (0.0, 50, 1.0, 1.0)
    assert list(g.prompts) == LESSON_QUESTIONS
    assert list(cfg.hardware.mesh_shape) == mesh and cfg.hardware.enable_ddp == ddp
    assert cfg.data.prompt_template == "### Question:\n{prompt}\n\n### Answer:\n"
    validate_config(cfg)


def test_eval_defaults_to_the_lessons_ten_questions():
    cfg = compose_cfg(["task=eval", "eval.checkpoint=somewhere"])
    assert len(cfg.eval.questions) == 10 and list(cfg.eval.questions[:4]) == LESSON_QUESTIONS
    assert cfg.eval.questions[-1] == "What is gradient descent?" and cfg.generation.temperature == 0.0


def test_finetune_without_weights_is_an_error_that_says_how_to_get_them():
    cfg = compose_cfg(["task=finetune"])  # model=nano: no pretrained_path
    with pytest.raises(ConfigError, match="needs pretrained weights.*pretrained_path=.*init_from="):
        validate_config(cfg)
    with pytest.raises(TtexpError, match="needs pretrained weights"):
        finetune_source(cfg)


def test_finetune_from_a_directory_that_does_not_exist_is_an_error(tmp_path):
    cfg = compose_cfg(["task=finetune", f"init_from={tmp_path / 'nope'}"])
    validate_config(cfg)
    with pytest.raises(TtexpError, match="is not a directory"):
        finetune_source(cfg)


def test_finetune_needs_jsonl_eval_needs_a_checkpoint_templates_need_the_placeholder(tmp_path):
    with pytest.raises(ConfigError, match="data=shakespeare is text"):
        validate_config(compose_cfg(["task=finetune", "data=shakespeare", f"init_from={tmp_path}"]))
    with pytest.raises(ConfigError, match="task=eval needs eval.checkpoint"):
        validate_config(compose_cfg(["task=eval"]))
    with pytest.raises(ConfigError, match="must contain \\{prompt\\}"):
        validate_config(compose_cfg(["task=finetune", f"init_from={tmp_path}",
                                     "data.prompt_template=Q: A:"]))
    with pytest.raises(ConfigError, match="validation_batch_size=3 must be a positive multiple of the 2"):
        validate_config(compose_cfg(["experiment=trickster_n300", "training.validation_batch_size=3"]))
