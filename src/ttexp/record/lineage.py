"""Where a trained model came from, read back from the record its run left: a run directory's
``resolved.yaml`` and ``result.json``, and the ``ttexp_origin.json`` of its ``final_model/``.

``task=eval`` uses it to load a checkpoint with the architecture and tokenizer it was trained with,
and to find the base a fine-tune started from (``eval.compare_to=base``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ttexp.config.convert import load_yaml_literal
from ttexp.errors import TtexpError
from ttexp.models.adapter import is_adapter_dir, read_adapter_config
from ttexp.models.pretrained import ModelSource, is_model_dir, read_origin
from ttexp.record.result import RunResult


def checkpoint_source(path: Path) -> ModelSource:
    """The source of a model to evaluate: a model directory, a ``checkpoints/step_N/`` directory
    (architecture and tokenizer from the run that wrote it) or a run directory (its final_model/).

    Raises:
        TtexpError: the path holds no model, or its run's record cannot be read.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise TtexpError(f"eval.checkpoint={path} is not a directory: give a final_model/, a "
                         "checkpoints/step_N/ or a run directory.")
    if is_adapter_dir(path):
        return adapter_source(path)
    if is_model_dir(path):
        return ModelSource(model_dir=path)
    if is_model_dir(path / "final_model"):
        return ModelSource(model_dir=path / "final_model")
    if not (path / "model.safetensors").is_file():
        raise TtexpError(f"{path} holds no model (no config.json, no model.safetensors).")
    run_dir = path.parent.parent
    resolved = run_dir / "resolved.yaml"
    if not resolved.is_file():
        raise TtexpError(f"{path} is a bare weights file without its run's resolved.yaml in "
                         f"{run_dir}; evaluate the run's final_model/ instead.")
    run_cfg = load_yaml_literal(resolved)  # a file on disk resolves nothing
    origin = read_origin(run_dir / "final_model") or _result(run_dir).model_source or {}
    model_dir = origin.get("model_dir")
    return ModelSource(model_dir=Path(model_dir) if model_dir else None, weights_dir=path,
                       model_cfg=run_cfg.model)


def adapter_source(path: Path) -> ModelSource:
    """A PEFT LoRA adapter directory (``final_model/adapter/`` or a LoRA checkpoint) on its base:
    the base its ``adapter_config.json`` names (``base_model_name_or_path``), else the one its
    run recorded.

    Raises:
        TtexpError: the adapter config is unreadable, or no base can be found for it.
    """
    base = read_adapter_config(path).get("base_model_name_or_path")
    if not base or not Path(base).expanduser().exists():
        for run_dir in (path.parent.parent, path.parent.parent.parent):
            origin = read_origin(run_dir / "final_model") or _result(run_dir).model_source or {}
            if origin.get("model_dir"):
                base = origin["model_dir"]
                break
    if not base:
        raise TtexpError(f"{path} is a LoRA adapter whose base model is not recorded; evaluate "
                         "the merged final_model/ instead, or load it with PEFT onto its base.")
    return ModelSource(model_dir=Path(base).expanduser(), adapter_dir=path)


def _result(run_dir: Path) -> RunResult:
    """The run's result.json, or an empty one when it has none."""
    return RunResult.read(run_dir) or RunResult(status="unknown")


def base_of(path: Path) -> Optional[str]:
    """The model a fine-tuned model (final_model/, checkpoint or run dir) was fine-tuned from, as
    its run recorded it; None when there is none (trained from scratch, or not by ttexp)."""
    path = Path(path).expanduser()
    for model_dir, run_dir in ((path, path.parent), (path / "final_model", path),
                               (path.parent.parent / "final_model", path.parent.parent)):
        origin = read_origin(model_dir)
        if origin and origin.get("base_model"):
            return origin["base_model"]
        result = _result(run_dir)
        if result.task == "finetune" and result.base_model:
            return result.base_model
    return None
