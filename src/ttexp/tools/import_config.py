"""Turn a tt-train or lesson YAML config into a ttexp experiment preset.

    python -m ttexp.import_config training_shakespeare_nanollama3.yaml -o experiments/shakespeare.yaml
    python -m ttexp experiment=shakespeare          # the command the preset's header prints

Reads tt-train's and the lessons' sections (reference/ttml_api.md §6, lessons_and_templates.md §2.2,
§2.8): training_config (flat optimizer keys or the nested ``optimizer:`` block), device_config,
eval_config, transformer_config / model_config, scheduler_config; the lessons' aliases (eval_every,
save_interval, grad_clip, num_groups ...) are mapped in one place. Every key with no ttexp equivalent
is listed in the preset's header and on stderr; nothing is dropped silently.
Checked against tenstorrent/tt-metal tt-train/configs/ (commit abbreviations): training_configs/
training_shakespeare_nanogpt.yaml @0385722, _nanollama3.yaml @0d3cba3, training_gsm8k_tinyllama.yaml
@03730d7 (scheduler_config: max_lr, min_lr, warmup_steps, hold_steps), training_shakespeare_qwen3_17b
.yaml @23a79f5 (nested optimizer; model_config "${TT_METAL_RUNTIME_ROOT}/tt-train/configs/..."),
training_shakespeare_llama3_2_1B_fixed.yaml @8dad25a ("configs/model_configs/..."); model_configs/
nanogpt.yaml @23704ad (model_type gpt2) and nanollama3.yaml @3545b84; device_configs/n300_ddp.yaml
@3545b84; lora_configs/default_lora.yaml @6653423 (lora_config: not mapped, ttexp has no LoRA).
Resolution and scheduler defaults (min_lr 0, hold_steps 0): sources/ttml/ttml/common/config.py @0036c3e.
A ``model_config`` is looked for as given (``${VAR}`` expanded), relative to the file's folder and its
parents (and their ``model_configs/``), then under ``$TT_METAL_RUNTIME_ROOT`` / ``$TT_METAL_HOME``
``/tt-train/configs/``; its ``transformer_config`` becomes ``model.*``. Not found: a shipped model preset
of the same stem, else the import says it cannot and keeps the default model.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ttexp.config.experiments_source import experiments_dir
from ttexp.errors import TtexpError
from ttexp.tools.import_sections import optimizer_block, scheduler_block

MESH_PRESETS = {(1, 1): "n150", (1, 2): "n300", (1, 8): "t3k", (1, 32): "galaxy"}
MODEL_PRESETS = ("nano", "mini", "midi", "mega", "tinyllama")
GPT2 = ("tt-train's GPT-2-style nanogpt (model_type gpt2: LayerNorm, learned position embeddings, "
        "GELU MLP); ttexp builds only the Llama family (RMSNorm, RoPE, SwiGLU)")

# source key -> ttexp key; the first alias present wins (so list the canonical one first)
TRAINING_KEYS: dict[str, tuple[str, ...]] = {
    **{f"training.{k}": (k,) for k in (
        "seed", "batch_size", "validation_batch_size", "max_steps", "gradient_accumulation_steps",
        "learning_rate", "weight_decay", "warmup_steps", "keep_best_n", "keep_last_n", "use_clip_grad_norm")},
    "training.validation_frequency": ("validation_frequency", "eval_every", "eval_interval"),
    "training.checkpoint_frequency": ("checkpoint_frequency", "model_save_interval", "save_interval"),
    "training.log_frequency": ("log_interval", "log_frequency"),
    "training.clip_grad_norm_max_norm": ("clip_grad_norm_max_norm", "grad_clip"),
    "optimizer.beta1": ("beta1",), "optimizer.beta2": ("beta2",), "optimizer.eps": ("eps", "epsilon"),
    "optimizer.use_moreh_adamw": ("use_moreh_adamw",), "optimizer.use_kahan_summation": ("use_kahan_summation",),
    "data.path": ("data_path",),
}
MODEL_KEYS: dict[str, tuple[str, ...]] = {
    "model.vocab_size": ("vocab_size",), "model.hidden_dim": ("hidden_dim", "embedding_dim"),
    "model.num_layers": ("num_layers", "num_blocks"), "model.num_heads": ("num_heads",),
    "model.num_kv_heads": ("num_kv_heads", "num_groups"), "model.mlp_dim": ("mlp_dim", "intermediate_dim"),
    "model.max_seq_len": ("max_seq_len", "max_sequence_length"), "model.rope_theta": ("theta", "rope_theta"),
    "model.dropout": ("dropout", "dropout_prob"),
}
EVAL_KEYS = {f"generation.{k}": (k,) for k in ("temperature", "top_k", "top_p", "repetition_penalty")}
SCHEDULERS = {"identity": "constant", "constant": "constant", "warmup_linear": "warmup_linear",
              "warmup_cosine": "warmup_cosine", "cosine": "warmup_cosine"}


class Conversion:
    """The preset being built: group choices, key values, and what could not be mapped."""

    def __init__(self, source_path: Path | None = None) -> None:
        self.groups: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self.unmapped: list[str] = []
        self.notes: list[str] = []
        self.source_path = source_path

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


def model_config_candidates(ref: str, source_path: Path | None) -> list[Path]:
    """Where a tt-train ``model_config`` reference may live, in the order they are tried (see the
    module docstring). ``${VAR}`` is expanded from the environment; an unset one leaves no candidate."""
    ref = os.path.expandvars(ref)
    if "$" in ref:
        return []
    path = Path(ref)
    if path.is_absolute():
        return [path]
    found = [path]
    if source_path is not None:
        for folder in [source_path.resolve().parent, *source_path.resolve().parent.parents][:5]:
            found += [folder / path, folder / "model_configs" / path]
    for var in ("TT_METAL_RUNTIME_ROOT", "TT_METAL_HOME"):
        if os.environ.get(var):
            root = Path(os.environ[var]) / "tt-train"
            found += [root / "configs" / path, root / path, root / "configs" / "model_configs" / path]
    return found


def _model_config_ref(c: Conversion, ref: str) -> None:
    tried = model_config_candidates(ref, c.source_path)
    path = next((p for p in tried if p.is_file()), None)
    stem = Path(ref).stem
    if path is None:
        if stem.startswith(("nanogpt", "gpt2")):
            raise TtexpError(f"training_config.model_config={ref!r} names {GPT2}. (Judged by its name: "
                             "the file was not found.) Import a Llama model config such as "
                             "model_configs/nanollama3.yaml instead.")
        where = ", ".join(str(p) for p in tried) or "nowhere (an environment variable in it is unset)"
        if stem in MODEL_PRESETS:
            c.groups["model"] = stem
            c.notes.append(f"model_config {ref!r} not found (tried {where}); using ttexp's model "
                           f"preset {stem!r} of the same name")
        else:
            c.unmapped.append(f"training_config.model_config={ref!r} (cannot find it; tried {where}; "
                              "set $TT_METAL_RUNTIME_ROOT or pass the file's real path)")
        return
    mc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(mc, dict) or not isinstance(mc.get("transformer_config"), dict):
        raise TtexpError(f"model_config {path} has no transformer_config section; ttexp can import "
                         "only tt-train transformer model configs.")
    if stem in MODEL_PRESETS:
        c.groups["model"] = stem
    else:  # tt-train trains these from scratch, whatever their vocabulary
        c.groups["task"] = "scratch"
    _model(c, mc["transformer_config"], f"model_config({path.name}).transformer_config")
    c.skip(f"model_config({path.name})", mc, {"transformer_config"})
    c.notes.append(f"model read from {path}")


def _training(c: Conversion, tc: dict) -> None:
    used = c.take("training_config", tc, TRAINING_KEYS)
    if "grad_clip" in tc and "use_clip_grad_norm" not in tc:
        c.values["training.use_clip_grad_norm"] = float(tc["grad_clip"]) > 0
    if isinstance(tc.get("optimizer"), dict):
        optimizer_block(c, tc["optimizer"])
        used.add("optimizer")
    if "scheduler_type" in tc:
        name = SCHEDULERS.get(str(tc["scheduler_type"]))
        if name:
            c.groups["scheduler"] = name
            used.add("scheduler_type")
    if isinstance(tc.get("model_config"), str):
        _model_config_ref(c, tc["model_config"])
        used.add("model_config")
    _check_model_type(tc, "training_config")
    used.add("model_type")
    if isinstance(tc.get("transformer_config"), dict):  # the oldest layout nested it here
        _model(c, tc["transformer_config"], "training_config.transformer_config")
        used.add("transformer_config")
    c.skip("training_config", tc, used)


def _check_model_type(mc: dict, section: str) -> None:
    kind = str(mc.get("model_type", "llama"))
    if kind == "gpt2" or "positional_embedding_type" in mc:
        raise TtexpError(f"{section}.model_type={kind!r} is {GPT2}. Import a Llama model config "
                         "(e.g. tt-train's model_configs/nanollama3.yaml) instead.")
    if kind != "llama":
        raise TtexpError(f"{section}.model_type={kind!r}: ttexp builds only the Llama family "
                         "(model_type llama); this architecture cannot be imported.")


def swiglu_intermediate_dim(hidden: int) -> int:
    """tt-train's MLP width when a Llama config gives no ``intermediate_dim``: 8/3 of ``hidden``
    rounded up to a multiple of 256 (TinyLlama: 2048 -> 5632). Python ``compute_swiglu_intermediate_size``
    (``ttml/models/llama/transformer.py`` @ 0a866e5960a6ab2d3413bcf325e37cfbf817da86) and C++
    ``LlamaMLP`` (``modules/llama_block.cpp`` @ 04c9e49a096bcdb31049be8679950d68b876b473) agree."""
    return ((4 * int(hidden) * 2) // 3 + 255) // 256 * 256


def _model(c: Conversion, mc: dict, section: str) -> None:
    _check_model_type(mc, section)
    used = c.take(section, mc, MODEL_KEYS) | {"model_type"}
    if not any(k in mc for k in MODEL_KEYS["model.mlp_dim"]) and "model.hidden_dim" in c.values:
        c.values["model.mlp_dim"] = swiglu_intermediate_dim(c.values["model.hidden_dim"])
        c.notes.append(f"{section} gives no intermediate_dim: model.mlp_dim={c.values['model.mlp_dim']}, "
                       "derived as tt-train does (8/3 x hidden_dim, rounded up to 256)")
    if "weight_tying" in mc:
        c.values["model.tie_word_embeddings"] = str(mc["weight_tying"]).lower() == "enabled"
        used.add("weight_tying")
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


def convert(source: dict, name: str, source_path: Path | None = None) -> Conversion:
    """Map a parsed tt-train / lesson config to a preset (see the module docstring).

    Args:
        source: the parsed YAML file.
        name: the preset's name (``experiment=NAME``).
        source_path: the file, to resolve a relative ``model_config`` reference against.

    Raises:
        TtexpError: ``source`` has none of the known sections; it names an architecture ttexp cannot
            build (tt-train's GPT-2-style nanogpt, MoE ...); a referenced model config is malformed.
    """
    known = ("training_config", "device_config", "eval_config", "transformer_config", "model_config",
             "scheduler_config")
    if not isinstance(source, dict) or not any(k in source for k in known):
        raise TtexpError(f"No tt-train sections ({', '.join(known)}) in the file; is it a tt-train or "
                         "lesson config?")
    c = Conversion(source_path)
    c.values["name"] = name
    _training(c, dict(source.get("training_config") or {}))
    for section in ("transformer_config", "model_config"):
        if isinstance(source.get(section), dict):
            _model(c, source[section], section)
    _device(c, dict(source.get("device_config") or {}))
    if isinstance(source.get("eval_config"), dict):
        used = c.take("eval_config", source["eval_config"], EVAL_KEYS)
        c.skip("eval_config", source["eval_config"], used)
    if isinstance(source.get("scheduler_config"), dict):
        scheduler_block(c, source["scheduler_config"],
                   int((source.get("training_config") or {}).get("total_steps", 1000)))
    for key, value in source.items():
        if key not in known:
            c.unmapped.append(f"{key}: {value!r}")
    c.groups.setdefault("model", "tinyllama" if c.values.get("model.vocab_size") == 32000 else "nano")
    c.groups.setdefault("task", "finetune" if c.groups["model"] == "tinyllama" else "scratch")
    if "scheduler" not in c.groups:
        # The lessons give warmup_steps for a warmup-cosine run; tt-train without a scheduler trains
        # at a constant learning rate, and so must the import (not our default schedule).
        c.groups["scheduler"] = "warmup_cosine" if c.values.get("training.warmup_steps") else "constant"
    if c.groups["scheduler"] == "constant" and "scheduler_config" not in source:
        if c.values.get("training.warmup_steps"):  # tt-train's identity scheduler has no warmup
            c.notes.append(f"training_config.warmup_steps={c.values['training.warmup_steps']} dropped: "
                           "the source's schedule is constant (identity)")
        c.values["training.warmup_steps"] = 0
    return c


def shipped_presets() -> set[str]:
    """Names of the experiment presets ttexp ships (``ttexp/conf/experiment/*.yaml``)."""
    folder = resources.files("ttexp.conf") / "experiment"
    return {Path(p.name).stem for p in folder.iterdir() if p.name.endswith(".yaml")}


def run_command(name: str, output: Path | None) -> str:
    """The command that runs the preset once it is written to ``output`` (stdout: save it first as
    ``experiments/NAME.yaml``); ``TTEXP_EXPERIMENTS_DIR`` is set when ``output`` lies elsewhere."""
    if output is None:
        return f"python -m ttexp experiment={name}   # after saving this as experiments/{name}.yaml"
    folder = output.resolve().parent
    prefix = "" if folder == Path(experiments_dir()) else f"TTEXP_EXPERIMENTS_DIR={folder} "
    return f"{prefix}python -m ttexp experiment={name}"


def to_yaml(c: Conversion, source_path: str, command: str | None = None) -> str:
    """The preset text: ``# @package _global_``, the command that runs it, group overrides, nested
    values, notes and unmapped keys."""
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
            f"#   {command or run_command(c.values['name'], None)}"]
    head += [f"# Note: {n}" for n in c.notes]
    if c.unmapped:
        head.append("# Not mapped (no ttexp equivalent):")
        head += [f"#   {u}" for u in c.unmapped]
    body = yaml.safe_dump({"defaults": defaults, **nested}, sort_keys=False, default_flow_style=False)
    return "\n".join(head) + "\n" + body


def preset_name(path: Path, output: Path | None, name: str | None) -> tuple[str, str]:
    """The preset's name and output file, and a message ('' if none). Hydra finds a preset by its file
    name, so the name is the output's stem. A name that shadows a shipped preset is refused when the
    user chose it (``--name`` / ``-o``) and renamed ``NAME_imported`` when taken from the source file.

    Raises:
        TtexpError: ``--name`` and ``-o`` disagree, or the chosen name is a shipped preset's.
    """
    if output is not None and name is not None and output.stem != name:
        raise TtexpError(f"--name {name} and -o {output} disagree: experiment=NAME loads NAME.yaml, so "
                         f"write to {output.with_name(name + '.yaml')} or drop --name.")
    chosen = name or (output.stem if output is not None else None)
    shipped = shipped_presets()
    if chosen in shipped:
        raise TtexpError(f"{chosen!r} is a preset ttexp ships (conf/experiment/{chosen}.yaml); an imported "
                         f"one of that name would be ambiguous. Pick another, e.g. -o experiments/"
                         f"{chosen}_imported.yaml.")
    chosen = chosen or path.stem
    if chosen in shipped:
        return f"{chosen}_imported", f"{chosen!r} is a preset ttexp ships; the import is named {chosen}_imported"
    return chosen, ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ttexp.import_config", description=__doc__.split("\n")[0])
    parser.add_argument("file", help="a tt-train or lesson YAML config")
    parser.add_argument("-o", "--output", help="write the preset here, e.g. experiments/NAME.yaml "
                        "(default: stdout)")
    parser.add_argument("--name", help="the preset's name (default: the output's stem, else the file's)")
    args = parser.parse_args(argv)
    path = Path(args.file)
    output = Path(args.output) if args.output else None
    try:
        name, message = preset_name(path, output, args.name)
        source = yaml.safe_load(path.read_text())
        conv = convert(source, name, path)
    except (OSError, yaml.YAMLError, TtexpError) as exc:
        print(f"Cannot import {path}: {exc}", file=sys.stderr)
        return 1
    if message:
        print(message, file=sys.stderr)
    command = run_command(name, output)
    text = to_yaml(conv, str(path), command)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        print(f"Wrote {output}; run it with: {command}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    for line in [f"note: {n}" for n in conv.notes] + [f"not mapped: {u}" for u in conv.unmapped]:
        print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
