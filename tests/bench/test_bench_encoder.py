"""`sdbert bench encoder`: the same weights with block-sparse and full attention, and the FLOP bound."""

import json

import pytest

from sdbert import SDBertConfig, SDBertForSequenceClassification
from sdbert.attention import bigbird_block_layout
from sdbert.bench.encoder import forward_gflop
from sdbert.cli import main

TINY = SDBertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=128, block_size=16, num_random_blocks=1)


def test_forward_gflop_by_hand():
    n, h, inter = 256, 32, 64
    dense_part = 2 * n * (4 * h * h + 2 * h * inter)
    assert forward_gflop(TINY, 1, n, "full") * 1e9 == pytest.approx(2 * (dense_part + 4 * n * n * h))
    # block-sparse: 16 blocks of 16; the layout's attended block pairs, averaged over heads
    pairs = bigbird_block_layout(16, 1, num_heads=2).sum().item() / 2 * 16 * 16
    assert forward_gflop(TINY, 1, n, "block_sparse") * 1e9 == pytest.approx(2 * (dense_part + 4 * pairs * h))
    assert pairs < n * n
    # at most (5 + 2r) blocks the sparse path runs dense attention: the same cost
    assert forward_gflop(TINY, 2, 112, "block_sparse") == forward_gflop(TINY, 2, 112, "full")


def test_bench_encoder_end_to_end(tmp_path, capsys):
    model_dir = tmp_path / "model"
    SDBertForSequenceClassification(TINY).save_pretrained(model_dir)
    (tmp_path / "BENCHMARKS.md").write_text("# Benchmarks\n\nnotes stay\n")
    assert main(["bench", "encoder", "--model", str(model_dir), "--lengths", "64,256", "--repeats", "5",
                 "--warmup", "0", "--no-progress", "--name", "encoder_tiny", "--output", str(tmp_path)]) == 0
    assert "speed-up full/sparse" in capsys.readouterr().out
    result = json.loads((tmp_path / "encoder_tiny.json").read_text())
    assert result["model"]["layers"] == 2 and result["model"]["block_size"] == 16
    short, long = result["rows"]
    for row in (short, long):
        assert row["median_s"]["block_sparse"] > 0 and row["median_s"]["full"] > 0
        assert row["speedup"]["ratio"] == pytest.approx(row["median_s"]["full"] / row["median_s"]["block_sparse"],
                                                        abs=1e-3)
        assert len(row["times_s"]["full"]) == 5 and row["spread_s"]["full"]["min"] <= row["median_s"]["full"]
        assert isinstance(row["speedup"]["within_noise"], bool) and row["gflop_per_s"]["full"] > 0
    assert short["flop_bound"] == 1.0  # 4 blocks: both run dense attention
    assert long["flop_bound"] > 1.0
    assert result["command"].endswith("--name encoder_tiny") and result["benchmark"] == "encoder"
    assert result["calibration"]["square_gflops"] > 0
    assert {"load_average_start", "load_average_end"} <= set(result["machine"])
    markdown = (tmp_path / "BENCHMARKS.md").read_text()
    assert "notes stay" in markdown and "| 256 |" in markdown and "FLOP bound" in markdown


def test_bench_encoder_rejects_bad_arguments(tmp_path, capsys):
    assert main(["bench", "encoder", "--lengths", "0"]) == 2
    assert "lengths" in capsys.readouterr().err
    assert main(["bench", "encoder", "--model", str(tmp_path / "missing"), "--lengths", "64",
                 "--output", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
