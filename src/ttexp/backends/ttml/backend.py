"""ttml backend: tt-train's Python API on Tenstorrent devices (N150, N300, T3K, Galaxy).

    python -m ttexp backend=ttml model=nano hardware=n150
    python -m ttexp backend=ttml model=nano hardware=n300     # mesh [1, 2], data parallel

Written against reference/ttml_api.md (every API fact there names its tt-metal file and commit);
the API generation is feature-detected (:mod:`ttexp.backends.ttml.api`), host arrays are built
by :mod:`ttexp.backends.ttml.tensors`, and weights cross to and from Hugging Face names through
:mod:`ttexp.models.ttml_weights`. One micro-step is tt-train's (§7): uint32 batches, forward,
padded logits masked, cross-entropy (masked NONE -> mean when some positions do not count),
loss scaled by 1/accumulation, ``backward(False)``, then ``reset_graph()`` -- always, even when
backward raised. One optimizer step: gradients averaged over the mesh, clipped, ``set_lr``,
``step``, ``zero_grad``. The device is closed by :meth:`TtmlBackend.close`, which the task calls
on every exit path, and by the constructor itself if it fails after opening.
"""

from __future__ import annotations

import importlib
import logging
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ttexp.backends.base import NamedState, SamplingParams, StepStats
from ttexp.backends.sampling import decode
from ttexp.backends.ttml.api import (
    build_model,
    build_optimizer,
    detect_api,
    model_request,
    optimizer_request,
    plan_mesh,
)
from ttexp.backends.ttml.generation import cached_steps, window_steps
from ttexp.backends.ttml.lora import TtmlLora, upload_adapter
from ttexp.backends.ttml.mesh import (
    close_mesh,
    init_data_parallel,
    open_mesh,
    sync_gradients,
)
from ttexp.backends.ttml.state import join_state, split_state
from ttexp.backends.ttml.tensors import causal_mask, layout_batch, logits_padding_mask
from ttexp.config.schema import OptimizerConfig
from ttexp.data.batch import Batch
from ttexp.errors import BackendUnavailable, TtexpError
from ttexp.models.hf import (
    CONFIG_NAME,
    llama_config,
    read_hf_config,
    read_weights,
    spec_from_hf,
    write_weights,
)
from ttexp.models.spec import ModelSpec
from ttexp.models.ttml_weights import detect_layout, hf_to_ttml, ttml_to_hf

log = logging.getLogger("ttexp")


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # a broken tt-metal install raises all sorts of errors at import
        raise BackendUnavailable(f"backend=ttml cannot import {name} ({type(exc).__name__}: {exc}). "
                                 "Run inside tt-train's Python environment, or use backend=torch.") from None


class TtmlBackend:
    """See :class:`ttexp.backends.base.Backend` for the contract of each method.

    Args:
        mesh_shape: ``hardware.mesh_shape``, ``[1, N]``.
        enable_ddp: ``hardware.enable_ddp`` (true exactly when N > 1).
        optimizer_cfg: the ``optimizer`` section (beta1, beta2, eps, use_moreh_adamw, use_kahan_summation).
        weight_decay: AdamW weight decay (ttml applies it to every parameter).
        seed: seeds ttml's device RNG (``AutoContext.set_seed``).
        clip_grad_norm: whether the run clips gradients (checked against the API at build time).
        ttml, ttnn: the modules; imported when None (tests pass a strict double).

    Raises:
        BackendUnavailable: ttml or ttnn does not import, the API lacks what the run needs, or the
            mesh shape is not one ttml opens. The device is closed again before raising.
    """

    name = "ttml"
    precision_name = "bf16 (ttml)"

    def __init__(self, mesh_shape: list[int], enable_ddp: bool, optimizer_cfg: OptimizerConfig,
                 weight_decay: float, seed: int, clip_grad_norm: bool = True,
                 ttml: Any = None, ttnn: Any = None, device_ids: list[int] | None = None,
                 activation_checkpointing: bool = False):
        self.ttml = ttml if ttml is not None else _import("ttml")
        self.ttnn = ttnn if ttnn is not None else _import("ttnn")
        self.api = detect_api(self.ttml)
        self.mesh = plan_mesh(mesh_shape, enable_ddp, device_ids)
        if self.mesh.num_devices > 1 and self.api.grad_sync is None:
            raise BackendUnavailable(
                "This ttml has neither sync_gradients (with open_device_mesh) nor "
                "synchronize_gradients / synchronize_parameters, so data parallel cannot average "
                "gradients; use hardware=n150 or update tt-train.")
        if clip_grad_norm and not self.api.has_clip_grad_norm:
            raise BackendUnavailable("training.use_clip_grad_norm=true but this ttml has no "
                                     "ttml.core.clip_grad_norm; set training.use_clip_grad_norm=false "
                                     "or update tt-train.")
        self.optimizer_cfg, self.weight_decay = optimizer_cfg, weight_decay
        self.activation_checkpointing = activation_checkpointing  # the memory-efficient runner
        self.ctx = self.ttml.autograd.AutoContext.get_instance()
        self._opened = False
        self.model: Any = None
        self.optimizer: Any = None
        self.spec: ModelSpec | None = None
        self.lora: TtmlLora | None = None
        self.base_path: str | None = None
        self._losses: list[tuple[Any, float]] = []
        self._masks: dict[int, Any] = {}
        self._warned_norm = False
        try:
            self._open_device(seed)
        except BaseException:
            self.close()
            raise
        n = self.mesh.num_devices
        self.device_name = (f"Tenstorrent mesh {self.mesh.mesh_shape} ({n} device{'s' * (n > 1)}, "
                            f"ttml API {self.api.generation})")

    # -- device --------------------------------------------------------------------------------

    def _open_device(self, seed: int) -> None:
        """Open the mesh, seed, start data parallel (mesh.py picks the API; §2 order)."""
        dist = getattr(self.ttml.core, "distributed", None)
        open_mesh(self.ttml, self.ctx, self.api, self.mesh)
        self._opened = True
        self.ctx.set_seed(int(seed))
        init_data_parallel(self.ttml, self.ctx, self.api, self.mesh)
        device = self.ctx.get_device()
        self._mapper = self._composer = None
        if self.mesh.num_devices > 1:  # batches shard on dim 0; read-backs concatenate on dim 0
            self._mapper = dist.shard_tensor_to_mesh_mapper(device, 0)
            self._composer = dist.concat_mesh_to_tensor_composer(device, 0)

    def close(self) -> None:
        if self._opened:
            self._opened = False
            self.model = self.optimizer = self.lora = None
            self._masks.clear()
            self._losses.clear()
            close_mesh(self.ttml, self.ctx, self.api)

    # -- tensors -------------------------------------------------------------------------------

    def to_device(self, arr: np.ndarray, tile: bool, shard: bool = False) -> Any:
        """Upload a 32-bit host array: uint32 ids as ROW_MAJOR UINT32; floats as TILE BFLOAT16
        without gradients (ttml's uploads require them by default, and a mask that does makes
        every step compute a broadcast gradient: reference/ttml_audit_2026-11.md, mismatch 3)."""
        nn = self.ttnn
        if arr.dtype == np.uint32:
            layout, dtype = nn.Layout.ROW_MAJOR, nn.DataType.UINT32
        else:
            layout, dtype = (nn.Layout.TILE if tile else nn.Layout.ROW_MAJOR), nn.DataType.BFLOAT16
        mapper = self._mapper if shard else None
        t = self.ttml.autograd.Tensor.from_numpy(np.ascontiguousarray(arr), layout=layout,
                                                 new_type=dtype, mapper=mapper)
        if dtype != nn.DataType.UINT32:  # a constant: no gradient for ttml to compute and drop
            t.set_requires_grad(False)
        return t

    def to_host(self, t: Any, replicated: bool = True) -> np.ndarray:
        """Bring a tensor to the host as float32. On a mesh the concat composer returns one copy
        per device; a replicated tensor keeps the first, a sharded one keeps them all."""
        if self._composer is None:
            return np.asarray(t.to_numpy(), dtype=np.float32)
        a = np.asarray(t.to_numpy(composer=self._composer), dtype=np.float32)
        return a[: a.shape[0] // self.mesh.num_devices] if replicated else a

    def causal(self, seq_len: int) -> Any:
        """The device causal mask ``[1, 1, T, T]`` (bf16 TILE) for ``seq_len`` T, built once per T."""
        if seq_len not in self._masks:
            self._masks[seq_len] = self.to_device(causal_mask(seq_len), tile=True)
        return self._masks[seq_len]

    def logits(self, inputs: Any, mask: Any, **kv: Any) -> Any:
        """Forward ``inputs`` (``uint32 [B, 1, 1, T_pad]``) under ``mask``; device logits
        ``[B, 1, T_pad, V_pad]`` with padded vocabulary entries pushed to -1e4. ``kv`` passes
        ``kv_cache`` and ``new_tokens`` through to a KV-cached forward."""
        logits = self.model(inputs, mask, **kv)
        if self._logits_mask is not None:  # padded vocabulary entries never win
            logits = self.ttml.ops.binary.sub(logits, self._logits_mask)
        return logits

    # -- model and optimizer -------------------------------------------------------------------

    def build_model(self, spec: ModelSpec, init_from: Path | None = None) -> int:
        req = model_request(spec, self.activation_checkpointing)
        self.spec, self.req = spec, req
        self.model = build_model(req, self.api, self.ttml)
        params = self.model.parameters()
        self.layout = detect_layout(list(params.keys()), req.tied)
        mask = logits_padding_mask(spec.vocab_size, req.vocab_size)
        self._logits_mask = None if mask is None else self.to_device(mask, tile=True)
        if init_from is not None:
            self.load_weights(Path(init_from))
        self._set_mode(train=True)
        o = self.optimizer_cfg
        opt = optimizer_request(self.api, lr=0.0, beta1=o.beta1, beta2=o.beta2, eps=o.eps,
                                weight_decay=self.weight_decay, use_moreh_adamw=bool(o.use_moreh_adamw),
                                use_kahan_summation=bool(o.use_kahan_summation))
        self.opt_req = opt
        self.optimizer = build_optimizer(opt, self.api, self.ttml, params)
        self.optimizer.zero_grad()
        log.info("ttml: %s; optimizer %s", self.api.describe(), opt.kind)
        for note in req.notes + opt.notes:
            log.info("ttml: %s", note)
        return self.num_parameters()

    def load_pretrained(self, path: str) -> int:
        """Build the model from a local Hugging Face directory's config.json and load its weights.

        Raises:
            TtexpError: the directory has no config.json or safetensors, or they do not fit.
        """
        cfg_file = Path(path) / CONFIG_NAME
        if not cfg_file.is_file():
            raise TtexpError(f"No config.json in {path}: ttml loads pretrained weights from a local "
                             "Hugging Face directory; download it and set model.pretrained_path=DIR.")
        spec = spec_from_hf(read_hf_config(Path(path)), name=Path(path).name, source=cfg_file)
        self.base_path = str(path)  # an adapter's adapter_config.json names its base
        return self.build_model(spec, init_from=Path(path))

    def apply_adapter(self, adapter: Any) -> int:  # tt-train's ttml.modules.lora: ttml/lora.py
        self.lora = TtmlLora(self.ttml, self.model, self.spec, self.layout, adapter, self.base_path)
        self._set_mode(train=True)
        trained = self._trained()  # the optimizer holds the adapter alone, on every AdamW version
        self.optimizer = build_optimizer(self.opt_req, self.api, self.ttml, trained)
        self.optimizer.zero_grad()
        return int(sum(math.prod(getattr(p, "tensor", p).shape()) for p in trained.values()))

    def _trained(self) -> Any:
        """What the optimizer, clipping and gradient sync see: the adapter, else every parameter."""
        params = self.model.parameters()
        return params if self.lora is None else self.lora.trainable(self.ttml, params)

    def adapter_state(self) -> NamedState | None:
        return None if self.lora is None else self.lora.state(self.parameters_numpy())

    def load_adapter_tensors(self, tensors: dict[str, Any]) -> None:
        if self.lora is None:
            raise TtexpError("This checkpoint holds a LoRA adapter but the model has none; resume "
                             "with adapter=lora and the settings it was trained with.")
        upload_adapter(self.lora, tensors, self.model.parameters(), lambda a: self.to_device(a, tile=True))

    def num_parameters(self) -> int:
        """Scalars in every ttml parameter (tile-padded vocabulary rows included)."""
        return int(sum(math.prod(getattr(p, "tensor", p).shape())
                       for p in self.model.parameters().values()))

    def _set_mode(self, train: bool) -> None:
        fn = getattr(self.model, "train" if train else "eval", None)
        if fn is not None:
            fn()
        mode = self.ttml.autograd.GradMode.ENABLED if train else self.ttml.autograd.GradMode.DISABLED
        self.ctx.set_gradient_mode(mode)

    # -- training ------------------------------------------------------------------------------

    def _loss(self, batch: Batch) -> tuple[Any, int]:
        """Forward and mean token loss (a device scalar) for one batch; and its counted tokens."""
        tb = layout_batch(batch, self.spec.vocab_size)
        ops = self.ttml.ops
        x = self.to_device(tb.inputs, tile=False, shard=True)
        y = self.to_device(tb.targets, tile=False, shard=True)
        logits = self.logits(x, self.causal(tb.seq_len))
        if tb.loss_mask is None:
            return ops.loss.cross_entropy_loss(logits, y, ops.ReduceType.MEAN), tb.num_tokens
        ce = ops.loss.cross_entropy_loss(logits, y, ops.ReduceType.NONE)  # [B, 1, T, 1]
        mask = self.to_device(tb.loss_mask, tile=True, shard=True)
        return ops.unary.mean(ops.binary.mul(ce, mask)), tb.num_tokens

    def micro_step(self, batch: Batch, loss_scale: float) -> None:
        try:
            loss, _ = self._loss(batch)
            scaled = self.ttml.ops.binary.mul(loss, float(loss_scale)) if loss_scale != 1.0 else loss
            scaled.backward(False)
            self._losses.append((loss, float(loss_scale)))  # read at the step: one sync per step
        finally:
            self.ctx.reset_graph()  # every micro-step, also when forward or backward raised

    def optimizer_step(self, lr: float, max_grad_norm: float | None) -> StepStats:
        params = self._trained()
        if self.mesh.num_devices > 1:  # average before clipping: the norm is of the mean gradient
            sync_gradients(self.ttml, self.api, params)
        grad_norm = 0.0
        if max_grad_norm is not None:
            norm = self.ttml.core.clip_grad_norm(params, float(max_grad_norm), 2.0)
            grad_norm = float(self.to_host(norm).reshape(-1)[0])
        elif not self._warned_norm:
            self._warned_norm = True
            log.warning("ttml: without clipping the gradient norm is not measured; train/grad_norm "
                        "is logged as 0 (set training.use_clip_grad_norm=true to measure it).")
        self.optimizer.set_lr(float(lr))
        self.optimizer.step()
        self.optimizer.zero_grad()
        loss = sum(float(self.to_host(t, replicated=False).mean()) * s for t, s in self._losses)
        self._losses.clear()
        return StepStats(loss=loss, grad_norm=grad_norm)

    def evaluate(self, batches: Iterable[Batch]) -> float:
        total, count = 0.0, 0
        self._set_mode(train=False)
        try:
            for batch in batches:
                try:
                    loss, n = self._loss(batch)
                    total += float(self.to_host(loss, replicated=False).mean()) * n
                    count += n
                finally:
                    self.ctx.reset_graph()
        finally:
            self._set_mode(train=True)
        if count == 0:
            raise TtexpError("Validation produced no tokens to score; check the validation data.")
        return total / count

    # -- generation ----------------------------------------------------------------------------

    def generate(self, prompt_ids: list[int], params: SamplingParams) -> list[int]:
        ids = list(prompt_ids) or [0]
        window = self.spec.max_seq_len
        use_cache = self.api.has_kv_cache and len(ids) + params.max_new_tokens <= window
        self._set_mode(train=False)
        try:
            step = cached_steps(self) if use_cache else window_steps(self, window)
            return decode(step, ids, params)  # its own seeded generator: never the training RNG
        finally:
            self._set_mode(train=True)

    # -- state ---------------------------------------------------------------------------------

    def parameters_numpy(self) -> dict[str, np.ndarray]:
        """Every parameter on the host, float32, ttml names and 4-D shapes."""
        return {k: self.to_host(getattr(p, "tensor", p)) for k, p in self.model.parameters().items()}

    def weight_tensors(self) -> dict[str, np.ndarray]:
        """Weights under Hugging Face names (a tied head stored once, as the embedding)."""
        return ttml_to_hf(self.parameters_numpy(), self.spec, self.layout)

    def save_weights(self, directory: Path) -> None:
        """Write ``directory/model.safetensors`` (Hugging Face names)."""
        write_weights(directory, self.weight_tensors())

    def load_weights(self, directory: Path) -> None:
        """Load ``model.safetensors`` (or its Hugging Face shards) in ``directory`` into the model.

        Raises:
            TtexpError: no safetensors file, an unreadable file, or weights that do not fit.
        """
        params = self.model.parameters()
        for name, arr in hf_to_ttml(read_weights(directory), self.spec, self.layout).items():
            getattr(params[name], "tensor", params[name]).assign(self.to_device(arr, tile=True))

    def optimizer_state(self) -> NamedState:
        """``optimizer.get_state_dict()`` as named host arrays and JSON scalars (see
        :func:`ttexp.backends.ttml.state.split_state`)."""
        return split_state(self.optimizer.get_state_dict(), self.ttml, self.to_host)

    def load_optimizer_state(self, state: NamedState) -> None:
        """Rebuild ``ttml.NamedParameters`` at each live tensor's dtype and ``set_state_dict``.

        Raises:
            TtexpError: the saved state does not match the live optimizer's keys or tensors.
        """
        live = self.optimizer.get_state_dict()
        self.optimizer.set_state_dict(join_state(state, live, self.ttml, self._upload_like))

    def _upload_like(self, arr: np.ndarray, live: Any) -> Any:
        """Upload ``arr`` at the dtype of the live tensor it replaces (TILE; replicated on a mesh)."""
        dtype = live.dtype() if callable(getattr(live, "dtype", None)) else self.ttnn.DataType.BFLOAT16
        t = self.ttml.autograd.Tensor.from_numpy(np.ascontiguousarray(arr, dtype=np.float32),
                                                 layout=self.ttnn.Layout.TILE, new_type=dtype)
        t.set_requires_grad(False)  # optimizer state, as ttml creates it (adamw.cpp: requires_grad false)
        return t

    def save_pretrained(self, directory: Path, tokenizer: Any) -> None:
        """With LoRA: the merged weights plus ``adapter/`` in PEFT's format (the model is unchanged)."""
        if self.lora is None:
            self.save_weights(directory)
        else:
            self.lora.save_merged(directory, self.parameters_numpy())
        cfg = llama_config(self.spec)
        cfg.architectures = ["LlamaForCausalLM"]
        cfg.save_pretrained(str(directory))
        tokenizer.save_pretrained(str(directory))
