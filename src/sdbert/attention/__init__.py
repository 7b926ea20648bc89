"""Attention kernels: they know nothing of models. All take `(batch, heads, seq, head_dim)`."""

from sdbert.attention.block_sparse import block_sparse_attention
from sdbert.attention.dense import dense_attention
from sdbert.attention.layout import (
    SparsePlan,
    bigbird_block_layout,
    bigbird_plan,
    layout_to_token_mask,
    plan_from_layout,
)

__all__ = [
    "SparsePlan",
    "bigbird_block_layout",
    "bigbird_plan",
    "block_sparse_attention",
    "dense_attention",
    "layout_to_token_mask",
    "plan_from_layout",
]
