"""Block-sparse and dense attention written for graph export (ONNX): tensor ops only.

`block_sparse.py` chooses its path in Python (dense below the fallback length, a fused band
kernel, `bool(mask.all())` shortcuts) and builds its random-block plan on the CPU from the
sequence length. A traced graph cannot do either for a sequence length it only knows at run time,
so this module computes the same numbers another way:

* the random blocks of every possible block count `nb` are drawn ahead of time with the same
  seeded generator (`bigbird_block_layout`) and stored in a table `(n_nb, H, nb_max, r)` (2 MB per
  layer for 12 heads, 4,096 positions, block 64, r = 3); the graph gathers its entry by `nb`;
* the window and global key blocks of middle row `i` are `[0, nb - 1, i - 1, i, i + 1]`, built
  with `arange`; the copies of a global block inside the window of rows 1 and `nb - 2` are masked
  (BigBird attends each block once). Keys and values of each row's `5 + r` blocks are gathered,
  `(B, H, nb, (5 + r) bs, D)`: memory linear in the length, as in the PyTorch kernel's general path;
* the choice between dense attention (`nb <= 5 + 2 r`, as in `block_sparse_attention`) and the
  sparse computation is a `torch.cond` on the symbolic block count, which exports as an ONNX `If`;
* padding to a multiple of `block_size` happens inside (`F.pad` by a symbolic amount), so callers
  feed any length.

Shapes are kept simple for `torch.export`: blocked views are made before the `cond`, indices come
from `arange` and `index_select` (never a Python int from a shape), and the branches return flat
tensors of one size. Masked scores use a large finite negative rather than `-inf`; rows that see
no key at all return zeros, as `dense_attention` does. At every real query position the result equals
`block_sparse_attention` with the same seed (the oracle test in `tests/test_export.py`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sdbert.attention.layout import bigbird_block_layout
from sdbert.config import dense_fallback_blocks


def random_block_table(max_blocks: int, num_random_blocks: int, num_heads: int, seed: int) -> torch.Tensor:
    """Random key blocks of every sparse block count, `(max_blocks - nb0 + 1, H, max_blocks, r)`.

    Entry `[nb - nb0, h, i]` lists (ascending) the random blocks of middle row `i` of head `h` in
    `bigbird_block_layout(nb, r, num_heads=H, seed=seed)`, where `nb0 = 6 + 2 r` is the first block
    count that is not dense. The global rows `0` and `nb - 1` and rows past them hold zeros.
    """
    r = num_random_blocks
    first = 6 + 2 * r
    table = torch.zeros(max(max_blocks - first + 1, 1), num_heads, max_blocks, r, dtype=torch.long)
    for nb in range(first, max_blocks + 1):
        layout = bigbird_block_layout(nb, r, num_heads=num_heads, seed=seed)  # (H, nb, nb)
        rows = torch.arange(nb)
        fixed = (rows[:, None] - rows[None, :]).abs() <= 1
        fixed[:, 0] = fixed[:, -1] = True
        extra = (layout & ~fixed)[:, 1:-1]  # (H, nb - 2, nb): exactly r per row
        # A stable sort puts each row's r random blocks first, in ascending order.
        picks = torch.sort((~extra).to(torch.uint8), dim=-1, stable=True).indices[..., :r]
        table[nb - first, :, 1 : nb - 1] = picks
    return table


def traceable_dense_attention(q, k, v, key_padding_mask: torch.Tensor) -> torch.Tensor:
    """Softmax attention over all real keys; `key_padding_mask` `(B, S)` bool, true = real."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, S, S)
    allowed = key_padding_mask[:, None, None, :]
    out = _masked_softmax(scores, allowed) @ v
    return out * allowed.any(-1, keepdim=True).to(out.dtype)


def traceable_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor,
    random_table: torch.Tensor,
    *,
    block_size: int,
    num_random_blocks: int,
) -> torch.Tensor:
    """`block_sparse_attention` for export. `q, k, v`: `(B, H, S, D)`; `key_padding_mask`: `(B, S)`
    bool; `random_table` from `random_block_table` for this layer's seed. Padding query rows are zero."""
    batch, heads, seq_len, dim = q.shape
    bs = block_size
    nb = (seq_len + bs - 1) // bs
    pad = nb * bs - seq_len
    # Blocked views are made here, where the padded length is visibly nb * bs; the branches below
    # see only (B, H, nb, bs, D) and never divide a length by the block size.
    q, k, v = (F.pad(t, (0, 0, 0, pad)).view(batch, heads, nb, bs, dim) for t in (q, k, v))
    mask = F.pad(key_padding_mask, (0, pad), value=False).view(batch, nb, bs)

    # Both branches return flat tensors of the same size: torch.cond wants outputs whose strides
    # follow from their sizes, which 5-d symbolic shapes (possibly empty, to its eyes) do not prove.
    def dense(q, k, v, mask, table):
        flat = lambda t: t.flatten(2, 3)  # (B, H, nb bs, D)
        return traceable_dense_attention(flat(q), flat(k), flat(v), mask.flatten(1, 2)).reshape(-1)

    def sparse(q, k, v, mask, table):
        return _sparse(q, k, v, mask, table, num_random_blocks).reshape(-1)

    operands = (q, k, v, mask, random_table)
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        out = torch.cond(nb <= dense_fallback_blocks(num_random_blocks), dense, sparse, operands)
    else:
        out = (dense if nb <= dense_fallback_blocks(num_random_blocks) else sparse)(*operands)
    out = out.view(batch, heads, nb * bs, dim) * mask.view(batch, 1, nb * bs, 1).to(q.dtype)
    return out[:, :, :seq_len]


def _sparse(q, k, v, mask, table, r: int):
    """Blocked `q, k, v` `(B, H, nb, bs, D)` and `mask` `(B, nb, bs)` -> `(B, H, nb, bs, D)`.

    Every row is computed as a middle row (key blocks `[0, nb-1, i-1, i, i+1, random...]`) and the
    two global rows are then replaced with their full attention: two wasted rows buy an output
    whose size is plainly `nb` blocks (no concatenation of `1 + (nb - 2) + 1` pieces).
    """
    batch, heads, nb, bs, dim = q.shape
    scale = 1.0 / math.sqrt(dim)

    # Global rows (first and last block) against every key.
    q_global = torch.cat([q[:, :, :1], q[:, :, -1:]], dim=2).flatten(2, 3)  # (B, H, 2 bs, D)
    allowed = mask.flatten(1, 2)[:, None, None, :]  # (B, 1, 1, nb bs)
    scores = (q_global @ k.flatten(2, 3).transpose(-1, -2)) * scale  # (B, H, 2 bs, nb bs)
    out_global = _masked_softmax(scores, allowed) @ v.flatten(2, 3)
    out_global = out_global * allowed.any(-1, keepdim=True).to(out_global.dtype)
    out_global = out_global.unflatten(2, (2, bs))  # (B, H, 2, bs, D)

    # Row i attends key blocks [0, nb-1, i-1, i, i+1, random...]; window blocks outside the middle
    # (the global blocks in the windows of rows 1 and nb-2, and the ends) are masked.
    rows = torch.arange(nb, device=q.device)  # (nb,)
    last = rows[-1:]  # (1,): nb - 1 as a tensor
    fixed = torch.stack([torch.zeros_like(rows), last.expand_as(rows), (rows - 1).clamp(min=0), rows,
                         torch.minimum(rows + 1, last)], dim=-1)  # (nb, 5)
    always = torch.ones_like(rows, dtype=torch.bool)
    valid = torch.stack([always, always, rows > 1, always, rows < last - 1], dim=-1)  # (nb, 5)
    blocks, valid = fixed[None].expand(heads, -1, -1), valid[None].expand(heads, -1, -1)  # (H, nb, 5)
    if r:
        # This block count's table entry, cut to nb rows by a gather (not a symbolic slice).
        table = table.index_select(0, last + 1 - (6 + 2 * r))[0]  # (H, nb_max, r)
        random = table.index_select(1, rows)  # (H, nb, r)
        blocks = torch.cat([blocks, random], dim=-1)  # (H, nb, W)
        valid = torch.cat([valid, torch.ones_like(random, dtype=torch.bool)], dim=-1)
    width = blocks.shape[-1]
    # One flat gather over (head, block): row h * nb + block of the (B, H * nb, bs, D) views.
    flat = (blocks + torch.arange(heads, device=q.device)[:, None, None] * nb).reshape(-1)  # (H nb W,)
    k_g = k.flatten(1, 2).index_select(1, flat).view(batch, heads, nb, width * bs, dim)
    v_g = v.flatten(1, 2).index_select(1, flat).view(batch, heads, nb, width * bs, dim)
    key_real = mask.index_select(1, blocks.reshape(-1)).view(batch, heads, nb, width, bs)
    allowed = (key_real & valid[None, :, :, :, None]).view(batch, heads, nb, 1, width * bs)

    scores = (q @ k_g.transpose(-1, -2)) * scale  # (B, H, nb, bs, W bs)
    out = _masked_softmax(scores, allowed) @ v_g
    out = out * allowed.any(-1, keepdim=True).to(out.dtype)  # (B, H, nb, bs, D)
    is_first = (rows == 0)[:, None, None]  # (nb, 1, 1)
    is_last = (rows == last)[:, None, None]
    out = torch.where(is_first, out_global[:, :, :1], out)
    return torch.where(is_last, out_global[:, :, 1:], out)


def _masked_softmax(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    neg = torch.finfo(scores.dtype).min / 4
    return scores.masked_fill(~allowed, neg).softmax(-1)
