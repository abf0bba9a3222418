"""The one mapping between model.* keys and Hugging Face Llama configs, both ways."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import compose_cfg
from ttexp.errors import TtexpError
from ttexp.models.hf import (MODEL_TO_HF, hf_from_model_keys, llama_config, model_keys_from_hf,
                             read_hf_config, spec_from_hf)
from ttexp.models.spec import ARCHITECTURE_KEYS, ModelSpec

SPEC = ModelSpec(name="t", vocab_size=300, hidden_dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                 mlp_dim=64, max_seq_len=128, rope_theta=5000.0, rms_norm_eps=1e-5,
                 tie_word_embeddings=False, dropout=0.1, init_std=0.01)


def test_every_architecture_key_has_a_hugging_face_name():
    assert set(ARCHITECTURE_KEYS) <= set(MODEL_TO_HF)


@pytest.mark.parametrize("model", ["nano", "tinyllama"])
def test_model_keys_round_trip_through_config_json(model):
    m = compose_cfg([f"model={model}"]).model
    keys = {k: getattr(m, k) for k in (*ARCHITECTURE_KEYS, "dropout")}
    assert model_keys_from_hf(hf_from_model_keys(keys)) == keys


def test_llama_config_round_trips_to_the_same_spec(tmp_path):
    cfg = llama_config(SPEC)
    assert (cfg.hidden_size, cfg.num_key_value_heads, cfg.initializer_range) == (32, 2, 0.01)
    cfg.save_pretrained(str(tmp_path))  # transformers 5 nests rope_theta in rope_parameters
    hf = read_hf_config(tmp_path)
    assert model_keys_from_hf(hf)["rope_theta"] == 5000.0
    assert spec_from_hf(hf, name="t") == dataclasses.replace(SPEC, dropout=0.0, init_std=0.02)


def test_equal_kv_heads_read_as_null_and_write_back_as_num_heads():
    mha = dataclasses.replace(SPEC, num_kv_heads=4)
    hf = llama_config(mha).to_dict()
    assert model_keys_from_hf(hf)["num_kv_heads"] is None
    assert hf_from_model_keys({"num_heads": 4, "num_kv_heads": None})["num_key_value_heads"] == 4
    assert spec_from_hf(hf, name="t").num_kv_heads == 4


def test_an_older_config_json_takes_llamaconfigs_defaults():
    hf = {"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
          "intermediate_size": 16}
    spec = spec_from_hf(hf, name="old")
    assert (spec.max_seq_len, spec.rope_theta, spec.rms_norm_eps, spec.tie_word_embeddings,
            spec.num_kv_heads) == (2048, 10000.0, 1e-6, False, 2)


def test_other_model_types_and_incomplete_configs_are_refused():
    with pytest.raises(TtexpError, match="holds a gpt2 model"):
        model_keys_from_hf({"model_type": "gpt2"}, source="x/config.json")
    with pytest.raises(TtexpError, match="lacks hidden_size"):
        spec_from_hf({"vocab_size": 10, "num_hidden_layers": 1, "num_attention_heads": 2,
                      "intermediate_size": 16}, name="x")


def test_a_missing_config_json_is_a_clear_error(tmp_path):
    with pytest.raises(TtexpError, match="Is .* a model directory"):
        read_hf_config(tmp_path)
