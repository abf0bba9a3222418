"""PyTorch backend: ``transformers``' ``LlamaForCausalLM`` on CPU or CUDA.

Speed choices (reference/perf_anchors.md §5): SDPA attention; bf16 autocast where the device has
native bf16 (CUDA with bf16, CPUs with AVX512_BF16 or AMX), fp32 elsewhere; optional
``torch.compile``; fused AdamW on CPU and CUDA; one host synchronisation per optimizer step; in
eager mode on CPU, RMSNorm, RoPE and the MLP that move fewer bytes (:mod:`ttexp.backends.torch_eager`).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ttexp.backends.base import Collectives, NamedState, OneProcess, SamplingParams, StepStats
from ttexp.backends.compile import (
    AutoCompile,
    CompileCosts,
    compile_regions,
    cost_key,
    enable_compile_cache,
)
from ttexp.backends.torch_generate import generate_tokens
from ttexp.backends.torch_device import (  # noqa: F401  (re-exported: callers import them here)
    autocast_dtype_for,
    cpu_has_native_bf16,
    make_adamw,
    resolve_device,
)
from ttexp.backends import torch_eager, torch_lora
from ttexp.config.schema import AdapterConfig, OptimizerConfig
from ttexp.config.values import compile_setting
from ttexp.data.batch import IGNORE_INDEX, Batch
from ttexp.data.corpus import cache_dir
from ttexp.errors import TtexpError
from ttexp.models.hf import WEIGHTS_NAME, llama_config, refuse_remote_code, write_weights
from ttexp.models.spec import ModelSpec

log = logging.getLogger("ttexp")


class TorchBackend:
    """See :class:`ttexp.backends.base.Backend` for the contract of each method.

    Args:
        device: where the model runs.
        precision: 'auto', 'fp32' or 'bf16' (bf16 = autocast; weights and AdamW state stay fp32).
        optimizer_cfg: the ``optimizer`` config section (betas, eps, fused).
        weight_decay: AdamW decoupled weight decay for matrices (norm weights get none).
        compile: ``training.compile``: True/False, or 'auto' to compile after the first steps
            when the rest of the run repays the compile time (:mod:`ttexp.backends.compile`).
        planned_steps: optimizer steps this process will run (what ``auto`` weighs).
        ranks: the run's ranks (gradients and validation sums are summed over them); one
            process when omitted.
    """

    name = "torch"

    def __init__(
        self,
        device: torch.device,
        precision: str,
        optimizer_cfg: OptimizerConfig,
        weight_decay: float,
        compile: bool | str = False,
        ranks: Collectives | None = None,
        activation_checkpointing: bool = False,
        planned_steps: int = 0,
    ):
        self.device = device
        self.autocast_dtype = autocast_dtype_for(device, precision)
        self.optimizer_cfg = optimizer_cfg
        self.weight_decay = weight_decay
        setting = compile_setting(compile)
        self.compile = setting is True
        self._auto = (AutoCompile(planned_steps, device.type,
                                  costs=CompileCosts(cache_dir() / "compile_costs.json"))
                      if setting is None else None)
        self._is_compiled = False
        self.activation_checkpointing = activation_checkpointing
        self.ranks = ranks or OneProcess()
        self.model: Any = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._forward: Any = None
        self._loss_sum = torch.zeros((), device=device)
        if device.type == "cuda":
            self.device_name = f"{device} ({torch.cuda.get_device_name(device)})"
        else:
            self.device_name = f"cpu ({torch.get_num_threads()} threads)"

    @property
    def precision_name(self) -> str:
        return "bf16 autocast" if self.autocast_dtype is not None else "fp32"

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    # -- model and optimizer -------------------------------------------------------------------

    def build_model(self, spec: ModelSpec, init_from: Path | None = None) -> int:
        from transformers import LlamaForCausalLM

        self.model = LlamaForCausalLM(llama_config(spec)).to(self.device)
        if init_from is not None:
            self.load_weights(Path(init_from))
        self.model.train()
        self._checkpointing()
        return self._ready()

    def load_pretrained(self, path: str) -> int:
        """Load a Hugging Face model directory (or hub id) as the model; returns the parameter count.

        Raises:
            TtexpError: the weights cannot be found or loaded (the message says how to get them).
        """
        import transformers
        from transformers import AutoModelForCausalLM

        # fp32 master weights whatever config.json says (TinyLlama's says bfloat16, and
        # transformers 5 loads that dtype by default): bf16 is applied by autocast, never by
        # training bf16 weights with AdamW. The keyword was renamed in transformers 4.56.
        major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
        dtype_key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
        refuse_remote_code(path)  # before transformers could ask whether to run the model's code
        try:
            # safetensors only: a pytorch_model.bin is a Python object stream that can run code
            self.model = AutoModelForCausalLM.from_pretrained(
                path, attn_implementation="sdpa", trust_remote_code=False, use_safetensors=True,
                **{dtype_key: torch.float32})
        except (OSError, ValueError) as exc:
            raise TtexpError(
                f"Could not load pretrained weights from '{path}': {exc}. Download the model "
                "(safetensors and tokenizer files) to a directory and set model.pretrained_path=DIR."
            ) from None
        self.model.to(self.device).train()
        self._checkpointing()
        return self._ready()

    def apply_adapter(self, adapter: AdapterConfig) -> int:  # PEFT: ttexp.backends.torch_lora
        self.model = torch_lora.wrap_with_lora(self.model, adapter).to(self.device).train()
        self._ready()  # the optimizer now holds the adapter alone (the rest is frozen)
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def _ready(self) -> int:
        """Point the forward pass (compiled or not) and a fresh AdamW at ``self.model`` as it is
        now; returns its parameter count."""
        if not self.compile and self.device.type == "cpu":  # memory-bound element-wise ops
            torch_eager.use_fast_eager(self.model)
        self._forward = self._compiled() if self.compile else self.model
        self.optimizer = self._make_optimizer()
        return sum(p.numel() for p in self.model.parameters())

    def adapter_state(self) -> NamedState | None:
        return torch_lora.adapter_state(self.model) if torch_lora.has_adapter(self.model) else None

    def load_adapter_tensors(self, tensors: dict[str, Any]) -> None:
        torch_lora.load_adapter_tensors(self.model, tensors)  # raises TtexpError without an adapter

    def _checkpointing(self) -> None:
        """Turn on transformers' gradient checkpointing when asked: one checkpoint per decoder
        layer, non-reentrant (works with frozen weights, e.g. LoRA, and with torch.compile)."""
        if self.activation_checkpointing:
            self.model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})

    def _compiled(self) -> Any:
        """The model with its decoder layers compiled (:func:`ttexp.backends.compile.compile_regions`),
        with Inductor's caches under the user cache, so the next run of the same shape reuses the
        compiled kernels."""
        enable_compile_cache(cache_dir())
        torch_eager.restore_stock(self.model)  # Inductor fuses the stock ops itself
        self._is_compiled = True
        return compile_regions(self.model)

    def _eager(self) -> contextlib.AbstractContextManager:
        """Validation and generation run the layers eagerly even when training compiled them:
        no second compile for no-grad mode, none per decoding length."""
        if not self._is_compiled:
            return contextlib.nullcontext()
        return torch.compiler.set_stance("force_eager")

    @property
    def compile_state(self) -> str:
        """'compiled', 'eager' (for good), or 'deciding' (``training.compile=auto`` has yet to
        decide, or still times the compiled steps it records as this shape's gain)."""
        if self._auto is not None and self._auto.pending:
            return "deciding"
        return "compiled" if self._is_compiled else "eager"

    def expect_steps(self, remaining: int) -> None:
        """How many optimizer steps this process will run from here (a resumed run starts
        part-way); what ``training.compile=auto`` weighs against the compile cost."""
        if self._auto is not None:
            self._auto.expect_steps(remaining)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        return make_adamw(self.model, self.optimizer_cfg, self.weight_decay, self.device)

    # -- training ------------------------------------------------------------------------------

    def _to_device(self, arr: np.ndarray | None) -> torch.Tensor | None:
        if arr is None:
            return None
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int64))
        return t.to(self.device, non_blocking=True)

    def _loss(self, batch: Batch) -> torch.Tensor:
        x, y = self._to_device(batch.inputs), self._to_device(batch.labels)
        mask = self._to_device(batch.attention_mask)
        with self._autocast():
            logits = self._forward(input_ids=x, attention_mask=mask, use_cache=False).logits
        # Labels arrive already shifted (data pipeline), so they are NOT passed to the model:
        # transformers' own loss would shift them a second time.
        return F.cross_entropy(
            logits.float().view(-1, logits.size(-1)), y.view(-1), ignore_index=IGNORE_INDEX
        )

    def micro_step(self, batch: Batch, loss_scale: float) -> None:
        if self._auto is not None and not self._auto.key:
            self._auto.key = self._cost_key(batch)
        loss = self._loss(batch)
        (loss * loss_scale).backward()
        self._loss_sum += loss.detach() * loss_scale  # stays on device: no sync here

    def _cost_key(self, batch: Batch) -> str:
        return cost_key(self.model.config, tuple(batch.inputs.shape), self.precision_name,
                        torch_lora.has_adapter(self.model), self.activation_checkpointing,
                        self.device.type)

    def _average_across_ranks(self, params: list[torch.Tensor]) -> None:
        """Average gradients and the step's loss over the ranks: one flat all-reduce (the
        torch analogue of ttml's synchronize_gradients), before clipping."""
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        grads = [p.grad for p in params]
        flat = _flatten_dense_tensors(grads + [self._loss_sum.view(1).to(grads[0].dtype)])
        self.ranks.sum_(flat).div_(self.ranks.world_size)
        for g, avg in zip(grads, _unflatten_dense_tensors(flat[:-1], grads)):
            g.copy_(avg)
        self._loss_sum.copy_(flat[-1])

    def optimizer_step(self, lr: float, max_grad_norm: float | None) -> StepStats:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.ranks.world_size > 1:
            self._average_across_ranks(params)
        limit = float("inf") if max_grad_norm is None else max_grad_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(params, limit)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        stats = torch.stack([self._loss_sum, grad_norm.to(self._loss_sum.dtype)]).tolist()
        self._loss_sum.zero_()
        if self._auto is not None and self._auto.step_done():
            a = self._auto
            log.info("training.compile=auto: %.2f s/step over %d more steps, %.0f%% saved, repays "
                     "compiling (%.0f s; %s); compiling now", a.step_s, a.planned_steps - a.steps,
                     100 * a.gain, a.cost_s, a.cost_source)
            self._forward = self._compiled()
        return StepStats(loss=stats[0], grad_norm=stats[1])

    @torch.no_grad()
    def evaluate(self, batches: Iterable[Batch]) -> float:
        self.model.eval()
        sums = torch.zeros(2, device=self.device, dtype=torch.float64)  # [loss * tokens, tokens]
        try:
            with self._eager():
                for batch in batches:
                    n = int((batch.labels != IGNORE_INDEX).sum())
                    if n:  # a rank may get no rows of a short last batch
                        sums[0] += self._loss(batch).double() * n
                        sums[1] += n
        finally:
            self.model.train()
        total, count = self.ranks.sum_(sums).tolist()
        if count == 0:
            raise TtexpError("Validation produced no tokens to score; check the validation data.")
        return total / count

    @torch.no_grad()
    def generate(self, prompt_ids: list[int], params: SamplingParams) -> list[int]:
        devices = [self.device] if self.device.type == "cuda" else []
        prompt = list(prompt_ids) or [0]
        self.model.eval()
        try:
            # fork_rng: sampling must not move the training RNG (exact resume depends on it).
            with torch.random.fork_rng(devices=devices), self._autocast(), self._eager():
                torch.manual_seed(params.seed)
                return generate_tokens(self.model, prompt, params, self.device)
        finally:
            self.model.train()

    # -- state ---------------------------------------------------------------------------------

    def weight_tensors(self) -> dict[str, torch.Tensor]:
        """Weights under Hugging Face names; a tied LM head is stored once (as the embedding).
        With a LoRA adapter, the frozen base's weights (the adapter is in :meth:`adapter_state`)."""
        lora = torch_lora.has_adapter(self.model)
        sd = torch_lora.base_state_dict(self.model) if lora else self.model.state_dict()
        if self.model.config.tie_word_embeddings:
            sd.pop("lm_head.weight", None)
        return {k: v.detach().contiguous().cpu() for k, v in sd.items()}

    def save_weights(self, directory: Path) -> None:
        """Write ``directory/model.safetensors`` (Hugging Face names)."""
        write_weights(directory, self.weight_tensors())

    def load_weights(self, directory: Path) -> None:
        """Load ``model.safetensors`` from ``directory`` into the built model.

        Raises:
            TtexpError: the file is missing or unreadable, or names/shapes do not match the model
                (every mismatch is listed).
        """
        from safetensors.torch import load_file

        path = Path(directory) / WEIGHTS_NAME
        if not path.is_file():
            raise TtexpError(f"No {WEIGHTS_NAME} in {directory}: not a ttexp checkpoint or model dir.")
        try:
            loaded = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise TtexpError(f"Could not read {path}: {exc}. The file is damaged.") from None
        tied = self.model.config.tie_word_embeddings
        expected = {k: v for k, v in self.model.state_dict().items()
                    if not (tied and k == "lm_head.weight")}  # views: names and shapes only
        problems = [f"missing {k}" for k in expected if k not in loaded]
        problems += [f"unexpected {k}" for k in loaded if k not in expected]
        problems += [
            f"{k}: file has {tuple(loaded[k].shape)}, model has {tuple(v.shape)}"
            for k, v in expected.items()
            if k in loaded and loaded[k].shape != v.shape
        ]
        if problems:
            shown = "; ".join(problems[:12]) + (" ..." if len(problems) > 12 else "")
            raise TtexpError(
                f"The weights in {path} do not fit model={self.model.config.model_type} as "
                f"configured ({len(problems)} problems: {shown}). Use the model config they were "
                "trained with."
            )
        self.model.load_state_dict(loaded, strict=False)
        if self.model.config.tie_word_embeddings:
            self.model.tie_weights()

    def optimizer_state(self) -> NamedState:
        """``optimizer.state_dict()`` split: tensors named ``state.<param index>.<key>``; the
        param groups and any non-tensor per-parameter entries as JSON."""
        sd = self.optimizer.state_dict()
        tensors, other = {}, {}
        for idx, entries in sd["state"].items():
            for key, value in entries.items():
                if torch.is_tensor(value):
                    tensors[f"state.{idx}.{key}"] = value.detach().cpu()
                else:
                    other.setdefault(str(idx), {})[key] = value
        groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
                  for g in sd["param_groups"]]
        return NamedState(tensors, {"param_groups": groups, "state_scalars": other})

    def load_optimizer_state(self, state: NamedState) -> None:
        """Rebuild ``optimizer.state_dict()`` from :meth:`optimizer_state`'s split and load it.

        Raises:
            TtexpError: the state belongs to another optimizer or model (names the difference).
        """
        groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()}
                  for g in state.scalars.get("param_groups", [])]
        entries: dict[int, dict[str, Any]] = {}
        for name, value in state.tensors.items():
            _, idx, key = name.split(".", 2)
            entries.setdefault(int(idx), {})[key] = value
        for idx, extra in state.scalars.get("state_scalars", {}).items():
            entries.setdefault(int(idx), {}).update(extra)
        try:
            self.optimizer.load_state_dict({"state": entries, "param_groups": groups})
        except (ValueError, KeyError, TypeError) as exc:
            raise TtexpError(f"The saved optimizer state does not fit this model's optimizer ({exc}). "
                             "Resume with the model and optimizer settings it was trained with.") from None

    def save_pretrained(self, directory: Path, tokenizer: Any) -> None:
        """With LoRA: the merged model plus ``adapter/`` (PEFT); the model stays merged."""
        if torch_lora.has_adapter(self.model):
            self.model = torch_lora.save_merged_and_adapter(self.model, Path(directory))
            self._forward = self.model
        else:
            self.model.save_pretrained(str(directory), safe_serialization=True)
        tokenizer.save_pretrained(str(directory))

    def close(self) -> None:
        self.model = None
        self.optimizer = None
