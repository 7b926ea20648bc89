"""The GPU path: the same block layout as a FlexAttention `BlockMask`, run by torch's compiled kernel.

Why: on CUDA neither the native C++ kernel nor the CPU band path applies, and the general path
gathers key blocks through memory. FlexAttention (torch >= 2.5) compiles one fused kernel that
skips the blocks a `BlockMask` leaves out, forward and backward.

The block mask is built straight from a `SparsePlan` (no `seq x seq` mask is ever made):
`kv_indices[h, i]` lists the key blocks query block `i` of head `h` attends, as in the layout.
Blocks without padding keys are passed as *full* blocks (the kernel skips the mask there); when
there is a key padding mask, all blocks are *partial* and `mask_mod` hides the padding keys.
`mask_mod` also encodes the layout itself, because FlexAttention's eager mode (what CPU tests run,
and what torch falls back to without compilation) evaluates `mask_mod` at every (query, key) pair.

Selection: `block_sparse_attention` uses this path automatically for CUDA tensors without attention
dropout (FlexAttention has none; training with attention dropout takes the general path).
`SDBERT_FLEX=0` turns it off; a compilation failure is logged once and the general path takes over.
On CPU, FlexAttention is a prototype (inference only): the tests run it there in eager mode for
equivalence with the oracle; it is not selected on CPU, where the native kernel is faster.
"""

from __future__ import annotations

import logging
import os

import torch

from sdbert.attention.layout import SparsePlan

log = logging.getLogger(__name__)

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_state: dict[str, object] = {"failed": False}


def available() -> bool:
    """FlexAttention is importable (torch >= 2.5) and not switched off with `SDBERT_FLEX=0`."""
    if os.environ.get("SDBERT_FLEX", "1") == "0" or _state["failed"]:
        return False
    try:
        # CUDA path: FlexAttention is loaded only where it can run
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def supported(q: torch.Tensor, dropout_p: float) -> bool:
    """Whether `block_sparse_attention` should take this path: CUDA, no attention dropout."""
    return q.is_cuda and dropout_p == 0.0 and q.dtype in _DTYPES and available()


def plan_layout(plan: SparsePlan, device: torch.device | None = None) -> torch.Tensor:
    """The boolean block layout `(H, nb, nb)` a plan was made from."""
    heads, nb = plan.key_blocks.shape[0], plan.num_blocks
    layout = torch.zeros(heads, nb, nb, dtype=torch.bool, device=plan.key_blocks.device)
    layout[:, plan.global_rows] = True
    if plan.sparse_rows.numel():
        rows = plan.sparse_rows[None, :, None].expand_as(plan.key_blocks)
        head = torch.arange(heads, device=layout.device)[:, None, None].expand_as(plan.key_blocks)
        layout[head[plan.key_valid], rows[plan.key_valid], plan.key_blocks[plan.key_valid]] = True
    return layout if device is None else layout.to(device)


def block_mask(layout: torch.Tensor, block_size: int, seq_len: int, key_padding_mask: torch.Tensor | None):
    """A FlexAttention `BlockMask` for a layout `(H, nb, nb)` (`plan_layout`) over a padded length of
    `nb * block_size` tokens, on the layout's device.

    key_padding_mask: `(batch, nb * block_size)` bool, true for real tokens, or None.
    """
    # CUDA path: FlexAttention is loaded only where it can run
    from torch.nn.attention.flex_attention import BlockMask

    # A stable descending sort lists each row's attended blocks first, in ascending order.
    counts = layout.sum(-1, dtype=torch.int32)[None]  # (1, H, nb)
    indices = torch.sort(layout.to(torch.uint8), dim=-1, descending=True, stable=True).indices
    indices = indices.to(torch.int32)[None]  # (1, H, nb, nb)
    bs = block_size

    if key_padding_mask is None:
        def mask_mod(b, h, q_idx, kv_idx):
            return layout[h, q_idx // bs, kv_idx // bs]

        no_partial = torch.zeros_like(counts)
        # Two distinct index tensors: with one tensor for both, torch 2.13's CPU code generator
        # emits a kernel that does not compile ("kv_indices was not declared").
        return BlockMask.from_kv_blocks(no_partial, indices.clone(), counts, indices, BLOCK_SIZE=bs, mask_mod=mask_mod,
                                        seq_lengths=(seq_len, seq_len))

    batch = key_padding_mask.shape[0]
    key_real = key_padding_mask

    def mask_mod(b, h, q_idx, kv_idx):
        return layout[h, q_idx // bs, kv_idx // bs] & key_real[b, kv_idx]

    return BlockMask.from_kv_blocks(counts.expand(batch, -1, -1).contiguous(),
                                    indices.expand(batch, -1, -1, -1).contiguous(), BLOCK_SIZE=bs,
                                    mask_mod=mask_mod, seq_lengths=(seq_len, seq_len))


def _kernel(compiled: bool):
    # CUDA path: FlexAttention is loaded only where it can run
    from torch.nn.attention.flex_attention import flex_attention

    if not compiled:
        return flex_attention
    if "compiled" not in _state:
        _state["compiled"] = torch.compile(flex_attention, dynamic=None)
    return _state["compiled"]


def flex_block_sparse(q, k, v, block_size: int, plan: SparsePlan, key_padding_mask: torch.Tensor | None,
                      *, compiled: bool = True) -> torch.Tensor | None:
    """Block-sparse attention over a length that is a multiple of `block_size` (the caller pads).

    Rows whose keys are all padding return zeros, as `dense_attention` does. Returns None (after
    logging why, once) when the compiled kernel fails, so the caller can take the general path.
    """
    layout = plan_layout(plan, q.device)  # (H, nb, nb), shared by the block mask and the empty-row check
    mask = block_mask(layout, block_size, q.shape[-2], key_padding_mask)
    try:
        out = _kernel(compiled)(q, k, v, block_mask=mask)
    except Exception as exc:  # a compiler or driver we cannot test here: fall back, say so once
        if not compiled:
            raise
        _state["failed"] = True
        log.warning("FlexAttention failed (%s: %s); using the general block-sparse path from now on",
                    type(exc).__name__, exc)
        return None
    if key_padding_mask is not None:
        # A query block whose attended keys are all padding has no valid key: force zeros.
        has_key = mask_has_keys(layout, block_size, key_padding_mask)[:, :, :, None]
        out = out * has_key.to(out.dtype)
    return out


def mask_has_keys(layout: torch.Tensor, block_size: int, key_padding_mask: torch.Tensor) -> torch.Tensor:
    """`(batch, heads, seq)` bool: whether each query position of a layout `(H, nb, nb)` sees at least
    one real key."""
    batch, n = key_padding_mask.shape
    real_blocks = key_padding_mask.view(batch, -1, block_size).any(-1)  # (B, nb)
    sees = (layout[None] & real_blocks[:, None, None, :]).any(-1)  # (B, H, nb)
    return sees.repeat_interleave(block_size, dim=-1)[..., :n]
