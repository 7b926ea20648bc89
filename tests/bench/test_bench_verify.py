"""`sdbert.bench.verify`: generated BENCHMARKS.md sections must equal what their JSON renders to."""

import json
from pathlib import Path

import pytest

from sdbert import SDBertConfig, SDBertForSequenceClassification
from sdbert.bench.verify import check, main
from sdbert.cli import main as sdbert_main

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


@pytest.fixture
def encoder_run(tmp_path):
    config = SDBertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=256, block_size=16, num_random_blocks=1)
    SDBertForSequenceClassification(config).save_pretrained(tmp_path / "model")
    out = tmp_path / "bench"
    assert sdbert_main(["bench", "encoder", "--model", str(tmp_path / "model"), "--lengths", "64", "--repeats", "5",
                        "--warmup", "0", "--no-progress", "--output", str(out)]) == 0
    return out


def test_a_fresh_section_matches_and_an_edited_number_does_not(encoder_run):
    assert check(encoder_run) == []
    markdown = encoder_run / "BENCHMARKS.md"
    text = markdown.read_text()
    edited = text.replace("| 64 |", "| 65 |", 1)
    assert edited != text
    markdown.write_text(edited)
    problems = check(encoder_run)
    assert len(problems) == 1 and "section encoder is not what encoder.json renders to" in problems[0]
    assert main([str(encoder_run)]) == 1


def test_a_changed_json_or_a_missing_one_is_reported(encoder_run):
    source = encoder_run / "encoder.json"
    result = json.loads(source.read_text())
    result["rows"][0]["flop_bound"] += 1.0
    source.write_text(json.dumps(result))
    assert "is not what encoder.json renders to" in check(encoder_run)[0]
    source.unlink()
    assert check(encoder_run) == ["section encoder: encoder.json does not exist"]



def test_the_committed_benchmarks_match_their_json():
    """Every number in a generated section of each machine's BENCHMARKS.md comes from the JSON beside it."""
    folders = sorted(path.parent for path in BENCHMARKS.rglob("BENCHMARKS.md"))
    assert BENCHMARKS / "amd_epyc" in folders and BENCHMARKS in folders
    assert {folder: check(folder) for folder in folders} == {folder: [] for folder in folders}


def test_the_readme_benchmark_tables_are_copied_from_benchmarks_md():
    """README's tables, calibration and fault lines stand verbatim in BENCHMARKS.md's generated sections."""
    readme = (BENCHMARKS.parent / "README.md").read_text()
    section = readme.split("\n## Benchmarks\n", 1)[1].split("\n## ", 1)[0]
    copied = [line for line in section.splitlines()
              if line.startswith(("| ", "GEMM calibration", "Minor page faults"))
              or line.startswith("HTTP service (section")]
    assert len(copied) > 30
    benchmarks = (BENCHMARKS / "BENCHMARKS.md").read_text()
    missing = [line for line in copied if line.split("): ", 1)[-1] not in benchmarks]
    assert missing == []


def test_render_rewrites_a_stale_section_from_its_json(encoder_run, capsys):
    markdown = encoder_run / "BENCHMARKS.md"
    markdown.write_text(markdown.read_text().replace("| ", "|  ", 1))  # a section a renderer change made stale
    assert check(encoder_run)
    assert main([str(encoder_run), "--render"]) == 0
    assert "re-rendered sections: encoder" in capsys.readouterr().out and check(encoder_run) == []
