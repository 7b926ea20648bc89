"""Block-sparse attention (BigBird ITC), with memory linear in sequence length.

Four interchangeable kernels compute a plan; `_block_sparse` takes the first that applies:

0. FlexAttention (`flex.py`, CUDA, no attention dropout): the layout as a `BlockMask`, one
   compiled fused kernel, forward and backward;
1. the native C++ kernel (`native.py`, CPU, fp32/fp64, any layout): per query block, its key
   blocks, scores and probabilities stay in a per-thread cache-resident buffer;
2. the flash band path (`fast.py`, CPU, BigBird-shaped plans): torch's fused CPU attention over
   strided window views, LSE-merged, with only the random blocks gathered;
3. the general path below, pure PyTorch on any device and layout, and the reference the other
   three are tested against (`tests/attention/test_fast_attention.py`).

How the general path computes a layout (see `layout.py`):

* global query blocks (first and last) attend every key: one SDPA call over the full keys,
  `2 * block_size` query rows, so its cost is linear in the sequence length;
* every other query block attends its own short list of key blocks (global + window + random).
  The key/value blocks of each list are gathered into `(B, H, m, W * block_size, D)` and one
  batched SDPA call attends each query block to its own list. Nothing of size `seq x seq` exists.

Random-block policy: the pattern is a pure function of `(num_blocks, num_random_blocks,
num_heads, seed)` through torch's own seeded generator. The model gives each layer its own seed,
so training and evaluation see the same pattern; a model that wants BigBird's resampling passes
a fresh seed each training step (`SDBertConfig.resample_random_blocks`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sdbert.attention import flex, native
from sdbert.attention.dense import dense_attention
from sdbert.attention.fast import band_attention, band_plan, band_supported
from sdbert.attention.layout import SparsePlan, bigbird_plan, plan_from_layout
from sdbert.config import dense_fallback_blocks


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    block_size: int,
    num_random_blocks: int,
    key_padding_mask: torch.Tensor | None = None,
    layout: torch.Tensor | None = None,
    seed: int = 0,
    dropout_p: float = 0.0,
    plan: SparsePlan | None = None,
) -> torch.Tensor:
    """BigBird block-sparse attention. `q, k, v`: `(batch, heads, seq, head_dim)`.

    key_padding_mask: `(batch, seq)` bool, true for real tokens.
    layout: `(heads or 1, num_blocks, num_blocks)` bool from `bigbird_block_layout`; when omitted it
        is built from `seed` (and cached). `plan` may carry a precomputed `plan_from_layout(layout)`.
    Returns `(batch, heads, seq, head_dim)`. At every real query position the result equals
    `dense_attention` with the layout expanded to tokens and combined with the padding mask; padding
    query positions return zeros. Sequences of at most `(5 + 2 r) * block_size` tokens without an
    explicit layout run dense attention; the choice is made per call.
    """
    if q.dim() != 4 or k.shape != q.shape[:-1] + (k.shape[-1],) or v.shape[:-1] != k.shape[:-1]:
        raise ValueError(f"q, k, v must be (batch, heads, seq, head_dim); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    batch, heads, seq_len, _ = q.shape
    if key_padding_mask is not None:
        if key_padding_mask.shape != (batch, seq_len):
            raise ValueError(f"key_padding_mask must be (batch, seq) = {(batch, seq_len)}, "
                             f"got {tuple(key_padding_mask.shape)}")
        key_padding_mask = key_padding_mask.bool()
        if bool(key_padding_mask.all()):
            key_padding_mask = None  # nothing to hide: the cheaper unmasked calls give the same result

    num_blocks = -(-seq_len // block_size)
    if plan is None and layout is None and num_blocks <= dense_fallback_blocks(num_random_blocks):
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        out = dense_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        return _zero_padding_rows(out, key_padding_mask)
    if plan is None:
        if layout is None:
            plan = bigbird_plan(num_blocks, num_random_blocks, heads, seed)
        else:
            if layout.shape[-1] != num_blocks or layout.shape[0] not in (1, heads):
                raise ValueError(f"layout {tuple(layout.shape)} does not fit {heads} heads x "
                                 f"{num_blocks} blocks")
            plan = plan_from_layout(layout.expand(heads, -1, -1))
    if plan.num_blocks != num_blocks:
        raise ValueError(f"plan has {plan.num_blocks} blocks, sequence has {num_blocks}")
    out = _block_sparse(q, k, v, block_size, key_padding_mask, plan.to(q.device), dropout_p)
    return _zero_padding_rows(out, key_padding_mask)


def _zero_padding_rows(out: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    if key_padding_mask is None:
        return out
    return out * key_padding_mask[:, None, :, None].to(out.dtype)


def _block_sparse(q, k, v, block_size, key_padding_mask, plan: SparsePlan, dropout_p):
    batch, heads, seq_len, head_dim = q.shape
    nb, bs = plan.num_blocks, block_size
    pad = nb * bs - seq_len
    if pad:
        # Pad inside; the padded keys are masked out and the padded queries cut off at the end.
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        if key_padding_mask is None:
            key_padding_mask = torch.ones(batch, seq_len, dtype=torch.bool, device=q.device)
        key_padding_mask = F.pad(key_padding_mask, (0, pad), value=False)

    # Fast paths, best first; each equals the general path below (tests/attention/test_fast_attention.py,
    # tests/attention/test_flex_attention.py).
    if flex.supported(q, dropout_p):
        out = flex.flex_block_sparse(q, k, v, bs, plan, key_padding_mask)
        if out is not None:  # None: the compiled kernel failed once and is off from now on
            return out[:, :, :seq_len]
    if native.supported(q, dropout_p):
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
        return native.native_attention(q, k, v, bs, plan, key_padding_mask)[:, :, :seq_len]
    band = band_plan(plan) if band_supported(q, key_padding_mask, dropout_p) else None
    if band is not None:
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
        return band_attention(q, k, v, bs, band, key_padding_mask)[:, :, :seq_len]

    out = q.new_empty(batch, heads, nb, bs, head_dim)
    if plan.global_rows.numel():
        out[:, :, plan.global_rows] = _global_rows(q, k, v, bs, plan.global_rows, key_padding_mask, dropout_p)
    if plan.sparse_rows.numel():
        out[:, :, plan.sparse_rows] = _sparse_rows(q, k, v, bs, plan, key_padding_mask, dropout_p)
    return out.view(batch, heads, nb * bs, head_dim)[:, :, :seq_len]


def _global_rows(q, k, v, bs, rows, key_padding_mask, dropout_p):
    """Query blocks that see every key: one dense call over `len(rows) * bs` queries."""
    batch, heads, n, head_dim = q.shape
    qg = q.view(batch, heads, n // bs, bs, head_dim)[:, :, rows]  # (B, H, g, bs, D)
    qg = qg.reshape(batch, heads, -1, head_dim)  # (B, H, g * bs, D)
    mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    out = dense_attention(qg, k, v, attn_mask=mask, dropout_p=dropout_p)
    return out.view(batch, heads, rows.numel(), bs, head_dim)


def _sparse_rows(q, k, v, bs, plan: SparsePlan, key_padding_mask, dropout_p):
    """Each remaining query block attends its own `W` key blocks, gathered per head."""
    batch, heads, n, head_dim = q.shape
    nb = n // bs
    m, width = plan.key_blocks.shape[-2:]
    head_index = torch.arange(heads, device=q.device)[:, None, None]  # (H, 1, 1)
    qs = q.view(batch, heads, nb, bs, head_dim)[:, :, plan.sparse_rows]  # (B, H, m, bs, D)
    kb = k.view(batch, heads, nb, bs, head_dim)
    vb = v.view(batch, heads, nb, bs, head_dim)
    # Advanced indexing over (head, block) gathers each head's own key blocks.
    kg = kb[:, head_index, plan.key_blocks].reshape(batch, heads, m, width * bs, head_dim)
    vg = vb[:, head_index, plan.key_blocks].reshape(batch, heads, m, width * bs, head_dim)

    allowed = None
    if not plan.all_valid:
        allowed = plan.key_valid.repeat_interleave(bs, dim=-1)[None]  # (1, H, m, W * bs)
    if key_padding_mask is not None:
        key_real = key_padding_mask.view(batch, nb, bs)[:, plan.key_blocks]  # (B, H, m, W, bs)
        key_real = key_real.reshape(batch, heads, m, width * bs)
        allowed = key_real if allowed is None else allowed & key_real
    if allowed is None:
        return F.scaled_dot_product_attention(qs, kg, vg, dropout_p=dropout_p)
    # A query block whose keys are all padding (or all padding slots) attends nothing: SDPA
    # would return NaN, so such blocks run unmasked and are zeroed, as dense_attention does.
    has_key = allowed.any(dim=-1, keepdim=True)  # (B, H, m, 1)
    allowed = allowed | ~has_key
    out = F.scaled_dot_product_attention(qs, kg, vg, attn_mask=allowed[..., None, :], dropout_p=dropout_p)
    return out * has_key[..., None].to(out.dtype)
