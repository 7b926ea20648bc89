"""Dense attention through `scaled_dot_product_attention`: the `"full"` path and the oracle."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dense_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Softmax attention over all keys. `q, k, v`: `(batch, heads, seq, head_dim)`.

    `attn_mask` is boolean, broadcastable to `(batch, heads, seq_q, seq_k)`, true = may attend.
    A query row with no allowed key returns zeros instead of SDPA's NaN, so padding rows and empty
    sequences are harmless.
    """
    if attn_mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    if attn_mask.dtype != torch.bool:
        raise TypeError(f"attn_mask must be boolean (true = may attend), got {attn_mask.dtype}")
    has_key = attn_mask.any(dim=-1, keepdim=True)
    if bool(has_key.all()):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    # Let empty rows attend everything (no NaN in forward or backward), then zero them.
    safe_mask = attn_mask | ~has_key
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe_mask, dropout_p=dropout_p)
    return out * has_key.to(out.dtype)
