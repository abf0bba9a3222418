"""Model directories as starting points: architecture from config.json, clear errors, recorded bases."""

from __future__ import annotations

import json

import pytest

from conftest import compose_cfg
from ttexp.errors import TtexpError
from ttexp.record.lineage import base_of, checkpoint_source
from ttexp.config.convert import to_run_config
from ttexp.models.pretrained import ORIGIN_NAME, finetune_source, load_tokenizer
from ttexp.tasks import finetune


def test_the_model_config_follows_the_directorys_config_json(tiny_llama_dir):
    given = to_run_config(compose_cfg(["task=finetune", f"model.pretrained_path={tiny_llama_dir}"]))
    cfg = finetune.resolve(given)
    assert given.model.hidden_dim == 256  # resolving returns a new config; the given one is kept
    m = cfg.model
    assert (m.hidden_dim, m.num_layers, m.num_heads, m.num_kv_heads, m.mlp_dim, m.max_seq_len) == (32, 2, 4, 2, 64, 256)
    assert m.tie_word_embeddings is False and m.vocab_size == len(load_tokenizer(tiny_llama_dir).inner)


def test_init_from_a_model_directory_takes_its_weights_shape_and_tokenizer(tiny_llama_dir):
    source = finetune_source(compose_cfg(["task=finetune", f"init_from={tiny_llama_dir}"]))
    assert source.model_dir == tiny_llama_dir and source.weights == tiny_llama_dir


def test_init_from_a_directory_without_weights_is_refused(tmp_path):
    with pytest.raises(TtexpError, match="neither config.json nor model.safetensors"):
        finetune_source(compose_cfg(["task=finetune", f"init_from={tmp_path}"]))


def test_checkpoint_source_rejects_what_holds_no_model(tmp_path):
    with pytest.raises(TtexpError, match="is not a directory"):
        checkpoint_source(tmp_path / "absent")
    with pytest.raises(TtexpError, match="holds no model"):
        checkpoint_source(tmp_path)


def test_base_of_reads_the_origin_a_finetune_wrote(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "final_model").mkdir(parents=True)
    (run_dir / "checkpoints/step_5").mkdir(parents=True)
    assert base_of(run_dir / "final_model") is None  # nothing recorded: e.g. trained from scratch
    (run_dir / "final_model" / ORIGIN_NAME).write_text(json.dumps({"base_model": "/models/base"}))
    for path in (run_dir / "final_model", run_dir, run_dir / "checkpoints/step_5"):
        assert base_of(path) == "/models/base"
