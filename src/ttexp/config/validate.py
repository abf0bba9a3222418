"""Cross-field rules on the composed config, checked before anything runs.

Single values (finite floats, seed ranges, paths that stay in the run directory) are checked by
:mod:`ttexp.config.values`. Types and unknown keys are already checked by the schema (:mod:`ttexp.config.schema`) when Hydra
composes the config. These are the rules that involve several fields. Every broken rule is
collected and reported in one :class:`~ttexp.errors.ConfigError`, each naming the override key
and a fix.
"""

from __future__ import annotations

from typing import Any, List

from ttexp.config.schema import (
    AdapterConfig,
    AdapterName,
    GenerationConfig,
    HardwareConfig,
    ModelConfig,
    RunConfig,
    TrainingConfig,
)
from ttexp.config.values import compile_setting, value_rules
from ttexp.errors import ConfigError

GET_WEIGHTS_HINT = (
    "Download the model (config.json, *.safetensors and tokenizer files) to a directory, e.g. "
    "`hf download TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T --local-dir "
    "~/models/tinyllama` (the `hf` command comes with huggingface_hub), then set model.pretrained_path=~/models/tinyllama (or export "
    "TTEXP_TINYLLAMA_PATH). To start from a model trained with ttexp, set init_from=RUN/final_model."
)
"""How to get pretrained weights; every message about missing weights ends with it."""


def data_parallel_size(hardware: HardwareConfig) -> int:
    """Devices the global batch is split over: the mesh size when DDP is on, else 1."""
    return hardware.num_devices if hardware.enable_ddp else 1


def _model_rules(m: ModelConfig) -> List[str]:
    errs = []
    for key in ("vocab_size", "hidden_dim", "num_layers", "num_heads", "mlp_dim", "max_seq_len"):
        if getattr(m, key) <= 0:
            errs.append(f"model.{key}={getattr(m, key)} must be positive.")
    if errs:
        return errs
    if m.hidden_dim % m.num_heads:
        divisors = [h for h in range(1, m.hidden_dim + 1) if m.hidden_dim % h == 0 and h <= 64]
        errs.append(
            f"model.num_heads={m.num_heads} does not divide model.hidden_dim={m.hidden_dim}; "
            f"choose one of {divisors[-6:]}."
        )
    elif (m.hidden_dim // m.num_heads) % 2:
        errs.append(
            f"model.hidden_dim / model.num_heads = {m.hidden_dim // m.num_heads} is odd; RoPE needs "
            "an even head dimension."
        )
    kv = m.num_kv_heads
    if kv is not None and (kv <= 0 or m.num_heads % kv):
        errs.append(
            f"model.num_kv_heads={kv} must divide model.num_heads={m.num_heads} (grouped-query "
            "attention); use null for plain multi-head attention."
        )
    if not 0.0 <= m.dropout < 1.0:
        errs.append(f"model.dropout={m.dropout} must be in [0, 1).")
    if m.tokenizer not in ("byte", "pretrained"):
        errs.append(f"model.tokenizer={m.tokenizer} must be 'byte' or 'pretrained'.")
    elif m.tokenizer == "byte" and m.vocab_size < 256:
        errs.append(f"model.vocab_size={m.vocab_size} is too small for the byte tokenizer (256).")
    elif m.tokenizer == "pretrained" and not m.pretrained_path:
        errs.append("model.tokenizer=pretrained needs model.pretrained_path=DIR (or a hub id).")
    return errs


def _hardware_rules(hw: HardwareConfig) -> List[str]:
    shape = list(hw.mesh_shape)
    if len(shape) != 2 or any(int(n) < 1 for n in shape):
        return [f"hardware.mesh_shape={shape} must be two positive integers, e.g. [1, 2]."]
    devices = hw.num_devices
    errs = []
    if shape[0] != 1:
        errs.append(
            f"hardware.mesh_shape={shape}: ttml supports only [1, N] meshes; use [1, {devices}]."
        )
    if hw.enable_ddp and devices == 1:
        errs.append(
            f"hardware.enable_ddp=true needs more than one device, but hardware.mesh_shape={shape} "
            "has one. Set hardware.enable_ddp=false or use a larger mesh (e.g. hardware=n300)."
        )
    procs = hw.processes
    if procs is not None:
        dp = devices if hw.enable_ddp else 1
        if procs < 1 or dp % procs:
            errs.append(
                f"hardware.processes={procs} must divide the {dp} data-parallel devices of "
                f"mesh {shape}; use 1{', ' + str(dp) if dp > 1 else ''} or another divisor, or null."
            )
    if not hw.enable_ddp and devices > 1:
        errs.append(
            f"hardware.mesh_shape={shape} has {devices} devices but hardware.enable_ddp=false; "
            "ttexp runs multi-device meshes as data parallel only. Set hardware.enable_ddp=true, "
            "or hardware.mesh_shape=[1,1] for one device."
        )
    return errs


def _training_rules(t: TrainingConfig, dp: int, hw_name: str) -> List[str]:
    errs = []
    for key in ("max_steps", "batch_size", "gradient_accumulation_steps", "log_frequency"):
        if getattr(t, key) < 1:
            errs.append(f"training.{key}={getattr(t, key)} must be at least 1.")
    if t.learning_rate <= 0:
        errs.append(f"training.learning_rate={t.learning_rate} must be positive.")
    if t.weight_decay < 0:
        errs.append(f"training.weight_decay={t.weight_decay} must not be negative.")
    if t.batch_size >= 1 and t.batch_size % dp:
        errs.append(
            f"training.batch_size={t.batch_size} cannot be split over the {dp} data-parallel "
            f"devices of hardware={hw_name}; use a multiple of {dp} (batch_size is the global batch)."
        )
    if t.warmup_steps < 0:
        errs.append(f"training.warmup_steps={t.warmup_steps} must be >= 0 (0 = no warmup).")
    for key in ("validation_frequency", "checkpoint_frequency"):
        if getattr(t, key) < 0:
            errs.append(f"training.{key}={getattr(t, key)} must be >= 0 (0 = only at the end).")
    if t.validation_batches is not None and t.validation_batches < 1:
        errs.append(
            f"training.validation_batches={t.validation_batches} must be at least 1, or null for "
            "the whole validation split."
        )
    if t.keep_last_n is not None and t.keep_last_n < 1:
        errs.append(f"training.keep_last_n={t.keep_last_n} must be at least 1 (the newest checkpoint "
                    "is what resume=auto continues from), or null to keep all.")
    if t.keep_best_n is not None and t.keep_best_n < 0:
        errs.append(f"training.keep_best_n={t.keep_best_n} must be >= 0, or null (none kept for "
                    "being best beyond keep_last_n).")
    if t.use_clip_grad_norm and t.clip_grad_norm_max_norm <= 0:
        errs.append(
            f"training.clip_grad_norm_max_norm={t.clip_grad_norm_max_norm} must be positive "
            "(or set training.use_clip_grad_norm=false)."
        )
    try:
        compile_setting(t.compile)
    except ValueError as exc:
        errs.append(f"{exc}.")
    return errs


def _halving_rules(t: TrainingConfig, h: Any) -> List[str]:
    """training.stop_at_step and sweep.halving (rungs, keep) against training.max_steps."""
    errs = []
    stop = t.stop_at_step
    if stop is not None and not 1 <= stop <= t.max_steps:
        errs.append(f"training.stop_at_step={stop} must be in [1, training.max_steps={t.max_steps}], "
                    "or null to train to max_steps.")
    rungs = list(h.rungs)
    if rungs and (any(b <= a for a, b in zip(rungs, rungs[1:])) or rungs[0] < 1
                  or rungs[-1] >= t.max_steps):
        errs.append(f"sweep.halving.rungs={rungs} must be increasing steps in [1, training.max_steps="
                    f"{t.max_steps}); the survivors of the last rung train to max_steps.")
    if not 0 < h.keep < 1:
        errs.append(f"sweep.halving.keep={h.keep} must be a fraction in (0, 1), e.g. 0.33.")
    return errs


def _generation_rules(g: GenerationConfig) -> List[str]:
    errs = []
    if g.max_new_tokens < 1:
        errs.append(f"generation.max_new_tokens={g.max_new_tokens} must be at least 1.")
    if g.temperature < 0:
        errs.append(f"generation.temperature={g.temperature} must be >= 0 (0 = greedy).")
    if g.top_k < 0:
        errs.append(f"generation.top_k={g.top_k} must be >= 0 (0 = off).")
    if not 0 < g.top_p <= 1:
        errs.append(f"generation.top_p={g.top_p} must be in (0, 1] (1 = off).")
    if g.repetition_penalty <= 0:
        errs.append(f"generation.repetition_penalty={g.repetition_penalty} must be positive.")
    return errs


def _task_rules(cfg: RunConfig, task: str, data_format: str, dp: int) -> List[str]:
    """finetune needs weights and prompt/response data; eval needs a model; JSONL needs a template."""
    errs = []
    if task == "finetune" and data_format != "jsonl":
        errs.append(f"task=finetune trains on prompt/response pairs but data={cfg.data.name} is "
                    f"{data_format}; use data=trickster or another JSONL dataset.")
    if task == "finetune" and not cfg.model.pretrained_path and not cfg.init_from:
        errs.append(f"task=finetune needs pretrained weights, but model={cfg.model.name} has no "
                    f"model.pretrained_path and init_from is not set (ttexp never fine-tunes a "
                    f"random initialisation). {GET_WEIGHTS_HINT}")
    if task == "eval" and not cfg.eval.checkpoint:
        errs.append("task=eval needs eval.checkpoint=DIR: a final_model/, a checkpoints/step_N/ "
                    "or a run directory.")
    needs_val = task in ("scratch", "finetune")
    if needs_val and cfg.data.val_fraction <= 0 and not cfg.data.val_path:
        errs.append(f"data.val_fraction={cfg.data.val_fraction} leaves no validation data, but every "
                    "training run validates (at least at its last step); use e.g. data.val_fraction=0.1"
                    + (" or data.val_path=FILE." if data_format == "jsonl" else "."))
    if data_format == "jsonl" and "{prompt}" not in cfg.data.prompt_template:
        errs.append(f"data.prompt_template={cfg.data.prompt_template!r} must contain {{prompt}}.")
    vbs = cfg.training.validation_batch_size
    if vbs is not None and (vbs < 1 or vbs % dp):
        errs.append(f"training.validation_batch_size={vbs} must be a positive multiple of the "
                    f"{dp} data-parallel devices (it is global, like batch_size), or null.")
    return errs


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The Hugging Face Llama projections (``transformers`` ``LlamaAttention``/``LlamaMLP`` module
names) that ``adapter.target_modules`` may name; each backend translates them to its own."""
LORA_BIAS = ("none", "all", "lora_only")
"""PEFT's ``LoraConfig.bias`` choices."""


def _adapter_rules(a: AdapterConfig, task: str, backend: str = "auto") -> List[str]:
    """LoRA's numbers and names, and no LoRA on a random initialisation; on ttml, K and V
    together (every ttml Llama fuses them into one module with one adapter)."""
    if a.name != AdapterName.lora:
        return []
    errs = []
    if a.r < 1:
        errs.append(f"adapter.r={a.r} must be at least 1 (the rank of each adapter; 8 is common).")
    if not 0 <= a.lora_dropout < 1:
        errs.append(f"adapter.lora_dropout={a.lora_dropout} must be in [0, 1).")
    unknown = [m for m in a.target_modules if m not in LORA_TARGETS]
    if not a.target_modules or unknown:
        errs.append(f"adapter.target_modules={list(a.target_modules)} must name one or more Llama "
                    f"projections of {list(LORA_TARGETS)} (Hugging Face names); e.g. "
                    "adapter.target_modules=[q_proj,v_proj].")
    if a.bias not in LORA_BIAS:
        errs.append(f"adapter.bias={a.bias} must be one of {list(LORA_BIAS)}.")
    if backend == "ttml" and len({"k_proj", "v_proj"} & set(a.target_modules)) == 1:
        errs.append(f"adapter.target_modules={list(a.target_modules)} on backend=ttml: ttml's Llama "
                    "fuses K and V into one kv_linear (or qkv_linear) that takes one adapter, so "
                    "name k_proj and v_proj together, e.g. adapter.target_modules=[q_proj,k_proj,"
                    "v_proj] (tt-train's lora_configs/tinyllama.yaml), or use backend=torch.")
    if task == "scratch":
        # LoRA trains a low-rank change to frozen weights: on a random initialisation the frozen
        # part is noise and stays noise, so the run would learn a fraction of what it could.
        errs.append("adapter=lora freezes the model's weights and trains low-rank changes to them, "
                    "which only makes sense on pretrained weights; task=scratch starts from a "
                    "random initialisation. Use adapter=none for task=scratch, or task=finetune "
                    "with model.pretrained_path=DIR for LoRA.")
    return errs


def config_warnings(cfg: RunConfig) -> List[str]:
    """Settings that are legal but probably not what the user meant (logged, never fatal)."""
    t, out = cfg.training, []
    if t.max_steps >= 1 and t.warmup_steps >= t.max_steps:
        out.append(f"training.warmup_steps={t.warmup_steps} >= training.max_steps={t.max_steps}: the "
                   f"learning rate never reaches its peak {t.learning_rate:g} (it ends at "
                   f"{t.learning_rate * t.max_steps / t.warmup_steps:.3g}). Lower "
                   "training.warmup_steps if you meant it to.")
    for key, what in (("validation_frequency", "validation runs"),
                      ("checkpoint_frequency", "checkpoints are written")):
        if getattr(t, key) > t.max_steps:
            out.append(f"training.{key}={getattr(t, key)} exceeds training.max_steps={t.max_steps}: "
                       f"{what} only at the end" + (" (final model only)." if key.startswith("check") else "."))
    return out


def validate_config(cfg: RunConfig) -> None:
    """Check every cross-field rule and raise once with all the problems.

    Raises:
        ConfigError: one or more rules are broken; the message lists each with its fix.
    """
    errs = _model_rules(cfg.model) + _hardware_rules(cfg.hardware)
    dp = data_parallel_size(cfg.hardware) if not _hardware_rules(cfg.hardware) else 1
    errs += _training_rules(cfg.training, dp, cfg.hardware.name)
    errs += _generation_rules(cfg.generation)
    if not 0 <= cfg.data.val_fraction < 1:
        errs.append(f"data.val_fraction={cfg.data.val_fraction} must be in [0, 1).")
    pin = cfg.sweep.pin_devices
    if pin is not None and pin < 1:
        errs.append(f"sweep.pin_devices={pin} must be at least 1 (the number of local devices), or null.")
    elif pin is not None and not _hardware_rules(cfg.hardware) and \
            cfg.hardware.num_devices != 1:
        errs.append(f"sweep.pin_devices={pin} gives each sweep job one device, but hardware="
                    f"{cfg.hardware.name} is a mesh of several; use hardware=n150 (or p150) for "
                    "the jobs, or unset sweep.pin_devices.")
    if cfg.sweep.recoveries < 0:
        errs.append(f"sweep.recoveries={cfg.sweep.recoveries} must be 0 (a killed joblib worker stops "
                    "the sweep) or more (how many times the sweep replaces its process pool).")
    errs += _halving_rules(cfg.training, cfg.sweep.halving)
    if not 0 <= cfg.scheduler.min_lr_ratio <= 1:
        errs.append(f"scheduler.min_lr_ratio={cfg.scheduler.min_lr_ratio} must be in [0, 1].")
    task, data_format = cfg.task.name.value, cfg.data.format.value
    if task == "scratch" and data_format != "text":
        errs.append(
            f"task=scratch trains on a text corpus but data={cfg.data.name} is {data_format}; "
            "use data=shakespeare or another text corpus."
        )
    if cfg.resume and cfg.init_from:
        errs.append("resume and init_from are both set; resume continues a run (weights, optimizer, "
                    "step), init_from starts a new one from weights only. Choose one.")
    errs += _task_rules(cfg, task, data_format, dp)
    errs += _adapter_rules(cfg.adapter, task, getattr(cfg.backend, "value", str(cfg.backend)))
    errs += value_rules(cfg)
    if errs:
        raise ConfigError(
            "The configuration is invalid:\n" + "\n".join(f"  - {e}" for e in errs)
        )
