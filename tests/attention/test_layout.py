import pytest
import torch

from sdbert.attention import bigbird_block_layout, layout_to_token_mask, plan_from_layout


@pytest.mark.parametrize("num_blocks,r", [(8, 0), (12, 1), (16, 2), (20, 3), (64, 3)])
def test_bigbird_layout_structure(num_blocks, r):
    layout = bigbird_block_layout(num_blocks, r, num_heads=4, seed=7)
    assert layout.shape == (4, num_blocks, num_blocks) and layout.dtype == torch.bool
    nb = num_blocks
    assert layout[:, [0, -1], :].all(), "global rows attend everything"
    assert layout[:, :, [0, -1]].all(), "everything attends the global blocks"
    for i in range(1, nb - 1):
        assert layout[:, i, i - 1 : i + 2].all(), "sliding window of 3"
    counts = layout[:, 2:-2].sum(-1)
    assert (counts == 3 + 2 + r).all(), "middle rows attend exactly 3 + 2 + r blocks"
    assert (layout[:, [1, -2]].sum(-1) == 4 + r).all(), "rows next to a global block: 4 + r"


def test_layout_is_deterministic_per_seed_and_differs_across_seeds_and_heads():
    a = bigbird_block_layout(32, 3, num_heads=4, seed=1)
    assert torch.equal(a, bigbird_block_layout(32, 3, num_heads=4, seed=1))
    assert not torch.equal(a, bigbird_block_layout(32, 3, num_heads=4, seed=2))
    assert not torch.equal(a[0], a[1]), "heads draw their own random blocks"


def test_layout_does_not_touch_global_rng():
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    bigbird_block_layout(32, 3, num_heads=2, seed=5)
    assert torch.equal(before, torch.rand(3))


def test_short_sequences_are_dense():
    assert bigbird_block_layout(11, 3, num_heads=2).all()  # 11 <= 5 + 2 * 3
    assert not bigbird_block_layout(12, 3, num_heads=2).all()


def test_random_blocks_cover_the_candidates_roughly_uniformly():
    layout = bigbird_block_layout(40, 3, num_heads=64, seed=0)
    picks = layout[:, 10].float().sum(0)  # row 10 over 64 heads
    picks[[0, 9, 10, 11, 39]] = 0  # fixed blocks
    candidates = picks[picks > 0]
    assert candidates.numel() > 25, "random picks should spread over the candidate blocks"


def test_token_mask_expansion():
    layout = bigbird_block_layout(8, 0, num_heads=1)
    mask = layout_to_token_mask(layout, 4, seq_len=30)
    assert mask.shape == (1, 30, 30)
    assert mask[0, 5, 1] and not mask[0, 9, 20]  # block 2 -> block 0 yes; block 2 -> block 5 no


def test_plan_lists_exactly_the_layout():
    layout = bigbird_block_layout(16, 2, num_heads=3, seed=4)
    plan = plan_from_layout(layout)
    assert plan.global_rows.tolist() == [0, 15]
    rebuilt = torch.zeros_like(layout)
    for h in range(3):
        for j, row in enumerate(plan.sparse_rows.tolist()):
            blocks = plan.key_blocks[h, j][plan.key_valid[h, j]]
            rebuilt[h, row, blocks] = True
    rebuilt[:, plan.global_rows] = True
    assert torch.equal(rebuilt, layout)


def test_bad_arguments():
    with pytest.raises(ValueError):
        bigbird_block_layout(0, 1)
    with pytest.raises(ValueError):
        bigbird_block_layout(10, -1)
    with pytest.raises(ValueError):
        plan_from_layout(torch.ones(3, 4, 5, dtype=torch.bool))
