"""The oracle: block-sparse attention equals dense attention under the expanded layout."""

import itertools

import pytest
import torch

from sdbert.attention import (
    bigbird_block_layout,
    block_sparse_attention,
    dense_attention,
    layout_to_token_mask,
)


def make_qkv(batch, heads, seq, dim, dtype=torch.float64, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, seq, dim, generator=g, dtype=dtype).requires_grad_(requires_grad)
            for _ in range(3)]


def padding_mask(batch, seq, pattern):
    mask = torch.ones(batch, seq, dtype=torch.bool)
    if pattern == "none":
        return None
    if pattern == "tail":  # typical right padding, different per row
        for b in range(batch):
            mask[b, seq - (b * seq) // (2 * batch) :] = False
            mask[b, 0] = True
    if pattern == "whole_blocks":  # the last rows are mostly padding: whole key blocks empty
        mask[-1, 3:] = False
    return mask


def oracle(q, k, v, layout, block_size, key_padding_mask):
    seq = q.shape[2]
    mask = layout_to_token_mask(layout, block_size, seq)[None]  # (1, H, S, S)
    if key_padding_mask is not None:
        mask = mask & key_padding_mask[:, None, None, :]
    return dense_attention(q, k, v, attn_mask=mask)


def assert_equal_at_real_rows(out, ref, key_padding_mask, tol=1e-8):
    assert out.shape == ref.shape
    assert torch.isfinite(out).all()
    if key_padding_mask is not None:
        real = key_padding_mask[:, None, :, None]
        assert (out.masked_select(~real.expand_as(out)) == 0).all(), "padding rows must be zero"
        out, ref = out * real, ref * real
    assert (out - ref).abs().max().item() < tol


GRID = list(itertools.product(
    [(1, 1, 8), (2, 3, 16)],          # batch, heads, head_dim
    [4, 8],                            # block size
    [0, 1, 2, 3],                      # random blocks
    ["none", "tail", "whole_blocks"],  # padding pattern
    [0, 5],                            # extra tokens past a block multiple (0: exact multiple)
))


@pytest.mark.parametrize("shape,block_size,r,pattern,extra", GRID)
def test_sparse_equals_dense_oracle(shape, block_size, r, pattern, extra):
    batch, heads, dim = shape
    num_blocks = 5 + 2 * r + 3  # past the dense fallback, so the sparse path runs
    seq = num_blocks * block_size - (block_size - extra if extra else 0)
    q, k, v = make_qkv(batch, heads, seq, dim, seed=r + extra)
    kpm = padding_mask(batch, seq, pattern)
    nb = -(-seq // block_size)
    layout = bigbird_block_layout(nb, r, num_heads=heads, seed=11)
    assert not layout.all()
    out = block_sparse_attention(q, k, v, block_size=block_size, num_random_blocks=r,
                                 key_padding_mask=kpm, seed=11)
    ref = oracle(q, k, v, layout, block_size, kpm)
    assert_equal_at_real_rows(out, ref, kpm)
    # An explicit layout gives the same result as the seed that built it.
    again = block_sparse_attention(q, k, v, block_size=block_size, num_random_blocks=r,
                                   key_padding_mask=kpm, layout=layout)
    assert torch.equal(out, again)


def test_short_sequence_uses_dense_attention_per_call():
    q, k, v = make_qkv(2, 2, 40, 8)
    kpm = padding_mask(2, 40, "tail")
    out = block_sparse_attention(q, k, v, block_size=8, num_random_blocks=1, key_padding_mask=kpm)
    ref = dense_attention(q, k, v, attn_mask=kpm[:, None, None, :])
    assert_equal_at_real_rows(out, ref, kpm, tol=1e-12)
    # A longer input in the next call is sparse again: no sticky switch.
    q2, k2, v2 = make_qkv(1, 2, 96, 8)
    sparse = block_sparse_attention(q2, k2, v2, block_size=8, num_random_blocks=1, seed=0)
    dense = dense_attention(q2, k2, v2)
    assert (sparse - dense).abs().max() > 1e-3


def test_arbitrary_layout_without_diagonal_and_empty_rows():
    """Layouts other than BigBird's go through the general path and still equal the oracle."""
    torch.manual_seed(0)
    heads, nb, bs = 2, 6, 4
    layout = torch.rand(heads, nb, nb) < 0.3
    layout[0, 2] = False  # a row that attends nothing -> zeros, as in the oracle
    q, k, v = make_qkv(2, heads, nb * bs - 2, 8)
    kpm = padding_mask(2, nb * bs - 2, "tail")
    out = block_sparse_attention(q, k, v, block_size=bs, num_random_blocks=0, key_padding_mask=kpm,
                                 layout=layout)
    ref = oracle(q, k, v, layout, bs, kpm)
    assert_equal_at_real_rows(out, ref, kpm)


def test_empty_sequence_gives_zeros_not_nan():
    q, k, v = make_qkv(2, 2, 96, 8)
    kpm = torch.ones(2, 96, dtype=torch.bool)
    kpm[1] = False
    out = block_sparse_attention(q, k, v, block_size=8, num_random_blocks=1, key_padding_mask=kpm)
    assert torch.isfinite(out).all() and (out[1] == 0).all()


@pytest.mark.parametrize("pattern", ["none", "tail"])
def test_gradients_match_the_oracle(pattern):
    bs, r, heads = 4, 1, 2
    seq = (5 + 2 * r + 2) * bs - 1
    kpm = padding_mask(2, seq, pattern)
    layout = bigbird_block_layout(-(-seq // bs), r, num_heads=heads, seed=3)
    q, k, v = make_qkv(2, heads, seq, 8, requires_grad=True)
    q2, k2, v2 = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    weight = torch.randn(2, heads, seq, 8, dtype=torch.float64)
    if kpm is not None:
        weight = weight * kpm[:, None, :, None]
    (block_sparse_attention(q, k, v, block_size=bs, num_random_blocks=r, key_padding_mask=kpm, seed=3)
     * weight).sum().backward()
    (oracle(q2, k2, v2, layout, bs, kpm) * weight).sum().backward()
    for a, b in ((q, q2), (k, k2), (v, v2)):
        assert torch.isfinite(a.grad).all()
        assert (a.grad - b.grad).abs().max() < 1e-8


def test_gradcheck_small_case():
    bs, r = 2, 0
    seq = 7 * bs - 1
    q, k, v = make_qkv(1, 2, seq, 3, requires_grad=True)
    kpm = torch.ones(1, seq, dtype=torch.bool)
    kpm[0, -3:] = False
    fn = lambda q, k, v: block_sparse_attention(q, k, v, block_size=bs, num_random_blocks=r,
                                                key_padding_mask=kpm, seed=1)
    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2), (torch.float16, 3e-3)])
def test_low_precision_dtypes(dtype, tol):
    q, k, v = make_qkv(1, 2, 100, 16, dtype=torch.float32, seed=2)
    kpm = padding_mask(1, 100, "tail")
    ref = block_sparse_attention(q, k, v, block_size=8, num_random_blocks=1, key_padding_mask=kpm)
    out = block_sparse_attention(q.to(dtype), k.to(dtype), v.to(dtype), block_size=8, num_random_blocks=1,
                                 key_padding_mask=kpm)
    assert out.dtype == dtype
    assert (out.float() - ref).abs().max() < tol


def test_bad_shapes_are_reported():
    q, k, v = make_qkv(1, 2, 64, 8)
    with pytest.raises(ValueError, match="key_padding_mask"):
        block_sparse_attention(q, k, v, block_size=8, num_random_blocks=1,
                               key_padding_mask=torch.ones(1, 63, dtype=torch.bool))
    with pytest.raises(ValueError, match="block_size"):
        block_sparse_attention(q, k, v, block_size=0, num_random_blocks=1)
    with pytest.raises(ValueError, match="layout"):
        block_sparse_attention(q, k, v, block_size=8, num_random_blocks=0,
                               layout=torch.ones(2, 5, 5, dtype=torch.bool))
