"""`sdbert bench attention` end to end on tiny shapes, and the memory probe."""

import json

import pytest
import torch

from sdbert.attention import native
from sdbert.bench.report import PeakRSS, update_markdown_section
from sdbert.cli import main

TINY = ["--heads", "2", "--head-dim", "16", "--block-size", "32", "--random-blocks", "1",
        "--repeats", "1", "--warmup", "0", "--min-seconds", "0", "--no-progress"]


def test_bench_attention_writes_table_json_plot_and_markdown(tmp_path, capsys):
    (tmp_path / "BENCHMARKS.md").write_text("# Benchmarks\n\nhand-written notes stay\n")
    assert main(["bench", "attention", "--lengths", "256,512", "--no-memory", *TINY,
                 "--output", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "dense/ours" in printed
    ours = "native" if native.available() else "pytorch"
    assert f"Attention code run: dense SDPA: dense_sdpa; ours: {ours}" in printed

    result = json.loads((tmp_path / "attention.json").read_text())
    rows = {(r["length"], r["method"], r["mode"]): r for r in result["rows"]}
    for n in (256, 512):
        for method in ("dense", "sparse", "sparse_proj"):
            for mode in ("forward", "forward_backward"):
                assert rows[(n, method, mode)]["median_ms"] > 0
                assert rows[(n, method, mode)]["forward_gflop"] > 0
            assert rows[(n, method, "forward")]["gflop_per_s"] > 0
        # which code ran, per case (256 tokens = 8 blocks of 32: past the dense fallback of 7 blocks)
        assert rows[(n, "dense", "forward")]["path"] == "dense_sdpa"
        assert rows[(n, "sparse", "forward")]["path"] == rows[(n, "sparse_proj", "forward")]["path"] == ours
    assert result["machine"]["torch"] == torch.__version__
    assert result["command"].startswith("sdbert bench attention --lengths 256,512")

    markdown = (tmp_path / "BENCHMARKS.md").read_text()
    assert "hand-written notes stay" in markdown and "| 512 |" in markdown
    pytest.importorskip("matplotlib")
    assert (tmp_path / "attention.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_attention_memory_in_fresh_process(tmp_path):
    assert main(["bench", "attention", "--lengths", "512", "--methods", "sparse", "--no-backward",
                 *TINY, "--output", str(tmp_path)]) == 0
    (row,) = json.loads((tmp_path / "attention.json").read_text())["rows"]
    assert row["peak_mb"] >= 0 and row["memory_method"]


def test_bench_rejects_bad_arguments(capsys):
    assert main(["bench", "attention", "--lengths", "0", "--no-memory", *TINY]) == 2
    assert "lengths" in capsys.readouterr().err


def test_peak_rss_sees_a_big_allocation():
    with PeakRSS() as probe:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del x
    assert probe.peak_mb > 48


def test_markdown_section_is_replaced_not_duplicated(tmp_path):
    path = tmp_path / "B.md"
    update_markdown_section(path, "x", "one")
    update_markdown_section(path, "x", "two")
    text = path.read_text()
    assert "two" in text and "one" not in text and text.count("generated:x:begin") == 1


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_flex_is_opt_in_and_forward_only_on_cpu():
    from sdbert.bench.attention import DEFAULT_METHODS, AttentionBenchConfig, skip_reason

    assert "flex" not in DEFAULT_METHODS  # it compiles once per shape: too slow for a default run
    cfg = AttentionBenchConfig(lengths=(512,), block_size=64)
    if not torch.cuda.is_available():
        assert "inference-only" in skip_reason("flex", cfg, 512, "forward_backward")
    assert "multiple" in skip_reason("flex", cfg, 500, "forward")
