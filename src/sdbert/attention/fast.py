"""The fast CPU path for BigBird-shaped plans: fused attention over strided views, no window copies.

A BigBird plan (global rows `{0, nb-1}`; every other row `i` attends the global columns
`{0, nb-1}`, its window `{i-1, i, i+1}` and `r` further blocks) is computed in four fused
attention calls per batch element, each through torch's CPU flash-attention kernel, which keeps
the scores in cache and returns the log-sum-exp of each query row:

* global rows: the 2 global query blocks against all keys;
* window: query block `i` against keys `[(i-1) bs, (i+2) bs)`: an overlapping strided *view* of
  `k` and `v` (BigBird's band trick without its copies). Rows 1 and nb-2 see a global block in
  their window; the window mask hides that copy, the global-column call owns it;
* global columns: all middle queries as one long row against the 2 global key blocks;
* random blocks: the only gathered keys, `(H, m, r * bs, D)`.

The three partial results of the middle rows merge exactly through their log-sum-exps:
`out = sum_p exp(lse_p - lse) out_p`, `lse = logsumexp_p lse_p`. The backward pass calls the
kernel's own backward once per partial with the *merged* output and log-sum-exp, which gives each
partial's exact share of the gradient (the softmax normaliser is the merged one), then folds the
window's key gradients back with three shifted adds and the random ones with an indexed add.

Masks are additive with a large finite negative value (not `-inf`: a row that sees only padding in
one partial must return a log-sum-exp that weighs nothing in the merge, where the kernel's `-inf`
path reports 0). Every real query row keeps at least one real key (token 0 is global and real:
the caller routes batches whose first token is padding to the general path).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import lru_cache

import torch

from sdbert.attention.layout import SparsePlan

_aten = torch.ops.aten
HAVE_FLASH = hasattr(_aten, "_scaled_dot_product_flash_attention_for_cpu") and hasattr(
    _aten, "_scaled_dot_product_flash_attention_for_cpu_backward")
_FLASH_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class BandPlan:
    """A `SparsePlan` recognised as BigBird-shaped.

    random_blocks: `(H, nb - 2, r)` the key blocks of middle row `i` (index `i - 1`) beyond its
    window and the two global columns.
    """

    num_blocks: int
    random_blocks: torch.Tensor


_band_cache: dict[int, tuple[weakref.ref, BandPlan | None]] = {}


def band_plan(plan: SparsePlan) -> BandPlan | None:
    """The `BandPlan` of `plan`, or None when the plan is not BigBird-shaped (cached per plan)."""
    hit = _band_cache.get(id(plan))
    if hit is not None and hit[0]() is plan:
        return hit[1]
    with torch.inference_mode(False):  # cached tensors must stay usable by autograd later
        band = _detect_band(plan)
    _band_cache[id(plan)] = (weakref.ref(plan), band)
    weakref.finalize(plan, _band_cache.pop, id(plan), None)
    return band


def _detect_band(plan: SparsePlan) -> BandPlan | None:
    nb = plan.num_blocks
    if nb < 4 or plan.global_rows.tolist() != [0, nb - 1] or plan.sparse_rows.tolist() != list(range(1, nb - 1)):
        return None
    blocks, valid = plan.key_blocks.cpu(), plan.key_valid.cpu()  # (H, m, W); no repeats within a row
    rows = torch.arange(1, nb - 1)[None, :, None]
    fixed = valid & ((blocks == 0) | (blocks == nb - 1) | ((blocks - rows).abs() <= 1))
    expected = torch.full((nb - 2,), 5)
    expected[0] = expected[-1] = 4  # rows 1 and nb-2: the window touches a global block
    if not bool((fixed.sum(-1) == expected).all()):
        return None
    extra = valid & ~fixed
    counts = extra.sum(-1)
    r = int(counts.flatten()[0])
    if not bool((counts == r).all()):
        return None
    # A stable sort brings each row's extra blocks to the front, in the plan's order.
    order = torch.sort((~extra).to(torch.uint8), dim=-1, stable=True).indices[..., :r]
    return BandPlan(nb, blocks.gather(-1, order).contiguous())


def band_supported(q: torch.Tensor, key_padding_mask: torch.Tensor | None, dropout_p: float) -> bool:
    """Whether `band_attention` can run these inputs (else use the general path)."""
    return (HAVE_FLASH and q.device.type == "cpu" and q.dtype in _FLASH_DTYPES and dropout_p == 0.0
            and (key_padding_mask is None or bool(key_padding_mask[:, 0].all())))


def band_attention(q, k, v, block_size: int, band: BandPlan, key_padding_mask: torch.Tensor | None):
    """Block-sparse attention of a BigBird-shaped plan. `q, k, v`: `(B, H, nb * bs, D)`, any
    strides with unit stride in `D`. Returns `(B, H, nb * bs, D)` laid out as `(B, S, H, D)` (what
    the model's head merge wants). Padding query rows are not zeroed here."""
    return _BandAttention.apply(q, k, v, key_padding_mask, band.random_blocks.to(q.device), block_size)


def _neg(dtype: torch.dtype) -> float:
    # Large enough that exp() of it is 0 against any real score, small enough to stay finite after
    # the kernel adds scores and subtracts row maxima.
    return torch.finfo(dtype).min / 4


@lru_cache(maxsize=64)
@torch.inference_mode(False)  # cached tensors must stay usable by autograd later
def _window_keep(nb: int, bs: int, device: torch.device) -> torch.Tensor:
    """`(m, 3 bs)` keys of each middle row's window that it owns: rows 1 and nb-2 leave their
    global neighbour to the global-column call."""
    keep = torch.ones(nb - 2, 3 * bs, dtype=torch.bool, device=device)
    keep[0, :bs] = False
    keep[-1, 2 * bs:] = False
    return keep


@lru_cache(maxsize=64)
@torch.inference_mode(False)
def _window_mask(nb: int, bs: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return _additive(_window_keep(nb, bs, device), dtype)[None, :, None]  # (1, m, 1, 3 bs)


def _additive(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(~keep, _neg(dtype))


class _Masks:
    """Additive masks of one batch element (None where nothing is hidden)."""

    def __init__(self, kpm_row: torch.Tensor | None, nb: int, bs: int, random_blocks: torch.Tensor,
                 dtype: torch.dtype):
        self.global_rows = self.global_cols = self.random = None
        if kpm_row is None:
            self.window = _window_mask(nb, bs, dtype, random_blocks.device)
            return
        kpm_row = kpm_row.contiguous()
        window_keep = _window_keep(nb, bs, kpm_row.device) & kpm_row.as_strided((nb - 2, 3 * bs), (bs, 1))
        self.window = _additive(window_keep, dtype)[None, :, None]  # (1, m, 1, 3 bs)
        self.global_rows = _additive(kpm_row, dtype)[None, None, None]  # (1, 1, 1, S)
        self.global_cols = _additive(torch.cat([kpm_row[:bs], kpm_row[-bs:]]), dtype)[None, None, None]
        random_keep = kpm_row.view(nb, bs)[random_blocks]  # (H, m, r, bs)
        self.random = _additive(random_keep.flatten(-2), dtype)[:, :, None]  # (H, m, 1, r bs)


def _views(q, k, v, b: int, nb: int, bs: int, random_blocks: torch.Tensor):
    """Views (and the two small copies) of batch element `b` that the four calls read."""
    heads, seq, dim = q.shape[1], q.shape[2], q.shape[3]
    m = nb - 2
    qb, kb, vb = q[b], k[b], v[b]  # (H, S, D)
    head_index = torch.arange(heads, device=q.device)[:, None, None]

    def window(t):  # (H, m, 3 bs, D): overlapping view, row i starts at block i-1
        sh, ss = t.stride(0), t.stride(1)
        return t.as_strided((heads, m, 3 * bs, dim), (sh, bs * ss, ss, 1), t.storage_offset())

    return dict(
        q_global=torch.stack([qb[:, :bs], qb[:, -bs:]], 1).view(heads, 1, 2 * bs, dim),
        k_all=kb[:, None], v_all=vb[:, None],  # (H, 1, S, D)
        q_mid=qb[:, bs:seq - bs].unflatten(1, (m, bs)),  # (H, m, bs, D)
        q_mid_flat=qb[:, None, bs:seq - bs],  # (H, 1, m bs, D)
        k_window=window(kb), v_window=window(vb),
        k_gcols=torch.cat([kb[:, :bs], kb[:, -bs:]], 1)[:, None],  # (H, 1, 2 bs, D)
        v_gcols=torch.cat([vb[:, :bs], vb[:, -bs:]], 1)[:, None],
        k_random=kb.unflatten(1, (nb, bs))[head_index, random_blocks].flatten(2, 3),  # (H, m, r bs, D)
        v_random=vb.unflatten(1, (nb, bs))[head_index, random_blocks].flatten(2, 3),
    )


def _merge_into(dst, parts):
    """Exact merge of partial attentions `[(out (H, m, bs, D), lse (H, m, bs)), ...]`, written into
    `dst` (a view of the output); returns the merged log-sum-exp."""
    lses = torch.stack([lse for _, lse in parts])  # (P, H, m, bs), fp32 or fp64
    lse = torch.logsumexp(lses, dim=0)
    weights = (lses - lse).exp_().unsqueeze(-1).to(dst.dtype)  # (P, H, m, bs, 1)
    torch.mul(parts[0][0], weights[0], out=dst)
    for (o, _), w in zip(parts[1:], weights[1:], strict=True):
        dst.addcmul_(o, w)
    return lse


class _BandAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, key_padding_mask, random_blocks, bs):
        batch, heads, seq, dim = q.shape
        nb, m, r = seq // bs, seq // bs - 2, random_blocks.shape[-1]
        flash = _aten._scaled_dot_product_flash_attention_for_cpu
        out = q.new_empty(batch, seq, heads, dim).transpose(1, 2)  # (B, H, S, D) over (B, S, H, D)
        lse_global = q.new_empty(batch, heads, 1, 2 * bs, dtype=_lse_dtype(q.dtype))
        lse_mid = q.new_empty(batch, heads, m, bs, dtype=_lse_dtype(q.dtype))
        for b in range(batch):
            masks = _Masks(None if key_padding_mask is None else key_padding_mask[b], nb, bs, random_blocks,
                           q.dtype)
            t = _views(q, k, v, b, nb, bs, random_blocks)
            o, lse_global[b] = flash(t["q_global"], t["k_all"], t["v_all"], attn_mask=masks.global_rows)
            out[b, :, :bs], out[b, :, -bs:] = o[:, 0, :bs], o[:, 0, bs:]
            parts = [flash(t["q_mid"], t["k_window"], t["v_window"], attn_mask=masks.window)]
            o, lse = flash(t["q_mid_flat"], t["k_gcols"], t["v_gcols"], attn_mask=masks.global_cols)
            parts.append((o.view(heads, m, bs, dim), lse.view(heads, m, bs)))
            if r:
                parts.append(flash(t["q_mid"], t["k_random"], t["v_random"], attn_mask=masks.random))
            lse_mid[b] = _merge_into(out[b, :, bs:seq - bs].unflatten(1, (m, bs)), parts)
        ctx.save_for_backward(q, k, v, key_padding_mask, random_blocks, out, lse_global, lse_mid)
        ctx.bs = bs
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, key_padding_mask, random_blocks, out, lse_global, lse_mid = ctx.saved_tensors
        bs = ctx.bs
        batch, heads, seq, dim = q.shape
        nb, m, r = seq // bs, seq // bs - 2, random_blocks.shape[-1]
        flash_bwd = _aten._scaled_dot_product_flash_attention_for_cpu_backward
        # Contiguous (B, H, S, D) gradients: blocks of one head are then rows of an (H * nb) index.
        dq, dk, dv = (torch.empty(batch, heads, seq, dim, dtype=q.dtype, device=q.device) for _ in range(3))
        flat_random = (torch.arange(heads, device=q.device)[:, None, None] * nb + random_blocks).flatten()
        for b in range(batch):
            masks = _Masks(None if key_padding_mask is None else key_padding_mask[b], nb, bs, random_blocks,
                           q.dtype)
            t = _views(q, k, v, b, nb, bs, random_blocks)
            g, o = grad_out[b], out[b]  # (H, S, D)
            dqb, dkb, dvb = dq[b], dk[b], dv[b]

            # Global rows against all keys: the first contribution to dk, dv.
            g_global = torch.stack([g[:, :bs], g[:, -bs:]], 1).view(heads, 1, 2 * bs, dim)
            o_global = torch.stack([o[:, :bs], o[:, -bs:]], 1).view(heads, 1, 2 * bs, dim)
            gq, gk, gv = flash_bwd(g_global, t["q_global"], t["k_all"], t["v_all"], o_global, lse_global[b],
                                   0.0, False, attn_mask=masks.global_rows)
            dqb[:, :bs], dqb[:, -bs:] = gq[:, 0, :bs], gq[:, 0, bs:]
            dkb.copy_(gk[:, 0])
            dvb.copy_(gv[:, 0])

            # Middle rows: each partial's share, with the merged output and log-sum-exp.
            g_mid, o_mid = g[:, bs:seq - bs].unflatten(1, (m, bs)), o[:, bs:seq - bs].unflatten(1, (m, bs))
            lse = lse_mid[b]  # (H, m, bs)
            dq_mid = dqb[:, bs:seq - bs].unflatten(1, (m, bs))  # view: writes land in dq

            gq, gk, gv = flash_bwd(g_mid, t["q_mid"], t["k_window"], t["v_window"], o_mid, lse,
                                   0.0, False, attn_mask=masks.window)
            dq_mid.copy_(gq)
            for grad, acc in ((gk, dkb), (gv, dvb)):  # fold the overlapping windows back
                grad = grad.unflatten(2, (3, bs))  # (H, m, 3, bs, D)
                blocks = acc.unflatten(1, (nb, bs))  # (H, nb, bs, D)
                for shift in range(3):
                    blocks[:, shift:shift + m] += grad[:, :, shift]

            gq, gk, gv = flash_bwd(g[:, None, bs:seq - bs], t["q_mid_flat"], t["k_gcols"], t["v_gcols"],
                                   o[:, None, bs:seq - bs], lse.reshape(heads, 1, m * bs), 0.0, False,
                                   attn_mask=masks.global_cols)
            dq_mid += gq.view(heads, m, bs, dim)
            for grad, acc in ((gk, dkb), (gv, dvb)):
                acc[:, :bs] += grad[:, 0, :bs]
                acc[:, -bs:] += grad[:, 0, bs:]

            if r:
                gq, gk, gv = flash_bwd(g_mid, t["q_mid"], t["k_random"], t["v_random"], o_mid, lse,
                                       0.0, False, attn_mask=masks.random)
                dq_mid += gq
                for grad, acc in ((gk, dkb), (gv, dvb)):  # (H, m, r bs, D) -> rows of (H nb, bs D)
                    acc.view(heads * nb, bs * dim).index_add_(0, flat_random, grad.reshape(-1, bs * dim))
        return dq, dk, dv, None, None, None


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32
