"""The fast CPU paths against the general gathered path and the dense oracle.

`block_sparse_attention` picks, best first: the native C++ kernel (`sdbert.attention.native`, fp32 and
fp64, any layout), the flash-attention band path (`sdbert.attention.fast`, BigBird-shaped plans),
then the general gathered path. `tests/test_attention.py` runs the oracle grid through whichever
path is picked; these tests force each path in turn and pin what is specific to them."""

import pytest
import torch

import sdbert.attention.fast as fast
from sdbert.attention import (
    bigbird_block_layout,
    bigbird_plan,
    block_sparse_attention,
    dense_attention,
    layout_to_token_mask,
    native,
    plan_from_layout,
)

PATHS = ["native", "band", "general"]


def need_native():
    """Skip a native-kernel test where the kernel does not build, except where CI requires it
    (`SDBERT_REQUIRE_NATIVE=1`, set by `make test`): there a missing kernel fails the run."""
    if native.required():
        assert native.available()  # raises NativeKernelError with the build's error
    elif not native.available():
        pytest.skip(f"native kernel unavailable: {native.unavailable_reason()}")


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    """Force one kernel path; yields a list that records the calls of that path's kernel."""
    calls = []

    def spy(owner, name):
        original = getattr(owner, name)
        monkeypatch.setattr(owner, name, lambda *a: calls.append(1) or original(*a))

    if request.param == "native":
        need_native()
        spy(native._NativeAttention, "apply")
    else:
        monkeypatch.setattr(native, "supported", lambda *a: False)
        if request.param == "band":
            spy(fast._BandAttention, "apply")
        else:
            monkeypatch.setattr(fast, "HAVE_FLASH", False)
            calls.append(1)  # nothing to spy on: the general path is what is left
    return calls


def general(*args, **kwargs):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(native, "supported", lambda *a: False)
        mp.setattr(fast, "HAVE_FLASH", False)
        return block_sparse_attention(*args, **kwargs)


def qkv(batch, heads, seq, dim, dtype=torch.float64, seed=0, layout="bhsd", requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    if layout == "bshd":  # what the model's projections give: (B, S, H, D) transposed
        ts = [torch.randn(batch, seq, heads, dim, generator=g, dtype=dtype).transpose(1, 2) for _ in range(3)]
    else:
        ts = [torch.randn(batch, heads, seq, dim, generator=g, dtype=dtype) for _ in range(3)]
    return [t.requires_grad_(requires_grad) for t in ts]


def test_band_plan_recognises_bigbird_and_only_bigbird():
    for nb, r in ((6, 0), (8, 1), (16, 3)):
        band = fast.band_plan(bigbird_plan(nb, r, 3, 0))
        assert band is not None and band.random_blocks.shape == (3, nb - 2, r)
    layout = bigbird_block_layout(12, 2, num_heads=2, seed=0)
    layout[:, 5, 6] = False  # a middle row without its right neighbour
    assert fast.band_plan(plan_from_layout(layout)) is None


def test_plan_runs_rebuild_the_layout():
    layout = bigbird_block_layout(20, 3, num_heads=4, seed=2)
    layout[1, 7] = False  # an empty row
    layout[2, 3] = layout[2, 0]  # a middle row with the same key list as the global rows
    runs, nruns, order, glen = native.plan_runs(plan_from_layout(layout))
    rebuilt = torch.zeros_like(layout)
    for h, i in zip(*torch.nonzero(nruns, as_tuple=True), strict=True):
        for first, count in runs[h, i, : nruns[h, i]].tolist():
            rebuilt[h, i, first:first + count] = True
    assert torch.equal(rebuilt, layout)
    for h in range(4):  # every query block once; the blocks of a group share their key list
        assert sorted(order[h].tolist()) == list(range(20))
        assert int(glen[h].sum()) == 20 and int(glen[h].max()) <= native.MAX_GROUP
        for j in torch.nonzero(glen[h]).flatten().tolist():
            group = order[h, j:j + glen[h, j]]
            assert (layout[h, group] == layout[h, group[0]]).all()
    assert glen[2, 0] == 3 and set(order[2, :3].tolist()) == {0, 3, 19}


@pytest.mark.parametrize("r", [0, 1, 3])
@pytest.mark.parametrize("layout", ["bhsd", "bshd"])
def test_each_path_equals_general_with_mixed_padding(path, r, layout):
    batch, heads, bs, dim = 3, 2, 8, 16
    seq = (5 + 2 * r + 4) * bs - 3
    q, k, v = qkv(batch, heads, seq, dim, seed=r, layout=layout)
    kpm = torch.ones(batch, seq, dtype=torch.bool)
    kpm[1, seq // 2:] = False  # whole key blocks of padding
    kpm[2, -5:] = False
    out = block_sparse_attention(q, k, v, block_size=bs, num_random_blocks=r, key_padding_mask=kpm, seed=4)
    assert path, "the forced path did not run"
    ref = general(q, k, v, block_size=bs, num_random_blocks=r, key_padding_mask=kpm, seed=4)
    assert (out - ref).abs().max() < 1e-10
    assert (out[1, :, seq // 2:] == 0).all()


def test_each_path_gradients_equal_the_oracle_on_strided_inputs(path):
    batch, heads, bs, dim, r = 2, 3, 4, 8, 2
    seq = 13 * bs - 1
    q, k, v = qkv(batch, heads, seq, dim, layout="bshd", requires_grad=True)
    kpm = torch.ones(batch, seq, dtype=torch.bool)
    kpm[1, -9:] = False
    weight = torch.randn(batch, heads, seq, dim, dtype=torch.float64) * kpm[:, None, :, None]
    (block_sparse_attention(q, k, v, block_size=bs, num_random_blocks=r, key_padding_mask=kpm, seed=7)
     * weight).sum().backward()
    assert path
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    layout = bigbird_block_layout(-(-seq // bs), r, num_heads=heads, seed=7)
    mask = layout_to_token_mask(layout, bs, seq)[None] & kpm[:, None, None, :]
    (dense_attention(q2, k2, v2, attn_mask=mask) * weight).sum().backward()
    for a, b in ((q, q2), (k, k2), (v, v2)):
        assert (a.grad - b.grad).abs().max() < 1e-10


def test_each_path_fp32_at_realistic_block_size(path):
    q, k, v = qkv(1, 2, 1024, 64, dtype=torch.float32)
    out = block_sparse_attention(q, k, v, block_size=64, num_random_blocks=3, seed=0)
    layout = bigbird_block_layout(16, 3, num_heads=2, seed=0)
    ref = dense_attention(q, k, v, attn_mask=layout_to_token_mask(layout, 64)[None])
    assert path and (out - ref).abs().max() < 1e-5


BF16_TOLERANCE = 3e-2
"""bf16 keeps 8 bits of mantissa: inputs rounded to bf16 and a bf16 output carry ~4e-3 relative error each;
with unit-scale values the worst element over a few thousand differs by under 3e-2 from the fp64 oracle."""


def test_each_path_takes_bf16_and_matches_the_oracle_forward_and_backward(path):
    """Under autocast the projections hand the kernel bf16 q/k/v; every path must take them (the native one
    computes in fp32) and return bf16 close to the fp64 oracle on the same bf16-rounded inputs."""
    batch, heads, bs, dim, r = 2, 2, 16, 32, 1
    seq = 11 * bs - 5
    q, k, v = (t.to(torch.bfloat16).requires_grad_() for t in qkv(batch, heads, seq, dim, layout="bshd"))
    kpm = torch.ones(batch, seq, dtype=torch.bool)
    kpm[1, -20:] = False
    out = block_sparse_attention(q, k, v, block_size=bs, num_random_blocks=r, key_padding_mask=kpm, seed=3)
    assert path and out.dtype == torch.bfloat16
    weight = torch.randn(batch, heads, seq, dim, dtype=torch.float64) * kpm[:, None, :, None]
    (out.double() * weight).sum().backward()
    q2, k2, v2 = (t.detach().double().requires_grad_() for t in (q, k, v))
    layout = bigbird_block_layout(-(-seq // bs), r, num_heads=heads, seed=3)
    mask = layout_to_token_mask(layout, bs, seq)[None] & kpm[:, None, None, :]
    ref = dense_attention(q2, k2, v2, attn_mask=mask) * kpm[:, None, :, None]
    (ref * weight).sum().backward()
    assert (out.double() - ref).abs().max() < BF16_TOLERANCE
    for a, b in ((q, q2), (k, k2), (v, v2)):
        assert a.grad.dtype == torch.bfloat16
        assert (a.grad.double() - b.grad).abs().max() < 4 * BF16_TOLERANCE  # sums over ~100 keys per element


def test_native_handles_any_layout_and_left_padding():
    need_native()
    torch.manual_seed(0)
    heads, nb, bs = 2, 7, 4
    layout = torch.rand(heads, nb, nb) < 0.35
    layout[0, 2] = False  # a row that attends nothing -> zeros, as in the oracle
    q, k, v = qkv(2, heads, nb * bs, 8, requires_grad=True)
    kpm = torch.ones(2, nb * bs, dtype=torch.bool)
    kpm[1, :5] = False  # left padding
    out = block_sparse_attention(q, k, v, block_size=bs, num_random_blocks=0, key_padding_mask=kpm, layout=layout)
    ref = general(q, k, v, block_size=bs, num_random_blocks=0, key_padding_mask=kpm, layout=layout)
    assert (out - ref).abs().max() < 1e-12
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_band_path_leaves_left_padding_to_the_general_path(monkeypatch):
    monkeypatch.setattr(native, "supported", lambda *a: False)
    calls = []
    original = fast._BandAttention.apply
    monkeypatch.setattr(fast._BandAttention, "apply", lambda *a: calls.append(1) or original(*a))
    q, k, v = qkv(2, 2, 96, 8)
    kpm = torch.ones(2, 96, dtype=torch.bool)
    kpm[1, :4] = False
    out = block_sparse_attention(q, k, v, block_size=8, num_random_blocks=1, key_padding_mask=kpm)
    assert not calls and torch.isfinite(out).all()


@pytest.mark.parametrize("bs,nb", [(16, 160), (256, 12)])
def test_native_rows_longer_than_a_key_chunk(bs, nb):
    """Global rows of 2,560 keys, and (bs=256) middle rows of 1,280 keys whose runs straddle the
    kernel's 1,024-key chunks: the online softmax across chunks must stay exact."""
    need_native()
    seq = nb * bs - 7
    q, k, v = qkv(2, 2, seq, 8, seed=5, requires_grad=True)
    kpm = torch.ones(2, seq, dtype=torch.bool)
    kpm[1, 1500:] = False
    out = block_sparse_attention(q, k, v, block_size=bs, num_random_blocks=1, key_padding_mask=kpm, seed=2)
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    ref = general(q2, k2, v2, block_size=bs, num_random_blocks=1, key_padding_mask=kpm, seed=2)
    assert (out - ref).abs().max() < 1e-10
    weight = torch.randn_like(out)
    (out * weight).sum().backward()
    (ref * weight).sum().backward()
    for a, b in ((q, q2), (k, k2), (v, v2)):
        assert (a.grad - b.grad).abs().max() < 1e-10


def test_native_groups_of_identical_rows(path):
    """A dense explicit layout: every query block shares one key list, computed in groups."""
    q, k, v = qkv(2, 2, 10 * 8 - 3, 8, requires_grad=True)
    kpm = torch.ones(2, 77, dtype=torch.bool)
    kpm[0, -20:] = False
    layout = torch.ones(2, 10, 10, dtype=torch.bool)
    out = block_sparse_attention(q, k, v, block_size=8, num_random_blocks=0, key_padding_mask=kpm, layout=layout)
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    ref = dense_attention(q2, k2, v2, attn_mask=kpm[:, None, None, :]) * kpm[:, None, :, None]
    assert (out - ref).abs().max() < 1e-10
    weight = torch.randn_like(out) * kpm[:, None, :, None]
    (out * weight).sum().backward()
    (ref * weight).sum().backward()
    for a, b in ((q, q2), (k, k2), (v, v2)):
        assert (a.grad - b.grad).abs().max() < 1e-10


@pytest.fixture
def fresh_native(monkeypatch):
    """The native module as in a new process: no load attempted yet."""
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.delenv("SDBERT_REQUIRE_NATIVE", raising=False)
    return monkeypatch


@pytest.mark.parametrize("outcome", ["built", "disabled", "failed"])
def test_first_use_logs_one_line_naming_the_kernel(fresh_native, caplog, outcome):
    def load():
        if outcome == "built":
            native._state["detail"] = "cached build"
            return True
        native._state["error"] = "disabled by SDBERT_NATIVE" if outcome == "disabled" else "OSError: no ninja"
        native._state["disabled"] = outcome == "disabled"
        return False

    fresh_native.setattr(native, "_load", load)
    with caplog.at_level("INFO", logger="sdbert.attention.native"):
        for _ in range(3):
            assert native.available() == (outcome == "built")
    (record,) = caplog.records  # once per process, not once per call
    expected = {"built": "native C++ kernel (cached build)", "disabled": "PyTorch kernels (disabled by SDBERT_NATIVE)",
                "failed": "PyTorch kernels: the native kernel is unavailable (OSError: no ninja)"}[outcome]
    assert expected in record.getMessage()
    assert record.levelname == ("WARNING" if outcome == "failed" else "INFO")


def test_require_native_turns_the_fallback_into_an_error(fresh_native):
    fresh_native.setenv("SDBERT_NATIVE", "0")  # the cheapest way to a kernel that cannot be used
    fresh_native.setenv("SDBERT_REQUIRE_NATIVE", "1")
    q, k, v = qkv(1, 2, 1024, 16, dtype=torch.float32)
    with pytest.raises(native.NativeKernelError, match="SDBERT_REQUIRE_NATIVE=1.*disabled by SDBERT_NATIVE"):
        block_sparse_attention(q, k, v, block_size=64, num_random_blocks=3)
    fresh_native.setenv("SDBERT_REQUIRE_NATIVE", "0")
    assert not native.available()  # without the requirement: the pure paths, as before


def test_the_ninja_package_is_lent_to_the_build_when_not_on_path(monkeypatch):
    """`.venv/bin/sdbert` without an activated venv: the declared `ninja` dependency sits beside the
    interpreter, off PATH, and torch looks for `ninja` on PATH only."""
    ninja = pytest.importorskip("ninja")
    monkeypatch.setenv("PATH", "/nowhere")
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    with native._ninja_on_path():
        assert native.os.environ["PATH"].split(native.os.pathsep) == ["/nowhere", ninja.BIN_DIR]
    assert native.os.environ["PATH"] == "/nowhere"


@pytest.mark.parametrize("seq", [40, 88])  # the dense fallback (<= 56 tokens here) and the sparse paths
def test_attention_dropout_drops_and_rescales_the_oracle_probabilities(seq):
    """With v = I each output row is the row's attention probabilities after dropout: every entry is either
    dropped (0) or the oracle's probability / (1 - p), and nothing outside the layout or on padding appears."""
    torch.manual_seed(0)
    heads, bs, r, p = 2, 8, 1, 0.25
    q, k = (torch.randn(2, heads, seq, seq, dtype=torch.float64) for _ in range(2))  # head_dim = seq, as v = I
    v = torch.eye(seq, dtype=torch.float64).expand(2, heads, seq, seq)
    kpm = torch.ones(2, seq, dtype=torch.bool)
    kpm[1, -10:] = False
    out = block_sparse_attention(q, k, v, block_size=bs, num_random_blocks=r, key_padding_mask=kpm, seed=1,
                                 dropout_p=p)
    if seq > (5 + 2 * r) * bs:
        mask = layout_to_token_mask(bigbird_block_layout(-(-seq // bs), r, num_heads=heads, seed=1), bs, seq)[None]
    else:
        mask = torch.ones(1, 1, seq, seq, dtype=torch.bool)
    probs = dense_attention(q, k, v, attn_mask=mask & kpm[:, None, None, :]) * kpm[:, None, :, None]
    kept = out != 0
    assert torch.allclose(out[kept] * (1 - p), probs[kept], atol=1e-12)  # kept entries are rescaled exactly
    assert not (kept & (probs == 0)).any()  # nothing appears outside the layout or on padding keys
    dropped = ((probs > 0) & ~kept).sum() / (probs > 0).sum()
    assert 0.15 < dropped < 0.35  # about p of the allowed entries are dropped
