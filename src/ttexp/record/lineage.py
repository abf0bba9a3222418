"""Where a trained model came from, read back from the record its run left: a run directory's
``resolved.yaml`` and ``result.json``, and the ``ttexp_origin.json`` of its ``final_model/``.

``task=eval`` uses it to load a checkpoint with the architecture and tokenizer it was trained with,
and to find the base a fine-tune started from (``eval.compare_to=base``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

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
    path = path.resolve() if path.is_symlink() else path  # RUN/best -> RUN/checkpoints/step_N
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
    path = path.resolve() if path.is_symlink() else path  # RUN/best -> RUN/checkpoints/step_N
    for model_dir, run_dir in ((path, path.parent), (path / "final_model", path),
                               (path.parent.parent / "final_model", path.parent.parent)):
        origin = read_origin(model_dir)
        if origin and origin.get("base_model"):
            return origin["base_model"]
        result = _result(run_dir)
        if result.task == "finetune" and result.base_model:
            return result.base_model
    return None


EVAL_INPUTS_KEY = "eval_inputs"
"""The key of ttexp_origin.json that holds :func:`eval_inputs` of the fine-tune."""
_DATA_KEYS = ("name", "format", "path", "filename", "url", "sha256", "val_path", "val_fraction",
              "prompt_template")
_DECODING_KEYS = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed")


def eval_inputs(cfg: Any) -> dict[str, Any]:
    """What ``task=eval`` needs to repeat a run's own evaluation: the model's name, the data
    section (file, held-out split, template), the split seed, the questions (the run's validation
    prompts) and its decoding settings. ``cfg`` is a :class:`RunConfig` or a run's resolved.yaml."""
    plain = lambda v: getattr(v, "value", v)  # noqa: E731 - an Enum's value
    return {"model_name": cfg.model.name,
            "data": {k: plain(getattr(cfg.data, k, None)) for k in _DATA_KEYS},
            "seed": int(cfg.training.seed),
            "questions": [str(q) for q in cfg.generation.prompts],
            "generation": {k: plain(getattr(cfg.generation, k)) for k in _DECODING_KEYS}}


def recorded_eval_inputs(path: Path) -> Optional[dict[str, Any]]:
    """:func:`eval_inputs` of the run that trained the model at ``path`` (a final_model/, a
    checkpoint, the run's ``best`` link or a run directory): from the model's ttexp_origin.json,
    else from its run's resolved.yaml; None when neither is there (a model not made by ttexp)."""
    path = Path(path).expanduser().resolve()
    for model_dir, run_dir in ((path, path.parent), (path / "final_model", path),
                               (path.parent.parent / "final_model", path.parent.parent)):
        recorded = (read_origin(model_dir) or {}).get(EVAL_INPUTS_KEY)
        if recorded:
            return recorded
        resolved = run_dir / "resolved.yaml"
        if resolved.is_file():
            try:
                return eval_inputs(load_yaml_literal(resolved))
            except (AttributeError, KeyError, TypeError, ValueError):
                return None
    return None
