"""The backend seam: what the training loop asks of a backend, and nothing more.

A backend owns tensors only: it builds or loads the model, runs a micro-step (forward, loss,
backward), applies an optimizer step, evaluates, generates, and moves state to and from
safetensors. Schedules, accumulation cadence, validation cadence, checkpoint cadence, logging,
progress and the run record belong to :mod:`ttexp.train.loop`, which is the same for every backend.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Protocol, runtime_checkable

from ttexp.config.schema import DecodingConfig
from ttexp.data.batch import Batch



@dataclass
class NamedState:
    """State a backend hands to the checkpoint module, which alone decides the files
    (:mod:`ttexp.train.checkpoint`: safetensors for the tensors, JSON for the scalars).

    Attributes:
        tensors: name -> host tensor (``torch.Tensor`` or ``np.ndarray``, any shape and dtype
            safetensors stores). Names are the backend's own; they only have to round-trip.
        scalars: everything else, JSON-able (numbers, strings, bools, None, lists, str-keyed dicts).
    """

    tensors: dict[str, Any]
    scalars: dict[str, Any]


@dataclass
class StepStats:
    """What one optimizer step reports (one host synchronisation per step, not per micro-step).

    Attributes:
        loss: mean training loss over the step's micro-batches (natural log, per token).
        grad_norm: global L2 norm of the gradients before clipping.
    """

    loss: float
    grad_norm: float


@dataclass
class SamplingParams(DecodingConfig):
    """Decoding settings for one generation: the config's :class:`DecodingConfig` plus the EOS
    token that ends it. ``temperature == 0`` means greedy."""

    eos_token_id: int | None = None

    @classmethod
    def from_config(cls, generation: DecodingConfig, tokenizer: Any = None) -> "SamplingParams":
        """From the ``generation`` config section; the EOS id comes from the tokenizer (if any)."""
        return cls(**{f.name: getattr(generation, f.name) for f in fields(DecodingConfig)},
                   eos_token_id=getattr(tokenizer, "eos_token_id", None))

    def to_generation_config(self) -> Any:
        """The ``transformers.GenerationConfig`` that samples as :mod:`ttexp.backends.sampling`
        does (greedy when ``temperature <= 0``; top-k 0 and top-p 1.0 are off). The pad id is
        the EOS id, else 0."""
        from transformers import GenerationConfig

        greedy = self.temperature <= 0
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else self.temperature,
            top_k=None if greedy or self.top_k <= 0 else self.top_k,
            top_p=None if greedy or self.top_p >= 1.0 else self.top_p,
            repetition_penalty=self.repetition_penalty,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.eos_token_id if self.eos_token_id is not None else 0,
        )


class Collectives(Protocol):
    """What a backend needs from the run's ranks (:class:`ttexp.train.ranks.Ranks`): a sum over
    every rank, in place, of a tensor on ``device``. In one process ``world_size`` is 1 and the sum
    is the identity."""

    world_size: int
    device: str

    def sum_(self, values: Any) -> Any: ...


class OneProcess:
    """The :class:`Collectives` of a run in one process: ``sum_`` returns its argument."""

    world_size = 1
    device = "cpu"

    def sum_(self, values: Any) -> Any:
        return values


@runtime_checkable
class Backend(Protocol):
    """A training backend. One instance trains one model in one process.

    ``tests/unit/test_backend_protocol.py`` checks every backend against this Protocol, member by
    member and signature by signature.
    """

    name: str
    """'torch' or 'ttml'."""
    device_name: str
    """What runs the model, for the record (e.g. 'cpu', 'cuda:0 (NVIDIA H100)', 'N300 mesh [1, 2]')."""
    precision_name: str
    """How it computes, for the record: 'fp32', 'bf16 autocast', 'bf16' (ttml)."""

    def build_model(self, spec: Any, init_from: Path | None = None) -> int:
        """Create the model from a :class:`~ttexp.models.spec.ModelSpec`, randomly initialised
        from the seeded global RNG, or with weights loaded from ``init_from`` (a directory with
        ``model.safetensors``, Hugging Face names). Creates the optimizer. Returns the number of
        parameters."""

    def load_pretrained(self, path: str) -> int:
        """Create the model, its weights and its optimizer from a Hugging Face model directory
        (``config.json`` + safetensors; a hub id when online), master weights in fp32. Returns
        the number of parameters. Raises TtexpError naming how to get the weights."""

    def load_weights(self, directory: Path) -> None:
        """Replace the built model's weights with ``directory/model.safetensors`` (Hugging Face
        names). Raises TtexpError listing every missing, unexpected or mis-shaped tensor."""

    def apply_adapter(self, adapter: Any) -> int:
        """Freeze the loaded model and add LoRA adapters as ``adapter`` (an
        :class:`~ttexp.config.schema.AdapterConfig`, Hugging Face target names) says; rebuild the
        optimizer over the adapter's parameters alone and return their number. Consumes random
        numbers (the adapters' initialisation). Raises BackendUnavailable where the backend has
        no LoRA."""

    def adapter_state(self) -> NamedState | None:
        """The adapter as PEFT stores it: tensors under ``adapter_model.safetensors``' names and,
        under ``scalars["adapter_config"]``, what ``adapter_config.json`` holds; None without one."""

    def load_adapter_tensors(self, tensors: dict[str, Any]) -> None:
        """Copy an adapter's tensors (``adapter_state``'s names, e.g. read from a PEFT
        ``adapter_model.safetensors``) into the applied adapter. Raises TtexpError when there is
        none, or names or shapes differ."""

    def micro_step(self, batch: Batch, loss_scale: float) -> None:
        """Forward, loss and backward for one micro-batch; gradients accumulate. The loss that is
        back-propagated is ``mean token loss of batch * loss_scale``; the loop sets ``loss_scale``
        so that a step's gradient is the mean over every scored token of all its micro-steps and
        ranks (``world_size * batch.num_scored / step's scored tokens``). The step's reported loss
        is the sum of those scaled losses, averaged over ranks. Must not synchronise with the host."""

    def optimizer_step(self, lr: float, max_grad_norm: float | None) -> StepStats:
        """Clip gradients to ``max_grad_norm`` (None = no clipping), set the learning rate, apply
        the optimizer, zero the gradients, and report the step's mean loss and pre-clip norm."""

    def evaluate(self, batches: Iterable[Batch]) -> float:
        """Mean token loss over ``batches`` (no gradients, dropout off)."""

    def generate(self, prompt_ids: list[int], params: SamplingParams) -> list[int]:
        """Continue ``prompt_ids``; return only the new token ids. Uses its own seeded RNG and
        never disturbs the training random state."""

    def weight_tensors(self) -> dict[str, Any]:
        """The weights on the host under Hugging Face names (a tied LM head once, as the
        embedding), as torch tensors or NumPy arrays; what ``model.safetensors`` holds."""

    def optimizer_state(self) -> NamedState:
        """The optimizer state as named host tensors and JSON-able scalars (never Python objects)."""

    def load_optimizer_state(self, state: NamedState) -> None:
        """Restore what :meth:`optimizer_state` handed over, onto the live optimizer (each tensor
        at the dtype and placement the live state has). Raises TtexpError naming what does not
        fit (another optimizer, another model)."""

    def save_pretrained(self, directory: Path, tokenizer: Any) -> None:
        """Write a model directory that ``transformers.AutoModelForCausalLM`` and
        ``AutoTokenizer`` load: config, safetensors weights, tokenizer files."""

    def close(self) -> None:
        """Release devices. Called on every exit path."""
