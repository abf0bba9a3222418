"""The two tt-train config sections :mod:`ttexp.tools.import_config` maps by meaning rather than by
key: the nested ``training_config.optimizer`` block and ``scheduler_config``. Each function takes
the importer's ``Conversion`` (group choices, key values, notes, unmapped keys) and fills it.
"""

from __future__ import annotations

from typing import Any

from ttexp.errors import TtexpError

NESTED_OPTIMIZER = {"lr": "training.learning_rate", "beta1": "optimizer.beta1", "beta2": "optimizer.beta2",
                    "epsilon": "optimizer.eps", "eps": "optimizer.eps", "weight_decay": "training.weight_decay"}


def optimizer_block(c: Any, opt: dict) -> None:
    """``training_config.optimizer``: its ``type`` picks MorehAdamW or Kahan summation; its keys
    replace the flat training_config ones (with a note when they differ)."""
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
            if dest in c.values and c.values[dest] != opt[key]:
                c.notes.append(f"training_config.optimizer.{key}={opt[key]!r} replaces "
                               f"{dest}={c.values[dest]!r} from the flat training_config keys")
            c.values[dest] = opt[key]
            used.add(key)
    used |= {k for k in ("amsgrad", "stochastic_rounding") if opt.get(k) is False}  # what ttexp does
    c.skip("training_config.optimizer", opt, used)


def scheduler_block(c: Any, sc: dict, total_steps: int) -> None:
    """tt-train's scheduler_config (``SpeedrunScheduler.lr_at``, ``ttml/common/schedulers.py`` @
    03730d78f3b25624fd84b7767ec86e351b014b91; defaults from ``ttml/common/config.py`` @
    0036c3e611fa0da52e870dc0a931be6eebfcaf12: warmup 100, hold 0, min_lr 0): linear warmup to
    max_lr, hold, then a straight line to min_lr at training_config.total_steps (default 1000),
    so it imports as warmup_linear. max_lr replaces training_config's learning rate."""
    used = {"max_lr", "min_lr", "warmup_steps", "hold_steps"}
    peak = c.values.get("training.learning_rate")
    if "max_lr" in sc:
        if peak is not None and float(peak) != float(sc["max_lr"]):
            c.notes.append(f"scheduler_config.max_lr={sc['max_lr']!r} replaces the learning rate "
                           f"{peak!r} given in training_config")
        peak = c.values["training.learning_rate"] = float(sc["max_lr"])
    warmup = int(sc.get("warmup_steps", c.values.get("training.warmup_steps", 100)))
    c.values["training.warmup_steps"] = warmup
    hold, min_lr = int(sc.get("hold_steps", 0)), float(sc.get("min_lr", 0.0))
    max_steps = c.values.get("training.max_steps")
    if max_steps is not None and warmup + hold >= int(max_steps):
        c.groups["scheduler"] = "constant"  # the decay never starts within max_steps
        c.notes.append(f"warmup {warmup} + hold {hold} >= max_steps {max_steps}: imported as a warmup, "
                       "then the constant peak (scheduler=constant)")
    elif hold:
        c.unmapped.append(f"scheduler_config.hold_steps={hold} (ttexp has no hold phase: the decay "
                          "starts right after warmup)")
    c.groups.setdefault("scheduler", "warmup_linear")
    if c.groups["scheduler"] != "constant":
        if not peak:
            raise TtexpError("scheduler_config.min_lr needs a peak learning rate: give "
                             "scheduler_config.max_lr or training_config.learning_rate.")
        c.values["scheduler.min_lr_ratio"] = min_lr / float(peak)
        if max_steps is not None and int(max_steps) != total_steps:
            c.notes.append(f"tt-train decays to min_lr at training_config.total_steps={total_steps}; "
                           f"ttexp's {c.groups['scheduler']} reaches it at training.max_steps={max_steps}")
    c.skip("scheduler_config", sc, used)
