"""`sdbert bench attention`'s cases: each method times the function it is named after (issue 12: the
`flex` column once timed our own module), its JSON says which attention path ran, and FLOPs count
2 per multiply-add."""

import pytest

import sdbert.bench.attention as bench
from sdbert.attention import bigbird_block_layout, flex, native
from sdbert.errors import ConfigError

# 10 blocks of 32 with r = 1: past the dense fallback (7 blocks), so every sparse method runs sparse.
CFG = bench.AttentionBenchConfig(lengths=(320,), heads=2, head_dim=16, block_size=32, random_blocks=1)
SEQ = 320

# What a step of each method must call; sparse_proj is our module, which calls our kernel inside.
EXPECTED = {
    "dense": ["dense_attention"],
    "sparse": ["block_sparse_attention(native on)"],
    "sparse_pytorch": ["block_sparse_attention(native off)"],
    "sparse_proj": ["SparseSelfAttention", "block_sparse_attention(native on)"],
    "flex": ["flex_block_sparse"],
    "hf": ["BigBirdBlockSparseAttention"],
}


@pytest.fixture
def calls(monkeypatch):
    """Spies on every function a method is named after; yields the list of their calls, in order."""
    calls = []

    def spy(owner, name, label):
        original = getattr(owner, name)
        monkeypatch.setattr(owner, name, lambda *a, **kw: calls.append(label(*a, **kw)) or original(*a, **kw))

    spy(bench, "dense_attention", lambda *a, **kw: "dense_attention")
    spy(bench, "block_sparse_attention",
        lambda *a, **kw: f"block_sparse_attention(native {'on' if native.enabled() else 'off'})")
    # No compiler in the loop: the spy stands in for the compiled kernel (differentiably).
    monkeypatch.setattr(flex, "flex_block_sparse", lambda q, *a, **kw: calls.append("flex_block_sparse") or q * 1.0)

    class SpyModule(bench.SparseSelfAttention):
        def forward(self, x):
            calls.append("SparseSelfAttention")
            return super().forward(x)

    monkeypatch.setattr(bench, "SparseSelfAttention", SpyModule)
    if bench.hf_available():
        from transformers.models.big_bird import modeling_big_bird

        spy(modeling_big_bird.BigBirdBlockSparseAttention, "forward", lambda *a, **kw: "BigBirdBlockSparseAttention")
    return calls


def test_every_method_has_a_case_and_an_expectation():
    assert set(bench.CASE_BUILDERS) == set(bench.METHODS) == set(EXPECTED)


@pytest.mark.parametrize("mode", bench.MODES)
@pytest.mark.parametrize("method", list(EXPECTED))
def test_each_method_runs_the_function_it_is_named_after(calls, method, mode):
    if method == "hf" and not bench.hf_available():
        pytest.skip("transformers not installed")
    step = bench.build_case(method, mode, CFG, SEQ)
    calls.clear()  # building may run a case once (flex compiles then): only the timed step counts
    step()
    assert calls == EXPECTED[method]


def test_an_unknown_method_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown attention benchmark method 'sparse_typo'"):
        bench.build_case("sparse_typo", "forward", CFG, SEQ)


def test_each_case_names_its_attention_path():
    native_or_not = "native" if native.available() else "pytorch"
    path = lambda method, n=SEQ: bench.build_case(method, "forward", CFG, n).path
    assert path("dense") == "dense_sdpa"
    assert path("sparse") == path("sparse_proj") == native_or_not
    assert path("sparse_pytorch") == "pytorch"
    assert path("sparse", CFG.dense_fallback_length) == "dense_sdpa"  # short inputs run dense attention


def test_a_flex_case_that_cannot_compile_is_dropped_with_its_reason(monkeypatch):
    if not flex.available():
        pytest.skip("FlexAttention unavailable")
    monkeypatch.setattr(flex, "flex_block_sparse", lambda *a, **kw: None)  # what a compiler failure returns
    cfg = bench.AttentionBenchConfig(lengths=(SEQ,), heads=2, head_dim=16, block_size=32, random_blocks=1,
                                     methods=("dense", "flex"), backward=False, memory=False, repeats=1,
                                     warmup=0, min_seconds=0)
    result = bench.run_attention_bench(cfg)
    rows = {r["method"]: r for r in result["rows"]}
    assert "median_ms" not in rows["flex"] and "FlexAttention" in rows["flex"]["skipped"]
    assert rows["dense"]["median_ms"] > 0 and rows["dense"]["path"] == "dense_sdpa"
    assert any("FlexAttention" in note for note in result["notes"])
    header, _ = bench.summary_rows(result, "forward")
    assert not any("Flex" in h for h in header)  # no column for a method that measured nothing


def test_dense_attention_flops_count_two_per_multiply_add():
    cfg = bench.AttentionBenchConfig(lengths=(4096,), batch=1, heads=12, head_dim=64)
    # QK^T and PV: 4096 x 4096 x 64 multiply-adds each, per head, 2 FLOPs each = 51.5 GFLOP
    assert bench.forward_gflop("dense", cfg, 4096) == pytest.approx(2 * 2 * 4096 * 4096 * 64 * 12 / 1e9)
    assert bench.forward_gflop("dense", cfg, 4096) == pytest.approx(51.54, abs=0.01)
    # our kernel's useful work: the layout's attended block pairs (below the dense fallback: all pairs)
    pairs = bigbird_block_layout(64, 3, num_heads=12, seed=0).sum().item() * 64 * 64
    assert bench.forward_gflop("sparse", cfg, 4096) == pytest.approx(2 * 2 * pairs * 64 / 1e9)
    assert bench.forward_gflop("sparse", cfg, 512) == bench.forward_gflop("dense", cfg, 512)
    # + the q/k/v projections for the module methods: 3 x (4096 x 768 x 768) multiply-adds
    projections = 2 * 3 * 4096 * 768 * 768 / 1e9
    assert bench.forward_gflop("sparse_proj", cfg, 4096) == pytest.approx(bench.forward_gflop("sparse", cfg, 4096)
                                                                            + projections)
