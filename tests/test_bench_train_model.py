"""`sdbert bench train` and `sdbert bench model` end to end on tiny random models and a tiny CSV."""

import csv
import json

import pytest
import torch

from sdbert import SDBertForSequenceClassification
from sdbert.bench.train import StepLog
from sdbert.cli import main

transformers = pytest.importorskip("transformers")

WORDS = "the film was great awful boring moving plot acting script music long short funny sad".split()


def write_csv(path, rows=48):
    g = torch.Generator().manual_seed(0)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(rows):
            n = 3 + int(torch.randint(0, 50, (), generator=g))  # lengths vary, so batches pad differently
            words = [WORDS[int(j)] for j in torch.randint(0, len(WORDS), (n,), generator=g)]
            writer.writerow([" ".join(words), "pos" if i % 2 else "neg"])
    return path


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny random Hugging Face BERT classifier with a WordPiece tokenizer AutoTokenizer can read."""
    from sdbert.data import train_wordpiece_tokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    texts = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]
    tokenizer = train_wordpiece_tokenizer(texts, 120, min_frequency=1)
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]").save_pretrained(folder)
    config = transformers.BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def our_folder(tmp_path_factory):
    """A tiny block-sparse sdbert model with only 64 positions."""
    from sdbert import SDBertConfig

    folder = tmp_path_factory.mktemp("tiny-sdbert")
    config = SDBertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=64, block_size=16, num_random_blocks=1)
    SDBertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_bench_train_runs_both_loops_and_writes_its_section(tmp_path, monkeypatch, capsys, hf_folder):
    monkeypatch.setenv("SDBERT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "BENCHMARKS.md").write_text("# Benchmarks\n\n<!-- generated:attention:begin -->\nkernels\n"
                                       "<!-- generated:attention:end -->\n")
    args = ["bench", "train", "--init", str(hf_folder), "--data", str(write_csv(tmp_path / "reviews.csv")),
            "--examples", "24", "--max-length", "64", "--batch-size", "8", "--max-steps", "2",
            "--attention", "full,block_sparse", "--block-size", "16", "--threads", "1", "--no-progress",
            "--output", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "speed-up vs HF" in printed and "goal >= 1.5x" in printed

    result = json.loads((out / "train.json").read_text())
    assert [(r["loop"], r["attention"]) for r in result["rows"]][1:] == [("sdbert", "full"), ("sdbert", "block_sparse")]
    for row in result["rows"]:
        assert row["steps"] == 2 and row["timed_steps"] == 1 and row["timed_examples"] == 8
        assert row["examples_per_second"] > 0 and row["speedup_vs_hf"] > 0
        assert 0 <= row["padding_share"] < 1 and row["mean_loss"] > 0
        assert 0 < row["pass_padded_tokens_per_example"] <= 64
    assert result["rows"][0]["speedup_vs_hf"] == 1.0
    assert result["data"]["examples"] == 24 and result["machine"]["torch"] == torch.__version__
    assert result["command"].startswith(f"sdbert bench train --init {hf_folder}")

    assert main(args) == 0  # a second run replaces its section and keeps the others
    markdown = (out / "BENCHMARKS.md").read_text()
    assert markdown.count("generated:train:begin") == 1 and "kernels" in markdown
    assert "## Training loop" in markdown and result["command"] in markdown


def test_bench_model_compares_folders(tmp_path, capsys, hf_folder, our_folder):
    out = tmp_path / "out"
    assert main(["bench", "model", "--model", f"teacher={hf_folder}", "--model", f"student={our_folder}",
                 "--lengths", "32,128", "--batch-sizes", "1,2", "--repeats", "2", "--warmup", "0",
                 "--threads", "1", "--no-progress", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "student/teacher speed-up" in printed and "positions extended 64 -> 128" in printed

    result = json.loads((out / "model.json").read_text())
    models = {m["label"]: m for m in result["models"]}
    assert models["teacher"]["attention"] == "full" and models["student"]["attention"] == "block_sparse"
    stored = SDBertForSequenceClassification.from_pretrained(our_folder)
    assert models["student"]["parameters"] == stored.num_parameters()
    assert all(m["size_mb"] > 0 for m in models.values())
    assert len(result["rows"]) == 8
    for row in result["rows"]:
        assert row["median_ms"] > 0 and row["examples_per_second"] > 0 and 1 <= row["rounds"] <= 2
    assert "## Model inference" in (out / "BENCHMARKS.md").read_text()


def test_bench_model_without_position_extension_says_na(tmp_path, capsys, our_folder):
    assert main(["bench", "model", "--model", str(our_folder), "--lengths", "64,128", "--batch-sizes", "1",
                 "--repeats", "1", "--warmup", "0", "--no-extend-positions", "--attention", "full",
                 "--no-progress", "--output", str(tmp_path)]) == 0
    assert "n/a" in capsys.readouterr().out
    rows = {r["length"]: r for r in json.loads((tmp_path / "model.json").read_text())["rows"]}
    assert rows[64]["median_ms"] > 0 and rows[128]["skipped"].startswith("n/a")


def test_bench_errors_are_one_line(tmp_path, capsys, hf_folder):
    assert main(["bench", "model", "--model", str(tmp_path / "missing"), "--output", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["bench", "train", "--init", str(hf_folder), "--data", str(tmp_path / "x.csv"),
                 "--examples", "4", "--batch-size", "16", "--output", str(tmp_path)]) == 2
    assert "batch" in capsys.readouterr().err
    assert not (tmp_path / "train.json").exists() and not (tmp_path / "model.json").exists()


def test_step_log_times_after_warmup():
    log = StepLog()
    log.start, log.ends = 0.0, [5.0, 6.0, 7.5]
    log.batches = [(4, 40, 30), (4, 40, 40), (2, 20, 10)]
    summary = log.summary(warmup_steps=1)
    assert summary["timed_examples"] == 6 and summary["seconds"] == 2.5
    assert summary["examples_per_second"] == pytest.approx(2.4)
    assert summary["first_step_seconds"] == 5.0 and summary["padding_share"] == pytest.approx(0.2)
    assert log.summary(warmup_steps=0)["examples_per_second"] == pytest.approx(10 / 7.5, rel=1e-3)
