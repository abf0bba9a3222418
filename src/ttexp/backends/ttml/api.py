"""Which ttml API is this? Feature detection and the configs ttexp builds from it.

tt-train's Python API moves fast (reference/ttml_api.md §0: generations A, B, C). Nothing here
pins one: given the imported ``ttml`` module (or a test double), :func:`detect_api` reports what
exists, and the builders turn a :class:`~ttexp.models.spec.ModelSpec` and the optimizer settings
into that generation's model config and optimizer. Nothing here opens a device, so all of it is
tested on CPU with fake modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ttexp.errors import BackendUnavailable
from ttexp.models.memory import ttml_recomputes
from ttexp.models.spec import ModelSpec
from ttexp.models.ttml_weights import round_up_to_tile

TTML_RMS_NORM_EPS = 1e-5
"""ttml's Llama RMSNorm epsilon; not configurable (``ttml/models/llama/transformer.py``,
``RMSNormLayer(features, epsilon=1e-5)``)."""



def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


@dataclass(frozen=True)
class TtmlApi:
    """What the imported ttml offers.

    Attributes:
        generation: 'A', 'B' or 'C' (reference/ttml_api.md §0), for the record and the doctor.
        model_builder: 'python_llama' (``ttml.models.llama.Llama``, Gen B+), 'cpp_llama'
            (``create_cpp_llama_model`` + ``CppLlamaConfig``, Gen B) or 'cpp_llama_gen_a'
            (``create_llama_model`` + ``LlamaConfig``, Gen A).
        optimizer_factory: 'registry' (``ttml.optimizers.create_optimizer(dict, params)``) or
            'config_classes' (``AdamWConfig.make`` + ``AdamW`` / ``MorehAdamW``).
        grad_sync: 'sync_gradients' (``ttml.sync_gradients(params, ("dp",))`` on a mesh opened by
            ``ttml.open_device_mesh(ttml.Mesh(shape, names))``, ``ttml/mesh.py`` @ e92a955c…),
            else ``core.distributed.synchronize_gradients``, else the older
            'synchronize_parameters' (which also averages gradients,
            ``core/distributed/distributed.cpp`` @ 90b63baa…), or None.
        has_clip_grad_norm: ``ttml.core.clip_grad_norm`` (``nb_core.cpp`` @ 01b9eefe…).
        has_kv_cache: ``ttml.models.KvCache`` and ``KvCacheConfig``, used with the Python Llama.
        has_device_mesh: ``ttml.Mesh``, ``ttml.open_device_mesh`` and ``ttml.sync_gradients`` all
            exist (the current data-parallel API); preferred over the parallelism context.
        has_parallelism_context: ``AutoContext.initialize_parallelism_context`` + ``DistributedConfig``.
        has_enable_fabric: ``ttml.core.distributed.enable_fabric``.
        has_moreh_adamw: the optimizer class ``MorehAdamW`` (config_classes only).
    """

    generation: str
    model_builder: str
    optimizer_factory: str
    grad_sync: str | None
    has_clip_grad_norm: bool
    has_kv_cache: bool
    has_device_mesh: bool
    has_parallelism_context: bool
    has_enable_fabric: bool
    has_moreh_adamw: bool

    def describe(self) -> str:
        """One line for the log, the record and the doctor."""
        return (f"API generation {self.generation}: model {self.model_builder}, optimizer "
                f"{self.optimizer_factory}, gradient sync {self.grad_sync or 'none'}, clip_grad_norm "
                f"{'yes' if self.has_clip_grad_norm else 'no'}, KV cache "
                f"{'yes' if self.has_kv_cache else 'no'}")


def detect_api(ttml: Any) -> TtmlApi:
    """Feature-detect the API of ``ttml`` (the module, or a test double) by attribute lookups only.

    Raises:
        BackendUnavailable: no Llama builder or no AdamW optimizer is found (names what is missing).
    """
    llama = _get(ttml, "models.llama")
    if _get(llama, "Llama") is not None and hasattr(_get(llama, "LlamaConfig"), "__dataclass_fields__"):
        model = "python_llama"
    elif _get(llama, "create_cpp_llama_model") is not None:
        model = "cpp_llama"
    elif _get(llama, "create_llama_model") is not None:
        model = "cpp_llama_gen_a"
    else:
        raise BackendUnavailable(
            "This ttml has no Llama model (neither ttml.models.llama.Llama nor "
            "create_cpp_llama_model nor create_llama_model); update tt-train, or use backend=torch.")
    optim = _get(ttml, "optimizers")
    if _get(optim, "create_optimizer") is not None:
        factory = "registry"
    elif _get(optim, "AdamWConfig") is not None and _get(optim, "AdamW") is not None:
        factory = "config_classes"
    else:
        raise BackendUnavailable(
            "This ttml has no AdamW (neither ttml.optimizers.create_optimizer nor AdamWConfig + "
            "AdamW); update tt-train, or use backend=torch.")
    dist = _get(ttml, "core.distributed")
    device_mesh = all(_get(ttml, n) is not None for n in ("Mesh", "open_device_mesh", "sync_gradients"))
    sync = "sync_gradients" if device_mesh else next(
        (n for n in ("synchronize_gradients", "synchronize_parameters") if _get(dist, n) is not None), None)
    ctx_cls = _get(ttml, "autograd.AutoContext")
    if _get(ttml, "open_device_mesh") is not None:
        generation = "C"
    elif factory == "registry" or model != "cpp_llama_gen_a":
        generation = "B"
    else:
        generation = "A"
    return TtmlApi(
        generation=generation, model_builder=model, optimizer_factory=factory, grad_sync=sync,
        has_clip_grad_norm=_get(ttml, "core.clip_grad_norm") is not None,
        has_kv_cache=(model == "python_llama" and _get(ttml, "models.KvCache") is not None
                      and _get(ttml, "models.KvCacheConfig") is not None),
        has_device_mesh=device_mesh,
        has_parallelism_context=(_get(ctx_cls, "initialize_parallelism_context") is not None
                                 and _get(ttml, "autograd.DistributedConfig") is not None),
        has_enable_fabric=_get(dist, "enable_fabric") is not None,
        has_moreh_adamw=_get(optim, "MorehAdamW") is not None,
    )


@dataclass(frozen=True)
class ModelRequest:
    """The ttml Llama config for a spec, builder-neutral (HF-style names, Gen B's Python config).

    ``vocab_size`` and ``max_position_embeddings`` are already padded to tiles of 32.
    ``notes`` say where ttml computes something other than the torch backend.
    """

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    max_position_embeddings: int
    rope_theta: float
    attention_dropout: float
    memory_efficient: bool
    tied: bool
    notes: list[str] = field(default_factory=list)


def model_request(spec: ModelSpec, activation_checkpointing: bool = False) -> ModelRequest:
    """The ttml model config for ``spec``; the memory-efficient runner (recompute) when
    ``activation_checkpointing`` or the model is TinyLlama-wide (:func:`ttml_recomputes`).

    Raises:
        BackendUnavailable: ``hidden_dim`` is not a multiple of 32 (ttml's tile), with the fix.
    """
    if spec.hidden_dim % 32:
        raise BackendUnavailable(
            f"model.hidden_dim={spec.hidden_dim} is not a multiple of 32, which ttml's Llama "
            f"requires (tiles of 32); use {round_up_to_tile(spec.hidden_dim)} or backend=torch.")
    notes = []
    if spec.rms_norm_eps != TTML_RMS_NORM_EPS:
        notes.append(f"RMSNorm epsilon is {TTML_RMS_NORM_EPS:g} on ttml (fixed), model.rms_norm_eps="
                     f"{spec.rms_norm_eps:g} applies to torch only")
    if spec.dropout > 0:
        notes.append(f"model.dropout={spec.dropout:g} drops the attention output on ttml, the "
                     "attention probabilities on torch")
    vocab = round_up_to_tile(spec.vocab_size)
    if vocab != spec.vocab_size:
        notes.append(f"vocabulary padded {spec.vocab_size} -> {vocab}; padded logits are masked")
    return ModelRequest(
        hidden_size=spec.hidden_dim, intermediate_size=spec.mlp_dim,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads, vocab_size=vocab,
        max_position_embeddings=round_up_to_tile(spec.max_seq_len), rope_theta=spec.rope_theta,
        attention_dropout=spec.dropout, memory_efficient=ttml_recomputes(spec, activation_checkpointing),
        tied=spec.tie_word_embeddings, notes=notes,
    )


def build_model_config(req: ModelRequest, api: TtmlApi, ttml: Any) -> Any:
    """The config object for ``api.model_builder`` (field names per reference/ttml_api.md §3b)."""
    models = ttml.models
    runner = models.RunnerType.MemoryEfficient if req.memory_efficient else models.RunnerType.Default
    tying = models.WeightTyingType.Enabled if req.tied else models.WeightTyingType.Disabled
    if api.model_builder == "python_llama":
        return models.llama.LlamaConfig(
            hidden_size=req.hidden_size, intermediate_size=req.intermediate_size,
            num_hidden_layers=req.num_hidden_layers, num_attention_heads=req.num_attention_heads,
            num_key_value_heads=req.num_key_value_heads, vocab_size=req.vocab_size,
            max_position_embeddings=req.max_position_embeddings, rope_theta=req.rope_theta,
            attention_dropout=req.attention_dropout, mlp_dropout=0.0, runner_type=runner,
            weight_tying=tying,
        )
    cfg = (models.llama.CppLlamaConfig if api.model_builder == "cpp_llama" else models.llama.LlamaConfig)()
    for key, value in (("num_heads", req.num_attention_heads), ("num_groups", req.num_key_value_heads),
                       ("embedding_dim", req.hidden_size), ("intermediate_dim", req.intermediate_size),
                       ("dropout_prob", req.attention_dropout), ("theta", req.rope_theta),
                       ("num_blocks", req.num_hidden_layers), ("vocab_size", req.vocab_size),
                       ("max_sequence_length", req.max_position_embeddings),
                       ("runner_type", runner), ("weight_tying", tying)):
        setattr(cfg, key, value)
    return cfg


def build_model(req: ModelRequest, api: TtmlApi, ttml: Any) -> Any:
    """Create the ttml Llama for ``req`` with the builder ``api`` found."""
    cfg = build_model_config(req, api, ttml)
    llama = ttml.models.llama
    if api.model_builder == "python_llama":
        return llama.Llama(cfg)
    if api.model_builder == "cpp_llama":
        return llama.create_cpp_llama_model(cfg)
    return llama.create_llama_model(cfg)


@dataclass(frozen=True)
class OptimizerRequest:
    """AdamW as ttml will build it: ``kind`` is the registry ``type`` or the class name."""

    kind: str
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def optimizer_request(api: TtmlApi, lr: float, beta1: float, beta2: float, eps: float,
                      weight_decay: float, use_moreh_adamw: bool,
                      use_kahan_summation: bool) -> OptimizerRequest:
    """Choose the ttml AdamW for the settings; ``notes`` report what this API cannot honour.

    Registry keys and meanings: ``optimizers/optimizer_registry.cpp`` @ 04087d12… and PR #33076
    (``MorehAdamW`` = moreh fused bf16 kernel; ``AdamWComposite`` = the one with Kahan
    compensation, key ``kahan_summation``). Gen A: Kahan summation was not settable from Python
    (``train_nanogpt.py`` @ 7251832754d600792263b7f285fd07526da856ae).
    """
    notes = ["ttml's AdamW decays every parameter (norm weights too); torch decays matrices only"]
    base = {"lr": lr, "beta1": beta1, "beta2": beta2, "epsilon": eps, "weight_decay": weight_decay}
    if api.optimizer_factory == "registry":
        if use_moreh_adamw:
            kind = "MorehAdamW"
            if use_kahan_summation:
                notes.append("use_kahan_summation with MorehAdamW: passed as kahan_summation, but "
                             "tt-train's source does not confirm MorehAdamW honours it")
        else:
            kind = "AdamWComposite" if use_kahan_summation else "AdamW"
        settings = {"type": kind, **base}
        if use_kahan_summation:
            settings["kahan_summation"] = True
        return OptimizerRequest(kind, settings, notes)
    kind = "AdamW"
    if use_moreh_adamw and api.has_moreh_adamw:
        kind = "MorehAdamW"
    elif use_moreh_adamw:
        notes.append("use_moreh_adamw=true but this ttml has no MorehAdamW; using AdamW")
    if use_kahan_summation:
        notes.append("use_kahan_summation=true is not settable from Python in this ttml "
                     "(AdamWConfig.make has no such argument); ignored")
    return OptimizerRequest(kind, base, notes)


def build_optimizer(req: OptimizerRequest, api: TtmlApi, ttml: Any, parameters: Any) -> Any:
    """Create the optimizer ``req`` describes over ``parameters`` (``model.parameters()``)."""
    optim = ttml.optimizers
    if api.optimizer_factory == "registry":
        return optim.create_optimizer(dict(req.settings), parameters)
    s = req.settings
    cfg = optim.AdamWConfig.make(float(s["lr"]), float(s["beta1"]), float(s["beta2"]),
                                 float(s["epsilon"]), float(s["weight_decay"]))
    return getattr(optim, req.kind)(parameters, cfg)


@dataclass(frozen=True)
class MeshPlan:
    """How the device mesh is opened (reference/ttml_api.md §2, "Multi-device order")."""

    mesh_shape: list[int]
    num_devices: int
    enable_ddp: bool
    enable_fabric: bool
    """``ttml.core.distributed.enable_fabric(num_devices)`` must run before ``open_device``."""
    device_ids: list[int] | None
    """``[0]`` for one device (``ctx.open_device([1, 1], [0])``); None lets ttml use the mesh."""


def plan_mesh(mesh_shape: list[int], enable_ddp: bool,
              device_ids: list[int] | None = None) -> MeshPlan:
    """The mesh plan for a hardware preset; ``device_ids`` (``hardware.device_ids``) picks chips.

    Raises:
        BackendUnavailable: the shape is not ``[1, N]`` (ttml's DeviceConfig asserts it), or DDP
            disagrees with the device count; the message says which preset to use.
    """
    shape = [int(n) for n in mesh_shape]
    if len(shape) != 2 or shape[0] != 1 or shape[1] < 1:
        raise BackendUnavailable(f"hardware.mesh_shape={shape}: ttml opens [1, N] meshes only "
                                 "(common/config.py @ 995592d9…); use e.g. [1, 8] for T3K.")
    n = shape[1]
    if enable_ddp != (n > 1):
        raise BackendUnavailable(f"hardware.enable_ddp={enable_ddp} does not fit mesh {shape}: "
                                 "ttexp runs a mesh of more than one device as data parallel only.")
    if device_ids is not None and len(device_ids) != n:
        raise BackendUnavailable(f"hardware.device_ids={list(device_ids)} names {len(device_ids)} "
                                 f"chips for a mesh of {n}; give one id per device.")
    ids = [int(i) for i in device_ids] if device_ids is not None else ([0] if n == 1 else None)
    return MeshPlan(shape, n, enable_ddp, enable_fabric=n > 1, device_ids=ids)
