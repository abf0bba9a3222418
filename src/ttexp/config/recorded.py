"""The name of a model that ttexp trained, read from what its run left on disk: the OmegaConf
resolver ``ttexp_model_name`` that names an evaluation's run directory after the model it
evaluates (conf/task/eval.yaml: ``eval-<model>-<hardware>``, not the default model's name).

    python -m ttexp task=eval eval.checkpoint=RUN/final_model   # -> outputs/runs/.../<time>_eval-tinyllama-n150
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import yaml

ORIGIN_FILE = "ttexp_origin.json"
"""The file a fine-tune writes into final_model/ (``ttexp.models.pretrained.ORIGIN_NAME`` is this)."""


def recorded_model_name(checkpoint: Any, default: Any) -> str:
    """The model name recorded for ``checkpoint`` (a final_model/, a checkpoint, a run's ``best``
    link or a run directory): its ttexp_origin.json, else its run's resolved.yaml; ``default``
    when there is none or ``checkpoint`` is unset. Reads files only; never raises."""
    if not checkpoint:
        return str(default)
    path = Path(str(checkpoint)).expanduser()
    try:
        path = path.resolve()
    except OSError:
        return str(default)
    for model_dir, run_dir in ((path, path.parent), (path / "final_model", path),
                               (path.parent.parent / "final_model", path.parent.parent)):
        name = _from_origin(model_dir / ORIGIN_FILE) or _from_resolved(run_dir / "resolved.yaml")
        if name:
            return name
    return str(default)


def _from_origin(path: Path) -> Optional[str]:
    try:
        return json.loads(path.read_text())["eval_inputs"]["model_name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _from_resolved(path: Path) -> Optional[str]:
    try:
        return str(yaml.safe_load(path.read_text(encoding="utf-8"))["model"]["name"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
