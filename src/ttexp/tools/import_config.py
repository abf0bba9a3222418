"""Turn a tt-train or lesson YAML config into a ttexp experiment preset.

    python -m ttexp.import_config configs/trickster_n150.yaml -o experiments/trickster_n150.yaml
    python -m ttexp.import_config training_shakespeare_nanogpt.yaml --name shakespeare
    python -m ttexp experiment=trickster_n150          # then run it

Reads the sections tt-train and the lessons use (reference/ttml_api.md §6,
reference/lessons_and_templates.md §2.2, §2.8): ``training_config`` (flat optimizer keys, or
tt-train's nested ``optimizer: {type, lr, ...}`` block), ``device_config``, ``eval_config``,
``transformer_config`` / the lessons' ``model_config``, ``scheduler_config``. The lessons' aliases
(``eval_every``, ``eval_interval``, ``model_save_interval``, ``save_interval``, ``grad_clip``,
``log_interval``, ``mlp_dim``, ``num_groups`` ...) are mapped here, in one place. Every key that
has no ttexp equivalent is listed, in the preset's header and on stderr; nothing is dropped
silently.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from ttexp.errors import TtexpError

MESH_PRESETS = {(1, 1): "n150", (1, 2): "n300", (1, 8): "t3k", (1, 32): "galaxy"}
MODEL_PRESETS = ("nano", "mini", "midi", "mega", "tinyllama")

# source key -> ttexp key; the first alias present wins (so list the canonical one first)
TRAINING_KEYS: dict[str, tuple[str, ...]] = {
    "training.seed": ("seed",),
    "training.batch_size": ("batch_size",),
    "training.max_steps": ("max_steps",),
    "training.gradient_accumulation_steps": ("gradient_accumulation_steps",),
    "training.learning_rate": ("learning_rate",),
    "training.weight_decay": ("weight_decay",),
    "training.warmup_steps": ("warmup_steps",),
    "training.validation_frequency": ("validation_frequency", "eval_every", "eval_interval"),
    "training.checkpoint_frequency": ("checkpoint_frequency", "model_save_interval", "save_interval"),
    "training.log_frequency": ("log_interval", "log_frequency"),
    "training.keep_best_n": ("keep_best_n",),
    "training.keep_last_n": ("keep_last_n",),
    "training.use_clip_grad_norm": ("use_clip_grad_norm",),
    "training.clip_grad_norm_max_norm": ("clip_grad_norm_max_norm", "grad_clip"),
    "optimizer.beta1": ("beta1",),
    "optimizer.beta2": ("beta2",),
    "optimizer.eps": ("eps", "epsilon"),
    "optimizer.use_moreh_adamw": ("use_moreh_adamw",),
    "optimizer.use_kahan_summation": ("use_kahan_summation",),
    "data.path": ("data_path",),
}
MODEL_KEYS: dict[str, tuple[str, ...]] = {
    "model.vocab_size": ("vocab_size",),
    "model.hidden_dim": ("hidden_dim", "embedding_dim"),
    "model.num_layers": ("num_layers", "num_blocks"),
    "model.num_heads": ("num_heads",),
    "model.num_kv_heads": ("num_kv_heads", "num_groups"),
    "model.mlp_dim": ("mlp_dim", "intermediate_dim"),
    "model.max_seq_len": ("max_seq_len", "max_sequence_length"),
    "model.rope_theta": ("theta", "rope_theta"),
    "model.dropout": ("dropout", "dropout_prob"),
}
EVAL_KEYS = {f"generation.{k}": (k,) for k in ("temperature", "top_k", "top_p", "repetition_penalty")}
NESTED_OPTIMIZER = {"lr": "training.learning_rate", "beta1": "optimizer.beta1", "beta2": "optimizer.beta2",
                    "epsilon": "optimizer.eps", "eps": "optimizer.eps", "weight_decay": "training.weight_decay"}
SCHEDULERS = {"identity": "constant", "constant": "constant", "warmup_linear": "warmup_linear",
              "warmup_cosine": "warmup_cosine", "cosine": "warmup_cosine"}


class Conversion:
    """The preset being built: group choices, key values, and what could not be mapped."""

    def __init__(self) -> None:
        self.groups: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self.unmapped: list[str] = []

    def take(self, section: str, src: dict, table: dict[str, tuple[str, ...]]) -> set[str]:
        """Copy into :attr:`values` each ttexp key of ``table`` found under one of its aliases in
        ``src``; a second alias with another value is recorded as unmapped. Returns the aliases used."""
        used = set()
        for dest, aliases in table.items():
            for alias in aliases:
                if alias in src:
                    used.add(alias)
                    if dest not in self.values:
                        self.values[dest] = src[alias]
                    elif self.values[dest] != src[alias]:
                        self.unmapped.append(f"{section}.{alias}={src[alias]!r} (conflicts with "
                                             f"{dest}={self.values[dest]!r} from another alias)")
        return used

    def skip(self, section: str, src: dict, used: set[str]) -> None:
        """Record every key of ``src`` not in ``used`` as unmapped (``section.key=value``)."""
        self.unmapped += [f"{section}.{k}={v!r}" for k, v in src.items() if k not in used]


def _optimizer_block(c: Conversion, opt: dict) -> None:
    used = {"type"}
    kind = str(opt.get("type", "AdamW"))
    if kind in ("AdamW", "MorehAdamW", "AdamWComposite"):
        c.values["optimizer.use_moreh_adamw"] = kind == "MorehAdamW"
        c.values["optimizer.use_kahan_summation"] = bool(opt.get("kahan_summation", kind == "AdamWComposite"))
        used.add("kahan_summation")
    else:
        c.unmapped.append(f"training_config.optimizer.type={kind!r} (ttexp trains with AdamW)")
    for key, dest in NESTED_OPTIMIZER.items():
        if key in opt:
            c.values[dest] = opt[key]
            used.add(key)
    for key in ("amsgrad", "stochastic_rounding"):
        if key in opt and opt[key] is False:
            used.add(key)  # false is what ttexp does
    c.skip("training_config.optimizer", opt, used)


def _training(c: Conversion, tc: dict) -> None:
    used = c.take("training_config", tc, TRAINING_KEYS)
    if "grad_clip" in tc and "use_clip_grad_norm" not in tc:
        c.values["training.use_clip_grad_norm"] = float(tc["grad_clip"]) > 0
    if isinstance(tc.get("optimizer"), dict):
        _optimizer_block(c, tc["optimizer"])
        used.add("optimizer")
    if "scheduler_type" in tc:
        name = SCHEDULERS.get(str(tc["scheduler_type"]))
        if name:
            c.groups["scheduler"] = name
            used.add("scheduler_type")
    if "model_config" in tc and isinstance(tc["model_config"], str):
        stem = Path(tc["model_config"]).stem
        if stem in MODEL_PRESETS:
            c.groups["model"] = stem
            used.add("model_config")
    if str(tc.get("model_type", "llama")) == "llama":
        used.add("model_type")
    if isinstance(tc.get("transformer_config"), dict):  # the oldest layout nested it here
        _model(c, tc["transformer_config"], "training_config.transformer_config")
        used.add("transformer_config")
    c.skip("training_config", tc, used)


def _model(c: Conversion, mc: dict, section: str) -> None:
    used = c.take(section, mc, MODEL_KEYS)
    if "weight_tying" in mc:
        c.values["model.tie_word_embeddings"] = str(mc["weight_tying"]).lower() == "enabled"
        used.add("weight_tying")
    if str(mc.get("model_type", "llama")) == "llama":
        used.add("model_type")
    c.skip(section, mc, used)


def _device(c: Conversion, dc: dict) -> None:
    used = set()
    if "mesh_shape" in dc:
        shape = tuple(int(n) for n in dc["mesh_shape"])
        preset = MESH_PRESETS.get(shape)
        if preset:
            c.groups["hardware"] = preset
            used.add("mesh_shape")
            ddp = dc.get("enable_ddp")
            if ddp is None or bool(ddp) == (shape[1] > 1):
                used.add("enable_ddp")
    c.skip("device_config", dc, used)


def convert(source: dict, name: str) -> Conversion:
    """Map a parsed tt-train / lesson config to a preset (see the module docstring).

    Raises:
        TtexpError: ``source`` has none of the known sections.
    """
    known = ("training_config", "device_config", "eval_config", "transformer_config", "model_config",
             "scheduler_config")
    if not isinstance(source, dict) or not any(k in source for k in known):
        raise TtexpError(f"No tt-train sections ({', '.join(known)}) in the file; is it a tt-train or "
                         "lesson config?")
    c = Conversion()
    c.values["name"] = name
    _training(c, dict(source.get("training_config") or {}))
    for section in ("transformer_config", "model_config"):
        if isinstance(source.get(section), dict):
            _model(c, source[section], section)
    _device(c, dict(source.get("device_config") or {}))
    if isinstance(source.get("eval_config"), dict):
        used = c.take("eval_config", source["eval_config"], EVAL_KEYS)
        c.skip("eval_config", source["eval_config"], used)
    sc = dict(source.get("scheduler_config") or {})
    used = set()
    if "warmup_steps" in sc and "training.warmup_steps" not in c.values:
        c.values["training.warmup_steps"], _ = sc["warmup_steps"], used.add("warmup_steps")
    if "max_lr" in sc and "training.learning_rate" not in c.values:
        c.values["training.learning_rate"], _ = sc["max_lr"], used.add("max_lr")
    c.skip("scheduler_config", sc, used)
    for key, value in source.items():
        if key not in known:
            c.unmapped.append(f"{key}: {value!r}")
    c.groups.setdefault("model", "tinyllama" if c.values.get("model.vocab_size") == 32000 else "nano")
    c.groups.setdefault("task", "finetune" if c.groups["model"] == "tinyllama" else "scratch")
    if "scheduler" not in c.groups and c.values.get("training.warmup_steps"):
        c.groups["scheduler"] = "warmup_cosine"
    return c


def to_yaml(c: Conversion, source_path: str) -> str:
    """The preset text: ``# @package _global_``, group overrides, nested values, unmapped keys."""
    nested: dict[str, Any] = {}
    for key, value in c.values.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    order = ("model", "hardware", "task", "scheduler")
    defaults = [{f"override /{g}": c.groups[g]} for g in order if g in c.groups]
    head = ["# @package _global_", f"# Imported from {source_path} by python -m ttexp.import_config.",
            f"#   python -m ttexp experiment={c.values['name']}"]
    if c.unmapped:
        head.append("# Not mapped (no ttexp equivalent):")
        head += [f"#   {u}" for u in c.unmapped]
    body = yaml.safe_dump({"defaults": defaults, **nested}, sort_keys=False, default_flow_style=False)
    return "\n".join(head) + "\n" + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ttexp.import_config", description=__doc__.split("\n")[0])
    parser.add_argument("file", help="a tt-train or lesson YAML config")
    parser.add_argument("-o", "--output", help="write the preset here (default: stdout)")
    parser.add_argument("--name", help="the preset's name (default: the file's stem)")
    args = parser.parse_args(argv)
    path = Path(args.file)
    try:
        source = yaml.safe_load(path.read_text())
        conv = convert(source, args.name or path.stem)
    except (OSError, yaml.YAMLError, TtexpError) as exc:
        print(f"Cannot import {path}: {exc}", file=sys.stderr)
        return 1
    text = to_yaml(conv, str(path))
    if args.output:
        Path(args.output).write_text(text)
        print(f"Wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    for u in conv.unmapped:
        print(f"not mapped: {u}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
