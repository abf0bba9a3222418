"""The eager CPU modules (ttexp.backends.torch_eager): the same losses, gradients and saved
weights as transformers' stock Llama, and the backend uses them only in eager mode on CPU."""

from __future__ import annotations

import copy

import pytest
import torch

from ttexp.backends import torch_eager
from ttexp.backends.torch_backend import TorchBackend
from ttexp.config.schema import OptimizerConfig
from ttexp.models.hf import llama_config
from ttexp.models.spec import ModelSpec

SPEC = ModelSpec(name="t", vocab_size=64, hidden_dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                 mlp_dim=64, max_seq_len=16)
SWITCHED = 2 * SPEC.num_layers + 1 + SPEC.num_layers + SPEC.num_layers
"""Modules use_fast_eager switches: the RMSNorms (two a layer and the final one), MLPs, attentions."""
ROWS = 7
"""Tokens per MLP chunk in these tests: 2 x 16 tokens split 7+7+7+7+4, an uneven last chunk."""


def _stock_model():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(llama_config(SPEC)).train()


def _fast(model):
    fast = copy.deepcopy(model)
    assert torch_eager.use_fast_eager(fast) == SWITCHED
    for m in fast.modules():
        if isinstance(m, torch_eager._ChunkedMLP):
            m.chunk_bytes = ROWS * SPEC.mlp_dim * 4  # fp32 rows; bf16 gives 2 x ROWS
    return fast


def _loss_and_grads(model, autocast=None, attention_mask=None):
    ids = torch.randint(0, SPEC.vocab_size, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
        logits = model(input_ids=ids[:, :-1], attention_mask=attention_mask).logits
    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads


def _assert_same(a, b, tol):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert loss_a == pytest.approx(loss_b, abs=tol)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        scale = max(1.0, grads_b[name].abs().max().item())
        assert (grads_a[name] - grads_b[name]).abs().max().item() <= tol * scale, name


def test_fp32_losses_and_gradients_equal_the_stock_model():
    stock = _stock_model()
    _assert_same(_loss_and_grads(_fast(stock)), _loss_and_grads(stock), 1e-5)


def test_bf16_autocast_stays_within_bf16_tolerance():
    stock = _stock_model()
    _assert_same(_loss_and_grads(_fast(stock), torch.bfloat16),
                 _loss_and_grads(stock, torch.bfloat16), 2e-2)


def test_a_padded_batch_equals_the_stock_model():
    """Prompt/response data pads its rows: the attention mask reaches the attention as in the
    stock forward."""
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 11:] = 0  # the second row is 11 tokens and padding
    stock = _stock_model()
    _assert_same(_loss_and_grads(_fast(stock), attention_mask=mask),
                 _loss_and_grads(stock, attention_mask=mask), 1e-5)


def test_generation_with_a_kv_cache_equals_the_stock_model():
    stock = _stock_model().eval()
    fast = _fast(stock).eval()
    prompt = torch.tensor([[5, 9, 2, 31]])
    outs = [m.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0) for m in (stock, fast)]
    assert torch.equal(outs[0], outs[1]) and outs[0].shape[1] == 12


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_function_equals_transformers_rope(dtype):
    """Values, output dtype (fp32 tables promote a bf16 input, as under autocast) and the
    input's gradient, against transformers' apply_rotary_pos_emb."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 6, 8, generator=g).to(dtype).requires_grad_()
    angles = torch.rand(2, 6, 4, generator=g) * 6
    cos, sin = (torch.cat([f(angles)] * 2, -1) for f in (torch.cos, torch.sin))  # [B, T, D]
    stock, _ = apply_rotary_pos_emb(x, x, cos, sin)
    fast = torch_eager.RotaryFunction.apply(x, cos.unsqueeze(1), sin.unsqueeze(1))
    assert fast.dtype == stock.dtype == torch.float32
    torch.testing.assert_close(fast, stock)
    grad = torch.randn(stock.shape, generator=g)
    (dx_fast,) = torch.autograd.grad(fast, x, grad)
    x32 = x.detach().float().requires_grad_()  # the exact gradient: transformers' RoPE in fp32
    (dx_ref,) = torch.autograd.grad(apply_rotary_pos_emb(x32, x32, cos, sin)[0], x32, grad)
    assert dx_fast.dtype == dtype  # bf16: one rounding of the fp32 sum (transformers rounds each term)
    tol = {} if dtype == torch.float32 else {"rtol": 8e-3, "atol": 8e-3}
    torch.testing.assert_close(dx_fast.float(), dx_ref, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_forward_is_bit_identical_to_transformers(dtype):
    """Generation keeps the fast RMSNorm, so its logits must equal the saved model's in
    transformers exactly (tests/integration/test_run_record.py checks the whole model)."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    stock = LlamaRMSNorm(64, eps=1e-6)
    with torch.no_grad():
        stock.weight.uniform_(0.5, 1.5)
    fast = copy.deepcopy(stock)
    torch_eager.use_fast_eager(fast)
    x = (torch.randn(3, 7, 64, generator=torch.Generator().manual_seed(4)) * 3).to(dtype)
    assert torch.equal(fast(x), stock(x))


def test_rmsnorm_of_a_bf16_input_matches_the_stock_dtype_and_values():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    stock = LlamaRMSNorm(32)
    with torch.no_grad():
        stock.weight.uniform_(0.5, 1.5)
    fast = copy.deepcopy(stock)
    torch_eager.use_fast_eager(fast)
    x = torch.randn(3, 5, 32).to(torch.bfloat16).requires_grad_()
    ys = [m(x) for m in (stock, fast)]
    assert ys[0].dtype == ys[1].dtype == torch.float32  # fp32 weight x bf16 promotes, as HF
    torch.testing.assert_close(ys[1], ys[0])
    g = torch.randn_like(ys[0])
    (gx0, gw0), (gx1, gw1) = (torch.autograd.grad(y, (x, m.weight), g) for y, m in zip(ys, (stock, fast)))
    assert gx1.dtype == torch.bfloat16
    torch.testing.assert_close(gx1.float(), gx0.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gw1, gw0, rtol=1e-5, atol=1e-5)


def test_lora_with_gradient_checkpointing_equals_the_stock_model():
    import peft

    lora = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                           target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"])
    stock = _stock_model()
    stock.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    stock = peft.get_peft_model(stock, lora)
    with torch.no_grad():  # B starts at zero: give the adapter a gradient path through A too
        for name, p in stock.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    _assert_same(_loss_and_grads(_fast(stock)), _loss_and_grads(stock), 1e-5)


def test_saving_and_loading_keeps_the_stock_keys_and_classes(tmp_path):
    from transformers import LlamaForCausalLM

    stock = _stock_model()
    fast = _fast(stock)
    assert list(fast.state_dict()) == list(stock.state_dict())
    fast.save_pretrained(tmp_path, safe_serialization=True)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path)
    assert list(loaded.state_dict()) == list(stock.state_dict())
    assert not any(isinstance(m, tuple(torch_eager._FAST.values())) for m in loaded.modules())
    for (name, a), b in zip(stock.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch_eager.restore_stock(fast) == SWITCHED
    assert [type(m) for m in fast.modules()] == [type(m) for m in stock.modules()]


def _backend(device="cpu", compile=False):
    return TorchBackend(torch.device(device), "fp32", OptimizerConfig(), 0.0, compile=compile)


def _fast_count(model):
    return sum(isinstance(m, tuple(torch_eager._FAST.values())) for m in model.modules())


def test_the_backend_uses_them_in_eager_mode_on_cpu_and_restores_stock_before_compiling():
    eager = _backend(compile=False)
    eager.build_model(SPEC)
    assert _fast_count(eager.model) == SWITCHED
    compiled = _backend(compile=True)  # layer.compile() is lazy: nothing compiles here
    compiled.build_model(SPEC)
    assert _fast_count(compiled.model) == 0
    eager._compiled()  # what compile=auto calls when it switches
    assert _fast_count(eager.model) == 0


def test_other_devices_keep_the_stock_modules():
    b = _backend(device="meta")  # stands in for CUDA: anything but a CPU
    b.build_model(SPEC)
    assert _fast_count(b.model) == 0 and b.model.device.type == "meta"


def test_chunk_rows_follow_the_intermediate_size():
    assert torch_eager.chunk_rows(768, 4) == 2048  # 6 MiB of fp32 at nano's mlp_dim
    assert torch_eager.chunk_rows(768, 2) == 4096  # the same bytes under bf16 autocast
    assert torch_eager.chunk_rows(10**9, 4) == 1
