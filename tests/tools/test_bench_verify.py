"""`tools/bench_verify.py`: generated BENCHMARKS.md sections must equal what their JSON renders to."""

import json
from pathlib import Path

import pytest

from bench_verify import check, main
from sdbert import SDBertConfig, SDBertForSequenceClassification
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


# README.md and docs/*.md: the markdown that quotes BENCHMARKS.md.
QUOTING = [BENCHMARKS.parent / "README.md", *sorted((BENCHMARKS.parent / "docs").glob("*.md"))]
# Tables written by hand, not copied from a generated section (their header rows): the KD variants of
# docs/results.md (from benchmarks/kd_variants/), the refusals of docs/limits.md, the recipe comparison
# of docs/precision.md (from benchmarks/amd_epyc/train_precision.json), the size trade-off of
# docs/results.md (from benchmarks/size_tradeoff/). Every other table is a copy.
HAND_WRITTEN = (
    "| variant | KD student | no-KD student | KD - no-KD | McNemar p per seed |",
    "| student | share of the teacher's parameters | accuracy [95% Wilson] |",
    "| input | what happens |",
    "| 512 tokens, batch 8 | examples/s |",
    "| 2048 tokens, batch 2 (reviews concatenated to fill) | examples/s |",
)
# One-line results quoted after a prefix of their own ("HTTP service (section `serve`; ...): ").
QUOTED_LINES = ("GEMM calibration", "Minor page faults", "HTTP service (section")


def quoted_lines(text: str) -> list[str]:
    """The lines of every table (but the hand-written ones) and every quoted one-line result, outside code."""
    quoted, table, in_code = [], [], False
    for line in [*text.splitlines(), ""]:
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and line.startswith("|"):
            table.append(line)
            continue
        if table and not table[0].startswith(HAND_WRITTEN):
            quoted += table
        table = []
        if not in_code and line.startswith(QUOTED_LINES):
            quoted.append(line.split("): ", 1)[-1])
    return quoted


def test_the_quoted_benchmark_tables_are_copied_from_benchmarks_md():
    """README's and docs/'s tables, calibration and fault lines stand verbatim in BENCHMARKS.md's generated sections."""
    assert len(QUOTING) > 5  # README.md and docs/*.md were found
    copied = {path.name: quoted_lines(path.read_text()) for path in QUOTING}
    assert len(copied["README.md"]) >= 7  # Table 1 (standard preset)
    assert len(copied["results.md"]) > 20 and len(copied["benchmarks.md"]) > 40  # both presets; every benchmark
    benchmarks = (BENCHMARKS / "BENCHMARKS.md").read_text()
    missing = {name: [line for line in lines if line not in benchmarks] for name, lines in copied.items()}
    assert missing == {name: [] for name in copied}


def test_render_rewrites_a_stale_section_from_its_json(encoder_run, capsys):
    markdown = encoder_run / "BENCHMARKS.md"
    markdown.write_text(markdown.read_text().replace("| ", "|  ", 1))  # a section a renderer change made stale
    assert check(encoder_run)
    assert main([str(encoder_run), "--render"]) == 0
    assert "re-rendered sections: encoder" in capsys.readouterr().out and check(encoder_run) == []
