"""A strict test double of tt-train's ``ttml`` / ``ttnn`` Python API (test code only).

It stands in for nothing in the product: tests hand it to :class:`TtmlBackend` so the backend's
control flow runs on CPU. It implements the surface the backend uses, as reference/ttml_api.md
documents it (Gen B names by default; ``generation="A"`` swaps in the Gen A optimizer classes
and ``synchronize_parameters``; ``generation="C"`` adds the mesh API: ``Mesh``,
``open_device_mesh``, ``sync_gradients``), computes with torch (ttml's Llama layout, via
``ttml_reference``), and raises on every documented constraint the real API has or that
tt-train's loop relies on:

- ``from_numpy``: device must be open; element width 32 bits; dtype agrees with ``new_type``;
  ids ROW_MAJOR UINT32; a mesh mapper splits dim 0 evenly.
- model call: inputs ``[B, 1, 1, T]`` UINT32 ROW_MAJOR, T a multiple of 32; mask BFLOAT16 TILE
  ``[1, 1, T, T]``; no forward after a backward until ``reset_graph()``.
- ``cross_entropy_loss``: logits ``[B, 1, T, V]``, targets ``[B, T]`` UINT32, ids < V.
- optimizer: ``set_lr`` before every ``step``; on a mesh, gradients synchronised before ``step``.
- multi-device: ``enable_fabric(n)`` before ``open_device``; parallelism context at most once.

On a mesh the double runs the whole batch once (the mean over equal shards equals the average of
the shards' means) and a composer returns one copy per device, as the concat composer would.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

import ttml_reference as ref
from ttexp.models.ttml_weights import TtmlLayout


class ApiViolation(AssertionError):
    """The backend broke a rule of the ttml API (or of tt-train's loop)."""


class Layout(Enum):
    TILE = "TILE"
    ROW_MAJOR = "ROW_MAJOR"


class DataType(Enum):
    UINT32 = "UINT32"
    INT32 = "INT32"
    FLOAT32 = "FLOAT32"
    BFLOAT16 = "BFLOAT16"


class GradMode(Enum):
    ENABLED = 1
    DISABLED = 0


class ReduceType(Enum):
    NONE = 0
    MEAN = 1
    SUM = 2


class RunnerType(Enum):
    Default = 0
    MemoryEfficient = 1


class WeightTyingType(Enum):
    Disabled = 0
    Enabled = 1


class State:
    """What the double saw; tests read it."""

    def __init__(self):
        self.device_open = False
        self.opened = 0
        self.closed = 0
        self.mesh_devices = 1
        self.fabric = None
        """The last ``enable_fabric(n)``'s n (kept after close, for tests)."""
        self.fabric_this_open = None
        """``enable_fabric(n)`` since the last close: once per device session, before the open."""
        self.graph_dirty = False
        self.resets = 0
        self.backwards = 0
        self.parallelism = 0
        self.named_mesh = None
        self.seed = None
        self.grad_mode = GradMode.ENABLED
        self.synced_since_step = False
        self.lr_since_step = False
        self.lrs: list[float] = []
        self.steps = 0
        self.syncs = 0
        self.uploads: list[tuple[tuple, str, str]] = []
        self.fail_backward = False
        self.chips = 8
        """Chips this host has (``device_ids`` must name distinct ones below this)."""
        self.device_ids: list[int] = []


class Tensor:
    def __init__(self, value: torch.Tensor, state: State, dtype: DataType, layout: Layout):
        self.value, self.state, self.dtype_, self.layout = value, state, dtype, layout
        self.uploaded = False
        self.requires_grad = value.requires_grad

    @staticmethod
    def from_numpy(numpy_tensor, layout=Layout.TILE, new_type=None, mapper=None):
        """``Tensor.from_numpy(numpy_tensor, layout=TILE, new_type=None, mapper=None)``
        (``nb_autograd.cpp``, reference/ttml_audit_2026-11.md: the keyword is ``numpy_tensor``).
        The result requires gradients, as ttml's does, until ``set_requires_grad(False)``."""
        arr = numpy_tensor
        st = STATE
        if not st.device_open:
            raise ApiViolation("from_numpy before open_device")
        arr = np.asarray(arr)
        if arr.dtype.itemsize != 4:
            raise ApiViolation(f"Unsupported precision: expected 32 bits, got {arr.dtype}")
        kind = {"u": DataType.UINT32, "i": DataType.INT32, "f": DataType.FLOAT32}[arr.dtype.kind]
        dtype = new_type or kind
        if (kind in (DataType.UINT32, DataType.INT32)) != (dtype in (DataType.UINT32, DataType.INT32)):
            raise ApiViolation(f"new_type {dtype} does not fit a {arr.dtype} array")
        if dtype == DataType.UINT32 and layout != Layout.ROW_MAJOR:
            raise ApiViolation("token ids must be ROW_MAJOR")
        if mapper is not None and arr.shape[0] % st.mesh_devices:
            raise ApiViolation(f"cannot shard dim 0 of {arr.shape} over {st.mesh_devices} devices")
        st.uploads.append((arr.shape, dtype.value, layout.value))
        value = torch.from_numpy(arr.astype(np.int64) if kind != DataType.FLOAT32 else arr.copy())
        if dtype == DataType.BFLOAT16:
            value = value.to(torch.bfloat16).to(torch.float32)
        t = Tensor(value, st, dtype, layout)
        t.uploaded, t.requires_grad = True, dtype in (DataType.BFLOAT16, DataType.FLOAT32)
        return t

    def set_requires_grad(self, requires_grad):
        """Also stops (or starts) torch computing this leaf's gradient, as ttml's autograd does."""
        self.requires_grad = bool(requires_grad)
        if self.value.is_leaf and self.value.is_floating_point():
            self.value.requires_grad_(self.requires_grad)

    def shape(self):
        return list(self.value.shape)

    def to_numpy(self, new_type=None, composer=None):
        a = self.value.detach().float().numpy().copy()
        if composer is not None:
            a = np.concatenate([a] * self.state.mesh_devices, axis=0)
        return a

    def backward(self, retain_graph):
        if self.state.fail_backward:
            raise RuntimeError("double: backward failed")
        if self.value.numel() != 1:
            raise ApiViolation("backward on a non-scalar")
        self.value.backward()
        self.state.backwards += 1
        self.state.graph_dirty = True

    def assign(self, other: "Tensor"):
        if tuple(other.value.shape) != tuple(self.value.shape):
            raise ApiViolation(f"assign shape {tuple(other.value.shape)} to {tuple(self.value.shape)}")
        with torch.no_grad():
            self.value.copy_(other.value)

    def get_requires_grad(self):
        return self.value.requires_grad

    def dtype(self):
        return self.dtype_

    def __reduce__(self):
        raise TypeError("cannot pickle 'ttml._ttml.autograd.Tensor' object")


class AutoContext:
    """``ttml.autograd.AutoContext`` as bound in ``tt-train/sources/ttml/nanobind/nb_autograd.cpp`` @
    2e722865e62806b7cb8f4166650df45202f4d74f: ``get_instance()`` (a singleton), ``open_device(
    mesh_shape=None, device_ids=None)`` (a list/tuple of 2 ints, else it raises), ``close_device``,
    ``get_device``, ``set_seed(seed)``, ``reset_graph``, ``set_gradient_mode(mode)``,
    ``initialize_parallelism_context(config)``, ``is_parallelism_context_initialized``."""

    _instance = None

    @classmethod
    def get_instance(cls):
        if cls._instance is None:
            cls._instance = AutoContext()
        return cls._instance

    def open_device(self, mesh_shape=None, device_ids=None):
        st = STATE
        if st.device_open:
            raise ApiViolation("open_device twice")
        shape = list(mesh_shape) if mesh_shape is not None else [1, 1]
        if len(shape) != 2:
            raise RuntimeError("mesh_shape must be a list/tuple of 2 integers: [rows, cols]")
        n = int(np.prod(shape))
        ids = [int(i) for i in (device_ids or ())]
        if ids and (len(ids) != n or len(set(ids)) != n or max(ids) >= st.chips or min(ids) < 0):
            raise ApiViolation(f"device_ids {ids} do not name {n} distinct chips of the {st.chips} here")
        if n > 1 and st.fabric_this_open != n:
            raise ApiViolation("enable_fabric(num_devices) must be called before open_device")
        st.device_open, st.mesh_devices, st.device_ids = True, n, ids
        st.opened += 1

    def close_device(self):
        """Closes the mesh; a later open enables the fabric again (each open is a session)."""
        STATE.device_open, STATE.fabric_this_open = False, None
        STATE.closed += 1

    def get_device(self):
        return "device"

    def set_seed(self, seed):
        STATE.seed = seed
        torch.manual_seed(seed)

    def reset_graph(self):
        STATE.graph_dirty = False
        STATE.resets += 1

    def set_gradient_mode(self, mode):
        STATE.grad_mode = mode

    def is_parallelism_context_initialized(self):
        return STATE.parallelism > 0

    def initialize_parallelism_context(self, config):
        if STATE.parallelism:
            raise ApiViolation("initialize_parallelism_context called twice")
        STATE.parallelism += 1


@dataclass(frozen=True)
class LlamaConfig:
    hidden_size: int = 384
    intermediate_size: Optional[int] = None
    num_hidden_layers: int = 6
    num_attention_heads: int = 6
    num_key_value_heads: int = 2
    vocab_size: int = 256
    max_position_embeddings: int = 256
    rope_theta: float = 10000.0
    attention_dropout: float = 0.0
    mlp_dropout: float = 0.0
    runner_type: RunnerType = RunnerType.Default
    weight_tying: WeightTyingType = WeightTyingType.Disabled

    def __post_init__(self):
        if self.max_position_embeddings % 32 or self.hidden_size % 32:
            raise ValueError("max_position_embeddings and hidden_size must be divisible by 32")


class NamedParameters:
    """``ttml.NamedParameters``: a nanobind-bound ``std::map<std::string, TensorPtr>``
    (``tt-train/sources/ttml/nanobind/__init__.cpp`` @ eed09f269c3c0218370ebb4ae00c9dfd159b83cf,
    ``nb::bind_map``). A map, not a ``dict`` (``isinstance(p, dict)`` is False), iterated in key
    order, and, like every nanobind object, not picklable."""

    def __init__(self, items=None):
        self._d = dict(items or {})

    def __getitem__(self, key):
        return self._d[key]

    def __setitem__(self, key, value):
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise TypeError(f"NamedParameters maps str to ttml.autograd.Tensor; got {type(key).__name__} "
                            f"-> {type(value).__name__}")
        self._d[key] = value

    def __contains__(self, key):
        return key in self._d

    def __len__(self):
        return len(self._d)

    def __iter__(self):
        return iter(sorted(self._d))

    def keys(self):
        return sorted(self._d)

    def values(self):
        return [self._d[k] for k in self.keys()]

    def items(self):
        return [(k, self._d[k]) for k in self.keys()]

    def __reduce__(self):
        raise TypeError("cannot pickle 'ttml._ttml.NamedParameters' object")


def compute_swiglu_intermediate_size(hidden_size: int, multiple_of: int = 256) -> int:
    """tt-train's default MLP width when ``intermediate_size`` is None: ``4 * d * 2 // 3`` rounded up
    to a multiple of 256 (``ttml/models/llama/transformer.py`` @ 0a866e5960a6ab2d3413bcf325e37cfbf817da86)."""
    unrounded = (4 * hidden_size * 2) // 3
    return (unrounded + multiple_of - 1) // multiple_of * multiple_of


class ModuleBase:
    """ttml's C++ ``ModuleBase`` (``tt-train/sources/ttml/modules/module_base.hpp`` @
    028de0ae01a43a296e59b0ee4e6dc099a7c8cc15, ``module_base.cpp`` @
    0b1f79382ddd984270792d4bb4404262a8dc5a74): named tensors and child modules kept in
    ``std::map`` (key order); ``register_*`` raises on a name already taken, ``override_*`` on a
    name not yet taken. ``parameters()`` walks breadth-first from ``"<name>/"`` and keeps each
    tensor once, under the first name the walk reaches: so a tied head, which the embedding
    re-registers under its own ``weight``, is listed once, as ``fc/weight`` ("blocks" < "fc" <
    "ln_fc" < "tok_emb")."""

    def __init__(self, name: str):
        self._name, self._tensors, self._modules = name, {}, {}

    def get_name(self) -> str:
        return self._name

    def named_children(self):
        """Python ``AbstractModuleBase.named_children``: the attribute modules, in set order."""
        return list(self._modules.items())

    def named_parameters(self):
        """Python ``AbstractModuleBase.named_parameters``: ``parameters()`` without the root
        name, ``/`` -> ``.``."""
        return [(k.split("/", 1)[-1].replace("/", "."), t) for k, t in self.parameters().items()]

    def register_tensor(self, tensor, name):
        if name in self._tensors:
            raise RuntimeError("Names of two tensors coincide")
        self._tensors[name] = tensor

    def register_module(self, module, name):
        if name in self._modules:
            raise RuntimeError(f"Names of two modules coincide: {name}")
        self._modules[name] = module

    def override_tensor(self, tensor, name):
        if name not in self._tensors:
            raise RuntimeError(f"Tensor with such name does not exist. Name {name}")
        self._tensors[name] = tensor

    def override_module(self, module, name):
        if name not in self._modules:
            raise RuntimeError(f"Module with such name does not exist. Name {name}")
        self._modules[name] = module

    def setattr(self, name, value):
        """Python ``AbstractModuleBase.__setattr__`` (``ttml/modules/module_base.py`` @
        04a6c330ca72eb61ce17b516e71d7fc56ba2a46f): register a module or tensor under the attribute
        name, override it when the name is taken."""
        setattr(self, name, value)
        kind = "module" if isinstance(value, ModuleBase) else "tensor"
        try:
            getattr(self, f"register_{kind}")(value, name)
        except RuntimeError:
            getattr(self, f"override_{kind}")(value, name)

    def parameters(self) -> "NamedParameters":
        out, seen = {}, set()
        queue, queued = deque([(self, self._name + "/")]), {self._name}
        while queue:
            module, prefix = queue.popleft()
            for name in sorted(module._tensors):
                t = module._tensors[name]
                if id(t) not in seen:
                    seen.add(id(t))
                    out[prefix + name] = t
            for name in sorted(module._modules):
                if prefix + name not in queued:
                    queued.add(prefix + name)
                    queue.append((module._modules[name], prefix + name + "/"))
        return NamedParameters(out)


def _module(cls: str, **children) -> ModuleBase:
    m = ModuleBase(cls)  # AbstractModuleBase names itself after its class (create_name)
    for name, value in children.items():
        m.setattr(name, value)
    return m


def _param(*shape) -> Tensor:
    return Tensor(torch.zeros(shape).requires_grad_(True), STATE, DataType.BFLOAT16, Layout.TILE)


class LinearLayer(ModuleBase):
    """``LinearLayer(in, out, has_bias=False)``: ``weight [1, 1, out, in]``, ``bias`` None,
    ``in_features``/``out_features`` (``ttml/modules/linear.py``; LoraModel injects into these)."""

    def __init__(self, fan_in: int, fan_out: int):
        super().__init__("LinearLayer")
        self.in_features, self.out_features, self.bias = fan_in, fan_out, None
        self.setattr("weight", _param(1, 1, fan_out, fan_in))


def _linear(fan_in: int, fan_out: int) -> ModuleBase:
    return LinearLayer(fan_in, fan_out)


def _block(cfg: "LlamaConfig", layout: TtmlLayout) -> ModuleBase:
    """``LlamaBlock``: ``mlp``, ``attention_norm``, ``mlp_norm``, ``attention`` (``transformer.py`` @
    0a866e59…); attention ``q_linear`` + ``kv_linear`` or, newer, ``qkv_linear`` (``gqattn.py`` @
    012fd65b0197022d31602984b4a5660789e96862), then ``out_linear``."""
    d = cfg.hidden_size
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    m = cfg.intermediate_size or compute_swiglu_intermediate_size(d)
    up = {"w_gate_up": _linear(d, 2 * m)} if layout.packed_mlp else {"w1": _linear(d, m), "w3": _linear(d, m)}
    qkv = ({"qkv_linear": _linear(d, d + 2 * kv)} if layout.fused_qkv
           else {"q_linear": _linear(d, d), "kv_linear": _linear(d, 2 * kv)})
    norm = lambda: _module("RMSNormLayer", gamma=_param(1, 1, 1, d))  # noqa: E731
    return _module("LlamaBlock", mlp=_module("LlamaMLP", **up, w2=_linear(m, d)), attention_norm=norm(),
                   mlp_norm=norm(), attention=_module("GroupedQueryAttention", **qkv, out_linear=_linear(d, d)))


class Llama:
    """ttml's Python Llama (``ttml/models/llama/__init__.py`` @ 09b4c34bfc28c388c909a45cd0440bb3d7b12650)
    built as a module tree, so its parameter names come from ``ModuleBase.parameters()`` as on the
    device: ``fc``, ``tok_emb`` (tied: the embedding re-registers ``fc``'s tensor), ``blocks``
    (a ``ModuleList``: ``"0"``, ``"1"``, ...), ``ln_fc``. ``layout.prefix``/``layout.block`` pick
    the C++ Llama's names instead (root ``llama``, blocks ``llama_block_{i}`` on the root). Weights
    N(0, 0.02), norms one, drawn in name order."""

    def __init__(self, cfg: LlamaConfig, layout: TtmlLayout):
        self.cfg = cfg
        tied = cfg.weight_tying == WeightTyingType.Enabled
        self.layout = TtmlLayout(**{**layout.__dict__, "tied": tied})
        d, v = cfg.hidden_size, cfg.vocab_size
        root = ModuleBase(layout.prefix)
        root.setattr("fc", _linear(d, v))
        root.setattr("tok_emb", _module("Embedding", weight=_param(1, 1, (v + 31) // 32 * 32, d)))
        if tied:
            root.tok_emb.setattr("weight", root.fc.weight)
        blocks = [_block(cfg, layout) for _ in range(cfg.num_hidden_layers)]
        if layout.block == "blocks/{}":
            root.setattr("blocks", _module("ModuleList", **{str(i): b for i, b in enumerate(blocks)}))
        else:
            for i, b in enumerate(blocks):
                root.setattr(layout.block.format(i), b)
        root.setattr("ln_fc", _module("RMSNormLayer", gamma=_param(1, 1, 1, d)))
        self.root = root
        with torch.no_grad():
            for name, p in root.parameters().items():  # key order: the init order of the first double
                p.value.copy_(torch.ones_like(p.value) if name.endswith("gamma")
                              else torch.randn(p.value.shape) * 0.02)
        self.training = True

    @property
    def params(self) -> "NamedParameters":
        """Read from the module tree on every call, as ttml's C++ map is (LoRA changes it)."""
        return self.root.parameters()

    def parameters(self):
        return self.params

    @property
    def named_children(self):
        """Python Llama only: the C++ Llama is a bound ``ModuleBase`` without the Python
        ``AbstractModuleBase`` methods (``module_base.py`` @ 04a6c330), so LoRA cannot walk it."""
        return self._python_only("named_children")

    @property
    def named_parameters(self):
        return self._python_only("named_parameters")

    def _python_only(self, what: str):
        if self.layout.block != "blocks/{}":
            raise AttributeError(f"'LlamaModel' object (C++) has no attribute '{what}'")
        return getattr(self.root, what)

    def _weights(self) -> dict:
        """Parameter values by name; a LoRA-wrapped linear's weight is ``W + s B A`` (equal to
        ``LoraLinear.forward``'s ``linear(x, W) + s linear(linear(x, A), B)`` without dropout)."""
        import ttml_double_lora

        return ttml_double_lora.effective_weights(self.root, self.training)

    def train(self):
        self.training = True

    def eval(self):
        self.training = False

    def __call__(self, x: Tensor, mask: Tensor, kv_cache=None, new_tokens=None):
        st = STATE
        if st.graph_dirty:
            raise ApiViolation("forward after backward without reset_graph()")
        b, one, one2, t = x.shape()
        if (one, one2) != (1, 1) or x.dtype_ != DataType.UINT32 or x.layout != Layout.ROW_MAJOR:
            raise ApiViolation(f"inputs must be UINT32 ROW_MAJOR [B,1,1,T]; got {x.shape()} {x.dtype_}")
        if t % 32:
            raise ApiViolation(f"sequence length {t} is not a multiple of 32")
        _constant(mask, "the attention mask")
        if kv_cache is not None:
            return kv_cache.forward(self, x, mask, new_tokens)
        if mask.shape() != [1, 1, t, t] or mask.dtype_ != DataType.BFLOAT16 or mask.layout != Layout.TILE:
            raise ApiViolation(f"mask must be BFLOAT16 TILE [1,1,{t},{t}]; got {mask.shape()}")
        if not torch.equal(mask.value[0, 0], torch.tril(torch.ones(t, t))):
            raise ApiViolation("the double supports only the causal mask")
        p = self._weights()
        c = self.cfg
        with torch.set_grad_enabled(st.grad_mode == GradMode.ENABLED):
            logits = ref.forward(p, self.layout, x.value[:, 0, 0, :], c.num_hidden_layers,
                                 c.num_attention_heads, c.num_key_value_heads, c.rope_theta)
        return Tensor(logits[:, None], st, DataType.BFLOAT16, Layout.TILE)


class KvCacheConfig:
    """``ttml.models.KvCacheConfig(num_layers, batch_size, num_groups, max_seq_len, head_dim)``
    (``ttml/common/generate.py`` @ 216e94b1d8493d157ec8c0032faf1e6679a2e115; exported from
    ``ttml.models``, reference/ttml_audit_2026-11.md)."""

    def __init__(self, num_layers, batch_size, num_groups, max_seq_len, head_dim):
        self.num_layers, self.batch_size, self.num_groups = num_layers, batch_size, num_groups
        self.max_seq_len, self.head_dim = max_seq_len, head_dim


class KvCache:
    """``ttml.models.KvCache(config)``: ``reset``, ``clear``, ``get_cache_position``. The double
    keeps the tokens and recomputes the prefix, so cached logits equal uncached ones exactly; it
    checks the config against the model and the mask and position as ``generate.py`` builds them."""

    def __init__(self, config: KvCacheConfig):
        self.config, self.tokens = config, []

    def reset(self):
        self.tokens = []

    clear = reset

    def get_cache_position(self):
        return len(self.tokens)

    def forward(self, model: "Llama", x: Tensor, mask: Tensor, new_tokens):
        c, m = self.config, model.cfg
        want = (m.num_hidden_layers, 1, m.num_key_value_heads, m.hidden_size // m.num_attention_heads)
        if (c.num_layers, c.batch_size, c.num_groups, c.head_dim) != want:
            raise ApiViolation(f"KvCacheConfig {c.__dict__} does not fit the model {want}")
        q, done = int(new_tokens), len(self.tokens)
        if done + q > c.max_seq_len or q < 1 or q > x.shape()[-1]:
            raise ApiViolation(f"KV cache: {q} new tokens after {done} exceed max_seq_len {c.max_seq_len}")
        rows, cols = -(-q // 32) * 32, -(-(done + q) // 32) * 32
        if mask.shape() != [1, 1, rows, cols]:
            raise ApiViolation(f"KV cache mask must be [1,1,{rows},{cols}]; got {mask.shape()}")
        want_mask = torch.zeros(q, cols)
        for i in range(q):
            want_mask[i, : done + i + 1] = 1
        if not torch.equal(mask.value[0, 0, :q], want_mask):
            raise ApiViolation("KV cache mask is not open on columns 0..cached+i for row i")
        self.tokens += x.value[0, 0, 0, :q].tolist()
        ids = torch.tensor([self.tokens])
        p = model._weights()
        with torch.set_grad_enabled(STATE.grad_mode == GradMode.ENABLED):
            logits = ref.forward(p, model.layout, ids, m.num_hidden_layers, m.num_attention_heads,
                                 m.num_key_value_heads, m.rope_theta)[:, done:]
        out = torch.zeros(1, rows, logits.shape[-1])
        out[:, :q] = logits
        return Tensor(out[:, None], STATE, DataType.BFLOAT16, Layout.TILE)


def _val(t):
    return t.value if isinstance(t, Tensor) else t


def _constant(t, what: str):
    """An uploaded constant (mask, padding offsets) must not require gradients: ttml would compute
    a broadcast gradient for it every step (``binary_ops.cpp`` @ 03b327fc, ``unbroadcast_grad``;
    reference/ttml_audit_2026-11.md, mismatch 3)."""
    if isinstance(t, Tensor) and t.uploaded and t.requires_grad:
        raise ApiViolation(f"{what} was uploaded with requires_grad=True; call set_requires_grad(False)")
    return _val(t)


def _wrap(v):
    return Tensor(v, STATE, DataType.BFLOAT16, Layout.TILE)


def cross_entropy_loss(prediction: Tensor, target: Tensor, reduce=ReduceType.MEAN):
    """``ops.loss.cross_entropy_loss(prediction, target, reduce=MEAN)`` (``nb_ops.cpp`` @
    6d90ded4481326e7775376c4263b0fa9ea5dee7e; keyword names per reference/ttml_audit_2026-11.md)."""
    logits = prediction
    b, one, t, v = logits.shape()
    if one != 1 or target.shape() != [b, t] or target.dtype_ != DataType.UINT32:
        raise ApiViolation(f"cross_entropy_loss wants logits [B,1,T,V], targets UINT32 [B,T]; got "
                           f"{logits.shape()} and {target.shape()} {target.dtype_}")
    if int(target.value.max()) >= v:
        raise ApiViolation("target id beyond the logits")
    ce = F.cross_entropy(logits.value[:, 0].reshape(-1, v), target.value.reshape(-1), reduction="none")
    if reduce == ReduceType.NONE:
        return _wrap(ce.reshape(b, 1, t, 1))
    return _wrap(ce.mean().reshape(1, 1, 1, 1))


MOMENT_KEYS = {"AdamW": ("exp_avg", "exp_avg_sq"), "AdamWComposite": ("exp_avg", "exp_avg_sq"),
               "MorehAdamW": ("m_first_moment", "m_second_moment")}
"""State-dict keys of each optimizer's moments: AdamW ``tt-train/sources/ttml/optimizers/adamw.cpp`` @
013b217398641b1697a42d986c1318dfee5101ad (``steps, lr, exp_avg, exp_avg_sq, amsgrad``); MorehAdamW
(reference/ttml_audit_2026-11.md, mismatch 1). Composite AdamW's names are assumed to be AdamW's."""


def _bf16(t: torch.Tensor) -> None:
    """Round in place to bfloat16: ttml keeps parameters and AdamW moments in bf16 (HALF)."""
    with torch.no_grad():
        t.copy_(t.to(torch.bfloat16).to(torch.float32))


class Optimizer:
    """AdamW as ``adamw.cpp`` @ 013b217398641b1697a42d986c1318dfee5101ad keeps it: moments only for
    the parameters that require gradients when it is built (so its state dict names those alone),
    and ``step`` skips a parameter without a gradient (a frozen one)."""

    def __init__(self, params, kind: str, settings: dict):
        self.kind, self.settings = kind, dict(settings)
        self.params = NamedParameters({k: v for k, v in params.items() if v.get_requires_grad()})
        self.steps = 0
        leaves = [p.value for p in params.values()]
        self.torch = torch.optim.AdamW(leaves, lr=settings["lr"], betas=(settings["beta1"], settings["beta2"]),
                                       eps=settings["epsilon"], weight_decay=settings["weight_decay"])

    def zero_grad(self):
        self.torch.zero_grad(set_to_none=True)

    def set_lr(self, lr):
        for g in self.torch.param_groups:
            g["lr"] = lr
        STATE.lr_since_step = True
        STATE.lrs.append(lr)

    def get_lr(self):
        return self.torch.param_groups[0]["lr"]

    def step(self):
        st = STATE
        if not st.lr_since_step:
            raise ApiViolation("optimizer.step() without set_lr since the last step")
        if st.mesh_devices > 1 and not st.synced_since_step:
            raise ApiViolation("optimizer.step() on a mesh without synchronising gradients")
        self.torch.step()
        self.steps += 1
        for p in self.params.values():  # stored as bf16, as ttml stores them
            _bf16(p.value)
            for moment in self.torch.state.get(p.value, {}).values():
                if moment.dim() > 0:
                    _bf16(moment)
        st.steps += 1
        st.lr_since_step = st.synced_since_step = False

    def get_state_dict(self) -> dict:
        """As ttml's: ``steps`` int, ``lr`` float, ``amsgrad`` bool (AdamW only), each moment a
        :class:`NamedParameters` of bf16 tensors (zeros before the first step)."""
        first, second = NamedParameters(), NamedParameters()
        for name, p in self.params.items():
            s = self.torch.state.get(p.value)
            for out, key in ((first, "exp_avg"), (second, "exp_avg_sq")):
                value = s[key] if s else torch.zeros_like(p.value)
                out[name] = Tensor(value, STATE, DataType.BFLOAT16, Layout.TILE)
        k1, k2 = MOMENT_KEYS[self.kind]
        out = {"steps": self.steps, "lr": self.get_lr(), k1: first, k2: second}
        if self.kind != "MorehAdamW":
            out["amsgrad"] = False
        return out

    def set_state_dict(self, state: dict) -> None:
        """As ttml's: moments read with ``std::get<NamedParameters>`` (anything else raises),
        ``steps`` with ``get_value_type<size_t>``; unknown keys are an error here."""
        k1, k2 = MOMENT_KEYS[self.kind]
        allowed = {"steps", "lr", "amsgrad", k1, k2}
        if not isinstance(state, dict) or set(state) - allowed or {"steps", k1, k2} - set(state):
            raise ApiViolation(f"set_state_dict: keys {sorted(state)} are not {self.kind}'s {sorted(allowed)}")
        if type(state["steps"]) is not int or state["steps"] < 0:
            raise TypeError(f"set_state_dict: steps must be a size_t, got {state['steps']!r}")
        for key in (k1, k2):
            if not isinstance(state[key], NamedParameters):
                raise TypeError(f"std::bad_variant_access: {key} is a {type(state[key]).__name__}, "
                                "not NamedParameters")
            if state[key].keys() != self.params.keys():
                raise ApiViolation(f"set_state_dict: {key} names differ from the parameters")
        self.steps = state["steps"]
        if "lr" in state:
            self.set_lr(float(state["lr"]))
            STATE.lr_since_step = False
        for name, p in self.params.items():
            if self.steps:
                self.torch.state[p.value] = {
                    "step": torch.tensor(float(self.steps)),
                    "exp_avg": state[k1][name].value.detach().clone().float(),
                    "exp_avg_sq": state[k2][name].value.detach().clone().float()}


REGISTRY_KEYS = {"type", "lr", "beta1", "beta2", "epsilon", "weight_decay", "amsgrad",
                 "stochastic_rounding", "kahan_summation"}


def create_optimizer(config: dict, params):
    """``ttml.optimizers.create_optimizer(config: dict, params)`` (registry keys and ``type`` names:
    ``tt-train/sources/ttml/optimizers/optimizer_registry.cpp`` @ 04087d1243eeafc57122bf65cd7373f963b8ff53;
    binding ``nanobind/nb_optimizers.cpp`` @ 04087d1243eeafc57122bf65cd7373f963b8ff53). Unknown keys,
    and ``kahan_summation`` for plain AdamW, are refused here."""
    unknown = set(config) - REGISTRY_KEYS
    if unknown or config.get("type") not in ("AdamW", "MorehAdamW", "AdamWComposite"):
        raise ApiViolation(f"create_optimizer: bad config {config}")
    if "kahan_summation" in config and config["type"] == "AdamW":
        raise ApiViolation("AdamW takes no kahan_summation key")
    return Optimizer(params, config["type"], config)


class AdamWConfig:
    """Gen A: ``AdamWConfig.make(lr, beta1, beta2, epsilon, weight_decay)`` and the constructors
    ``AdamW(parameters, config)`` / ``MorehAdamW(parameters, config)`` (``nb_optimizers.cpp`` @
    decdb8775347cb21653cc86f97e7d57b8d408f1a, reference/ttml_api.md "Optimizers")."""

    @staticmethod
    def make(lr, beta1, beta2, epsilon, weight_decay):
        return {"lr": lr, "beta1": beta1, "beta2": beta2, "epsilon": epsilon, "weight_decay": weight_decay}


def clip_grad_norm(parameters, max_norm, p_norm_type=2.0, error_if_nonfinite=False):
    """``ttml.core.clip_grad_norm(parameters, max_norm, p_norm_type=2.0, error_if_nonfinite=False)``
    returns the total norm as a tensor (``tt-train/sources/ttml/nanobind/nb_core.cpp`` @
    01b9eefebb60985b56d0cdf8aae83326c29c53af; absent in older nb_core, so feature-detected)."""
    if not isinstance(parameters, NamedParameters):
        raise ApiViolation(f"clip_grad_norm takes NamedParameters, not {type(parameters).__name__}")
    leaves = [p.value for p in parameters.values() if p.value.grad is not None]
    return _wrap(torch.nn.utils.clip_grad_norm_(leaves, max_norm, p_norm_type).reshape(1, 1, 1, 1))


def _sync(parameters):
    STATE.synced_since_step = True
    STATE.syncs += 1


def _enable_fabric(n):
    if STATE.device_open:
        raise ApiViolation("enable_fabric after open_device")
    if STATE.fabric_this_open is not None:
        raise ApiViolation("enable_fabric called twice (open_device_mesh enables it itself)")
    STATE.fabric = STATE.fabric_this_open = n


# -- the current data-parallel API (generation "C"): tt-train/sources/ttml/ttml/mesh.py @
# e92a955c34bb4c0690b87315d75a5e9602280d9b, re-exported as ttml.Mesh, ttml.open_device_mesh,
# ttml.close_device_mesh, ttml.maybe_mesh, ttml.sync_gradients (used so by
# tt-train/sources/ttml/ttml/trainers/sft_trainer.py @ db9660afbd9414c67ebdcacb0db497c7d687d985).

class Mesh:
    """``Mesh(shape: tuple[int, ...], axis_names: tuple[str, ...])``; ValueError on a length mismatch."""

    def __init__(self, shape, axis_names):
        if len(shape) != len(axis_names):
            raise ValueError("each axis in a mesh must have an assigned name")
        self.shape, self.axis_names = tuple(shape), tuple(axis_names)

    def num_devices(self):
        return int(np.prod(self.shape))

    def has_axis(self, name):
        return name in self.axis_names

    def axis_size(self, name):
        if name not in self.axis_names:
            raise RuntimeError(f"Mesh has no axis named '{name}'.")
        return self.shape[self.axis_names.index(name)]


def open_device_mesh(mesh, device_ids=None):
    """``open_device_mesh(mesh: tuple | Mesh, device_ids: tuple | None = None)``: enables the
    fabric itself for more than one device, then ``AutoContext.open_device(list(shape), list(ids))``."""
    if not isinstance(mesh, Mesh):
        mesh = Mesh(mesh, tuple(f"_{i}" for i in range(len(mesh))))
    if mesh.num_devices() > 1:
        _enable_fabric(mesh.num_devices())
    AutoContext.get_instance().open_device(list(mesh.shape), list(device_ids or ()))
    STATE.named_mesh = mesh


def close_device_mesh():
    try:
        AutoContext.get_instance().close_device()
    finally:
        STATE.named_mesh = None


def maybe_mesh():
    return STATE.named_mesh


def sync_gradients(parameters, axis_names=("dp",)):
    """Averages over the named axes; a silent no-op without a named mesh or such an axis (as real)."""
    if not isinstance(parameters, NamedParameters):
        raise ApiViolation(f"sync_gradients takes NamedParameters, not {type(parameters).__name__}")
    m = STATE.named_mesh
    if m is None or not any(m.has_axis(a) and m.axis_size(a) > 1 for a in axis_names):
        return
    _sync(parameters)


STATE = State()


def make(generation: str = "B", layout: TtmlLayout = TtmlLayout(), lora: bool = True) -> tuple[Any, Any]:
    """A fresh (ttml, ttnn) pair of doubles and a fresh :data:`STATE`; ``lora=False`` leaves out
    ``ttml.modules.lora`` (a tt-train from before it, ``ttml_double_lora``)."""
    import ttml_double_lora

    global STATE
    STATE = State()
    AutoContext._instance = None
    binary = SimpleNamespace(
        mul=lambda a, b: _wrap(_val(a) * _constant(b, "a multiplied mask")),
        sub=lambda a, b: _wrap(_val(a) - _constant(b, "a subtracted mask")),
        add=lambda a, b: _wrap(_val(a) + _val(b)))
    ops = SimpleNamespace(binary=binary, unary=SimpleNamespace(mean=lambda t: _wrap(t.value.mean().reshape(1, 1, 1, 1))),
                          loss=SimpleNamespace(cross_entropy_loss=cross_entropy_loss), ReduceType=ReduceType)
    llama = SimpleNamespace(Llama=lambda cfg: Llama(cfg, layout), LlamaConfig=LlamaConfig)
    dist = SimpleNamespace(enable_fabric=_enable_fabric,
                           shard_tensor_to_mesh_mapper=lambda device, dim: ("shard", dim),
                           concat_mesh_to_tensor_composer=lambda device, dim: ("concat", dim))
    optimizers = SimpleNamespace(create_optimizer=create_optimizer)
    mesh_api = {}
    if generation == "C":
        mesh_api = dict(Mesh=Mesh, open_device_mesh=open_device_mesh, close_device_mesh=close_device_mesh,
                        maybe_mesh=maybe_mesh, sync_gradients=sync_gradients)
    if generation == "A":
        dist.synchronize_parameters = _sync
        optimizers = SimpleNamespace(AdamWConfig=AdamWConfig,
                                     AdamW=lambda p, c: Optimizer(p, "AdamW", c),
                                     MorehAdamW=lambda p, c: Optimizer(p, "MorehAdamW", c))
    else:
        dist.synchronize_gradients = _sync
    autograd = SimpleNamespace(AutoContext=AutoContext, Tensor=Tensor, GradMode=GradMode,
                               DistributedConfig=lambda enable_ddp=False, enable_tp=False: ("ddp", enable_ddp))
    ttml = SimpleNamespace(
        autograd=autograd, ops=ops, optimizers=optimizers, NamedParameters=NamedParameters,
        models=SimpleNamespace(llama=llama, RunnerType=RunnerType, WeightTyingType=WeightTyingType,
                               KvCache=KvCache, KvCacheConfig=KvCacheConfig),
        core=SimpleNamespace(distributed=dist, clip_grad_norm=clip_grad_norm), **mesh_api,
        modules=SimpleNamespace(**({"lora": ttml_double_lora} if lora else {})),
    )
    ttnn = SimpleNamespace(Layout=Layout, DataType=DataType)
    return ttml, ttnn


def state() -> State:
    return STATE
