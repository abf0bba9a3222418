"""Shared fixtures: the real composed config, shrunk; the Shakespeare corpus from ../shared/data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf, open_dict

from ttexp.schema import register_configs

ROOT = Path(__file__).resolve().parents[1]

# A model small enough to train in seconds on 2 CPU cores (the nano shape, shrunk).
TINY_MODEL = [
    "model.hidden_dim=32", "model.num_layers=2", "model.num_heads=4", "model.mlp_dim=64",
    "model.max_seq_len=32", "model.dropout=0.0",
]


def shakespeare() -> Path:
    """The corpus: $TTEXP_TEST_CORPUS, else ../shared/data beside the project (CI's layout)."""
    candidates = [os.environ.get("TTEXP_TEST_CORPUS"), ROOT.parent / "shared/data/tinyshakespeare.txt"]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    pytest.fail("Tiny Shakespeare not found: set TTEXP_TEST_CORPUS=FILE or put shared/ beside the project.")


@pytest.fixture(scope="session")
def corpus() -> Path:
    return shakespeare()


def compose_cfg(overrides: list[str], output_dir: Path | None = None):
    """Compose the real config (no Hydra run), with name and output_dir made concrete."""
    register_configs()
    with initialize_config_module(config_module="ttexp.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with open_dict(cfg):
        cfg.name = "test"
        cfg.output_dir = str(output_dir) if output_dir else "unused"
    return cfg


@pytest.fixture
def tiny_cfg(tmp_path, corpus):
    """A composed scratch run on a tiny model, writing into tmp_path/run."""
    def make(*extra: str):
        return compose_cfg([
            f"data.path={corpus}", *TINY_MODEL, "training.max_steps=4", "training.batch_size=4",
            "training.gradient_accumulation_steps=1", "training.warmup_steps=1",
            "training.validation_frequency=2", "training.validation_batches=2",
            "training.checkpoint_frequency=2", "training.log_frequency=1",
            "generation.max_new_tokens=8", *extra,
        ], tmp_path / "run")
    return make


def run_cli(args: list[str], cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m ttexp ARGS`` in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "ttexp", *args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def to_yaml(cfg) -> str:
    return OmegaConf.to_yaml(cfg)
