"""BigBird block layouts (ITC: internal transformer construction).

The sequence is cut into blocks of `block_size` tokens. A layout is a boolean tensor
`(num_heads, num_blocks, num_blocks)`; `[h, i, j]` is true where query block `i` of head `h`
attends key block `j`:

* global blocks: the first and the last block attend to every block and every block attends
  to them (BigBird's CLS-like global tokens);
* sliding window: block `i` attends blocks `i - 1, i, i + 1`;
* random blocks: each middle row draws `r` more blocks, per head, from the blocks that are not
  already global or in its window, so rows 2 .. nb-3 attend exactly `3 + 2 + r` blocks (rows 1 and
  nb-2 have a window that touches a global block and attend `4 + r`).

Random draws use torch's RNG seeded with `seed` (no NumPy, no global state): the same seed always
gives the same layout. Sequences of at most `5 + 2 r` blocks are too short for sparsity to pay;
their layout is dense (all true), matching BigBird's own switch to full attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from sdbert.config import dense_fallback_blocks


def bigbird_block_layout(num_blocks: int, num_random_blocks: int, *, num_heads: int = 1, seed: int = 0) -> torch.Tensor:
    """Boolean block layout `(num_heads, num_blocks, num_blocks)`, deterministic for `seed`."""
    if num_blocks < 1:
        raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
    if num_random_blocks < 0:
        raise ValueError(f"num_random_blocks must be >= 0, got {num_random_blocks}")
    nb, r = num_blocks, num_random_blocks
    if nb <= dense_fallback_blocks(r):
        return torch.ones(num_heads, nb, nb, dtype=torch.bool)

    rows = torch.arange(nb)
    window = (rows[:, None] - rows[None, :]).abs() <= 1  # (nb, nb)
    fixed = window.clone()
    fixed[:, 0] = fixed[:, -1] = True  # every block attends the global blocks
    fixed[0, :] = fixed[-1, :] = True  # the global blocks attend everything
    layout = fixed.expand(num_heads, nb, nb).clone()
    if r > 0:
        # r distinct random picks per (head, middle row) among the blocks not yet attended:
        # the top-r of uniform scores over the candidates is a uniform draw without replacement.
        generator = torch.Generator().manual_seed(seed)
        scores = torch.rand(num_heads, nb, nb, generator=generator)
        scores = scores.masked_fill(fixed, -1.0)
        picks = scores[:, 1:-1].topk(r, dim=-1).indices  # (H, nb-2, r)
        layout[:, 1:-1].scatter_(-1, picks, True)
    return layout


def layout_to_token_mask(layout: torch.Tensor, block_size: int, seq_len: int | None = None) -> torch.Tensor:
    """Expand a block layout `(H, nb, nb)` to a token mask `(H, seq, seq)` (oracle and plots only)."""
    mask = layout.repeat_interleave(block_size, dim=-2).repeat_interleave(block_size, dim=-1)
    if seq_len is not None:
        mask = mask[..., :seq_len, :seq_len]
    return mask


@dataclass(frozen=True)
class SparsePlan:
    """A layout rewritten as index lists, the form the kernel computes with.

    global_rows: query blocks that attend every key block in every head (computed densely).
    sparse_rows: the other query blocks, `(m,)`.
    key_blocks:  `(H, m, W)` key blocks of each sparse row, padded to the widest row `W`.
    key_valid:   `(H, m, W)` false on the padding slots of `key_blocks`.
    """

    num_blocks: int
    global_rows: torch.Tensor
    sparse_rows: torch.Tensor
    key_blocks: torch.Tensor
    key_valid: torch.Tensor

    @property
    def all_valid(self) -> bool:
        return bool(self.key_valid.all())

    def to(self, device: torch.device) -> SparsePlan:
        if self.key_blocks.device == device:
            return self
        move = lambda t: t.to(device, non_blocking=True)
        return SparsePlan(self.num_blocks, move(self.global_rows), move(self.sparse_rows),
                          move(self.key_blocks), move(self.key_valid))


def plan_from_layout(layout: torch.Tensor) -> SparsePlan:
    """Turn a boolean layout `(H, nb, nb)` into a `SparsePlan`."""
    if layout.dim() != 3 or layout.shape[-1] != layout.shape[-2]:
        raise ValueError(f"layout must be (heads, num_blocks, num_blocks), got {tuple(layout.shape)}")
    layout = layout.bool().cpu()
    nb = layout.shape[-1]
    is_global = layout.all(dim=-1).all(dim=0)  # (nb,)
    global_rows = is_global.nonzero().flatten()
    sparse_rows = (~is_global).nonzero().flatten()
    sub = layout[:, sparse_rows]  # (H, m, nb)
    width = int(sub.sum(-1).max()) if sparse_rows.numel() else 0
    # A stable descending sort puts each row's attended blocks first, in ascending block order.
    order = torch.sort(sub.to(torch.uint8), dim=-1, descending=True, stable=True)
    key_blocks = order.indices[..., :width].contiguous()
    key_valid = order.values[..., :width].bool().contiguous()
    return SparsePlan(nb, global_rows, sparse_rows, key_blocks, key_valid)


@lru_cache(maxsize=256)
@torch.inference_mode(False)  # a cached tensor made under inference_mode could never join autograd later
def bigbird_plan(num_blocks: int, num_random_blocks: int, num_heads: int, seed: int) -> SparsePlan:
    """Cached plan of `bigbird_block_layout`: a layer builds it once per sequence length."""
    return plan_from_layout(bigbird_block_layout(num_blocks, num_random_blocks, num_heads=num_heads, seed=seed))
