"""training.activation_checkpointing on the torch backend: the same losses, the plan recorded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import compose_cfg, log_to, run_cfg  # noqa: E402


def _losses(run_dir: Path) -> list[float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


def test_checkpointing_recomputes_the_same_losses_and_the_plan_is_recorded(tmp_path, corpus):
    results = {}
    for on in (False, True):
        out = tmp_path / str(on)
        cfg = compose_cfg(["debug=fast", f"data.path={corpus}", "training.precision=fp32",
                           f"training.activation_checkpointing={str(on).lower()}"], out)
        with log_to(tmp_path / f"{on}.log"):
            results[on] = (run_cfg(cfg), out)
    (plain, plain_dir), (ckpt, ckpt_dir) = results[False], results[True]
    assert plain["status"] == ckpt["status"] == "completed"
    assert _losses(ckpt_dir) == _losses(plain_dir)  # recomputation is exact on CPU
    assert ckpt["memory"]["activation_checkpointing"] is True
    assert ckpt["memory"]["fits"] is True and ckpt["memory"]["total"] < plain["memory"]["total"]
    log = (tmp_path / "True.log").read_text()
    assert "Memory plan per device (fp32" in log and "training.activation_checkpointing=on" in log
