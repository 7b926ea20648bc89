"""The FlexAttention path (`attention/flex.py`) against the dense oracle.

FlexAttention's CPU mode is a prototype and inference-only, so these tests run it in eager mode on
CPU (which evaluates the same `mask_mod` the compiled GPU kernel uses inside partial blocks, and
checks that the block mask lists exactly the layout's blocks). The CUDA selection and the compiled
kernel run only where a GPU is present.
"""

import pytest
import torch

from sdbert.attention import bigbird_block_layout, block_sparse_attention, dense_attention, flex, plan_from_layout
from sdbert.attention.layout import layout_to_token_mask

pytestmark = [
    pytest.mark.skipif(not flex.available(), reason="FlexAttention needs torch >= 2.5"),
    # eager mode on CPU is the point here: it is the unfused reference of the compiled kernel
    pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile"),
]


def oracle(q, k, v, layout, block_size, key_padding_mask):
    n = q.shape[-2]
    mask = layout_to_token_mask(layout, block_size, n)[None]  # (1, H, n, n)
    if key_padding_mask is not None:
        mask = mask & key_padding_mask[:, None, None, :]
    return dense_attention(q, k, v, attn_mask=mask)


def random_qkv(batch, heads, n, head_dim, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, n, head_dim, generator=g, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize("num_blocks,r,heads", [(10, 1, 2), (12, 2, 3), (16, 3, 1)])
def test_plan_layout_round_trip(num_blocks, r, heads):
    layout = bigbird_block_layout(num_blocks, r, num_heads=heads, seed=3)
    assert torch.equal(flex.plan_layout(plan_from_layout(layout)), layout)


def test_block_mask_lists_exactly_the_layout_blocks():
    layout = bigbird_block_layout(12, 2, num_heads=2, seed=1)
    mask = flex.block_mask(flex.plan_layout(plan_from_layout(layout)), 16, 12 * 16, None)
    dense_blocks = mask.to_dense()[0].bool()  # (H, nb, nb): the blocks the kernel will visit
    assert torch.equal(dense_blocks, layout)


@pytest.mark.parametrize("padding", ["none", "tail", "whole_blocks"])
def test_flex_equals_dense_oracle(padding):
    batch, heads, nb, bs, d = 2, 3, 12, 16, 8
    n = nb * bs
    q, k, v = random_qkv(batch, heads, n, d)
    layout = bigbird_block_layout(nb, 2, num_heads=heads, seed=5)
    mask = None
    if padding == "tail":
        mask = torch.ones(batch, n, dtype=torch.bool)
        mask[1, n - 23:] = False
    elif padding == "whole_blocks":
        mask = torch.ones(batch, n, dtype=torch.bool)
        mask[0, 3 * bs:7 * bs] = False  # some query blocks' window is all padding
        mask[1, 5 * bs:] = False
    out = flex.flex_block_sparse(q, k, v, bs, plan_from_layout(layout), mask, compiled=False)
    expected = oracle(q, k, v, layout, bs, mask)
    real = torch.ones(batch, n, dtype=torch.bool) if mask is None else mask
    diff = (out - expected).abs()[real[:, None, :, None].expand_as(out)]
    assert diff.max() < 1e-5
    assert not out.isnan().any()


def test_flex_equals_our_kernel_through_the_public_call():
    """The plan the public call builds from a seed gives the same result through FlexAttention."""
    from sdbert.attention import bigbird_plan

    q, k, v = random_qkv(1, 2, 20 * 16, 8, seed=1)
    ours = block_sparse_attention(q, k, v, block_size=16, num_random_blocks=3, seed=7)
    plan = bigbird_plan(20, 3, 2, 7)
    out = flex.flex_block_sparse(q, k, v, 16, plan, None, compiled=False)
    assert (out - ours).abs().max() < 1e-5


def test_not_selected_on_cpu_or_with_dropout(monkeypatch):
    q = torch.zeros(1, 1, 64, 8)
    assert not flex.supported(q, 0.0)  # CPU: the native kernel is the fast path there
    monkeypatch.setenv("SDBERT_FLEX", "0")
    assert not flex.available()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the compiled FlexAttention kernel)")
def test_compiled_flex_on_cuda_equals_oracle_forward_and_backward():
    batch, heads, nb, bs, d = 2, 4, 16, 64, 64
    n = nb * bs
    q, k, v = (t.cuda().requires_grad_() for t in random_qkv(batch, heads, n, d))
    layout = bigbird_block_layout(nb, 3, num_heads=heads, seed=2)
    mask = torch.ones(batch, n, dtype=torch.bool, device="cuda")
    mask[1, n - 100:] = False
    assert flex.supported(q, 0.0)
    out = block_sparse_attention(q, k, v, block_size=bs, num_random_blocks=3, key_padding_mask=mask,
                                 layout=layout.cuda())
    expected = oracle(q, k, v, layout.cuda(), bs, mask)
    real = mask[:, None, :, None].expand_as(out)
    assert (out - expected).abs()[real].max() < 1e-3
    grad = torch.randn_like(out)
    got = torch.autograd.grad((out * real).mul(grad).sum(), (q, k, v))
    want = torch.autograd.grad((expected * real).mul(grad).sum(), (q, k, v))
    for a, b in zip(got, want, strict=True):
        assert (a - b).abs().max() < 1e-2
