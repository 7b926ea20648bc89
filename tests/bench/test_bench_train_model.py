"""`sdbert bench train` and `sdbert bench model` end to end on tiny random models and a tiny CSV."""

import csv
import json

import pytest
import torch

from sdbert import SDBertForSequenceClassification
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
    assert not (tmp_path / "model.json").exists()


# --- sdbert bench train ---------------------------------------------------------------------------

TRAIN_ARGS = ["--lengths", "32,160", "--tokens-per-step", "160", "--fill-lengths", "160", "--steps-per-round", "2",
              "--rounds", "5", "--warmup", "1", "--block-size", "16", "--random-blocks", "1", "--threads", "1",
              "--no-progress", "--precision", "bf16"]
CASES = ["hf", "hf_same_recipe", "sdbert_full", "sdbert_block_sparse", "sdbert_full_bert_recipe",
         "sdbert_block_sparse_bert_recipe"]


def _spy_steps_and_sparse_kernel(monkeypatch) -> tuple[list[str], list[tuple[str, int]]]:
    """Record which case steps, in order, and the case and length of every call of our sparse kernel
    (past the dense fallback, not the fallback itself)."""
    import sdbert.attention.block_sparse as block_sparse
    from sdbert.bench import train as bench

    steps, sparse_calls = [], []
    step, kernel = bench.Case.step, block_sparse._block_sparse

    def spy_step(self):
        steps.append(self.name)
        return step(self)

    def spy_kernel(q, *args, **kwargs):
        sparse_calls.append((steps[-1], q.shape[2]))
        return kernel(q, *args, **kwargs)

    monkeypatch.setattr(bench.Case, "step", spy_step)
    monkeypatch.setattr(block_sparse, "_block_sparse", spy_kernel)
    return steps, sparse_calls


def test_bench_train_interleaves_cases_and_writes_its_section(tmp_path, monkeypatch, capsys, hf_folder):
    from sdbert.bench.train import markdown_report

    monkeypatch.setenv("SDBERT_CACHE", str(tmp_path / "cache"))
    steps, sparse_calls = _spy_steps_and_sparse_kernel(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    (out / "BENCHMARKS.md").write_text("# Benchmarks\n\n<!-- generated:attention:begin -->\nkernels\n"
                                       "<!-- generated:attention:end -->\n")
    args = ["bench", "train", "--init", str(hf_folder), "--data", str(write_csv(tmp_path / "reviews.csv", rows=80)),
            *TRAIN_ARGS, "--output", str(out)]
    assert main(args) == 0
    assert "speed-up vs HF" in capsys.readouterr().out

    # Per length: 1 warm-up + 5 timed rounds, each case two steps in turn.
    one_length = [case for case in CASES for _ in range(2)] * 6
    assert steps == one_length * 2
    # Our sparse kernel ran, only in the block-sparse cases and only at the long length (past 112 tokens).
    assert sparse_calls and {case for case, _ in sparse_calls} == {"sdbert_block_sparse",
                                                                   "sdbert_block_sparse_bert_recipe"}
    assert {n for _, n in sparse_calls} == {160}

    result = json.loads((out / "train.json").read_text())
    _check_train_json(result, hf_folder)
    section = (out / "BENCHMARKS.md").read_text().split("<!-- generated:train:begin -->\n")[1]
    assert section.split("\n<!-- generated:train:end -->")[0] == markdown_report(result).strip()

    assert main(args) == 0  # a second run replaces its section and keeps the others
    markdown = (out / "BENCHMARKS.md").read_text()
    assert markdown.count("generated:train:begin") == 1 and "kernels" in markdown
    assert "## Training loop" in markdown


def _check_train_json(result: dict, hf_folder) -> None:
    assert result["benchmark"] == "train" and result["machine"]["torch"] == torch.__version__
    assert {"load_average_start", "load_average_end"} <= set(result["machine"])
    assert result["command"].startswith(f"sdbert bench train --init {hf_folder}")
    assert "--lengths 32,160" in result["command"] and "--fill-lengths 160" in result["command"]
    assert result["config"]["warmup"] == 1 and result["config"]["rounds"] == 5
    assert result["calibration"]["square_gflops"] > 0 and result["calibration"]["square_gflops_bf16"] > 0
    assert result["precision"]["precision"] == "bf16" and "--precision bf16" in result["command"]
    short, long = result["lengths"]
    assert (short["length"], short["filled"], long["length"], long["filled"]) == (32, False, 160, True)
    assert 0 < short["mean_real_tokens_per_example"] <= 32 and long["mean_real_tokens_per_example"] == 160
    for section in (short, long):
        cases = {c["case"]: c for c in section["cases"]}
        assert list(cases) == CASES
        for c in cases.values():
            assert len(c["times_s"]) == 5 and c["min_s"] <= c["median_s"] <= c["max_s"]
            assert c["examples_per_second"] > 0 and c["round_examples"] == 2 * section["batch_size"]
            assert c["real_tokens_per_example"] <= c["padded_tokens_per_example"] <= section["length"]
            assert c["model_gflops"] > 0 and c["percent_of_peak"] > 0
        assert cases["hf"]["speedup_vs_hf"] is None
        # HF's defaults (checkpoint dropout, fp32), HF with our recipe, ours, ours with BERT's recipe.
        recipes = {name: (c["precision"], c["attention_dropout"]) for name, c in cases.items()}
        assert recipes == {"hf": ("fp32", 0.1), "hf_same_recipe": ("bf16", 0.0), "sdbert_full": ("bf16", 0.0),
                           "sdbert_block_sparse": ("bf16", 0.0), "sdbert_full_bert_recipe": ("fp32", 0.1),
                           "sdbert_block_sparse_bert_recipe": ("fp32", 0.1)}
        for name in ("sdbert_full", "sdbert_block_sparse"):
            assert set(cases[name]["speedup_vs_hf"]) == {"ratio", "within_noise"}
            assert set(cases[name]["speedup_vs_hf_same_recipe"]) == {"ratio", "within_noise"}
            assert set(cases[name]["speedup_vs_bert_recipe"]) == {"ratio", "within_noise"}
        assert cases["sdbert_full"]["attention_path"] == "dense SDPA"
    assert short["cases"][3]["attention_path"].startswith("dense SDPA (fallback")
    assert long["cases"][3]["attention_path"].startswith("block-sparse, native kernel")
    assert long["cases"][5]["attention_path"].startswith("block-sparse, pure PyTorch (the native kernel takes no")
    assert "128 -> 160" in long["cases"][0]["note"] and "tiling" in long["cases"][2]["note"]


def _fabricated_result(hf_times, ours_times) -> dict:
    from sdbert.bench.timing import speedup, spread

    def row(case, times, ratio):
        s = spread(times)
        return {"case": case, "label": case, "attention_path": "dense SDPA", "times_s": times, "median_s": s["median"],
                "min_s": s["min"], "max_s": s["max"], "examples_per_second": 16 / s["median"],
                "padded_tokens_per_example": 500.0, "real_tokens_per_example": 300.0, "model_gflops": 10.0,
                "percent_of_peak": 10.0, "speedup_vs_hf": ratio, "note": None}

    section = {"length": 512, "batch_size": 8, "examples": 96, "filled": False, "mean_real_tokens_per_example": 300.0,
               "cases": [row("hf", hf_times, None), row("sdbert_full", ours_times, speedup(hf_times, ours_times))]}
    return {"benchmark": "train", "command": "sdbert bench train", "lengths": [section],
            "machine": {"cpu": "cpu", "cpu_count": 2, "torch_threads": 2, "torch": "2", "python": "3",
                        "load_average_start": 0.1, "load_average_end": 0.2},
            "config": {"init": "/x/model", "learning_rate": 5e-5, "max_grad_norm": 1.0, "warmup": 1, "rounds": 5,
                       "steps_per_round": 2, "block_size": 64, "random_blocks": 3},
            "data": {"reviews": 96, "source": "imdb"}, "calibration": {"square_size": 1024, "square_gflops": 100.0}}


def test_train_report_says_within_noise_when_rounds_overlap():
    from sdbert.bench.train import markdown_report, text_report

    overlapping = _fabricated_result([2.0, 2.2, 2.4, 2.1, 2.3], [1.5, 1.6, 2.1, 1.7, 1.55])
    separate = _fabricated_result([2.0, 2.2, 2.4, 2.1, 2.3], [1.5, 1.6, 1.7, 1.65, 1.55])
    assert "1.38x (within noise: rounds overlap)" in markdown_report(overlapping)
    assert "rounds overlap)" not in markdown_report(separate) and "| 1.38x |" in markdown_report(separate)
    assert "1.38x (within noise: rounds overlap)" in text_report(overlapping)
    report = markdown_report(separate)
    for expected in ("load average (1 min) at start / end: 0.1 / 0.2", "`sdbert bench train`", "100.0 GFLOP/s",
                     "### 512 tokens", "10.0 (10%)", "2.00-2.40", "1.50-1.70"):
        assert expected in report
    assert markdown_report(separate) == report  # a pure function of the JSON


def test_fill_texts_reach_the_length_with_reviews_of_the_same_label():
    from sdbert.bench.train import fill_texts
    from sdbert.data.dataset import TextDataset

    pool = TextDataset([f"review {i} " + "word " * (i + 1) for i in range(6)], [0, 1, 0, 1, 0, 1],
                       {0: "neg", 1: "pos"}, "f")
    subset = TextDataset(pool.texts[:2], [0, 1], pool.id2label, "g")
    filled = fill_texts(subset, pool, 12)
    assert [len(t.split()) >= 12 for t in filled.texts] == [True, True] and filled.labels == [0, 1]
    assert filled.texts[0].startswith(pool.texts[0]) and filled.texts[0].count("review 0 ") == 1
    assert "review 1 " not in filled.texts[0] and "review 3 " not in filled.texts[0]  # its own label only
    assert filled.fingerprint != subset.fingerprint


@pytest.mark.parametrize("flags, word", [
    (["--rounds", "3"], "rounds"),
    (["--lengths", "100"], "multiples of the block size"),
    (["--tokens-per-step", "0"], "--tokens-per-step: expected a positive integer"),
    (["--fill-lengths", "0,2048"], "fill lengths"),
    (["--attention", "bogus"], "attention"),
    (["--block-size", "0"], "--block-size: expected a positive integer"),
])
def test_bench_train_bad_flags_are_one_line(tmp_path, capsys, hf_folder, flags, word):
    try:  # argparse's own checks exit; ours return 2
        code = main(["bench", "train", "--init", str(hf_folder), "--data", str(tmp_path / "x.csv"), *flags,
                     "--output", str(tmp_path)])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert word in err and err.count("\n") == 1
    assert not (tmp_path / "train.json").exists()


def test_bench_train_unparseable_flag_exits_2(tmp_path, capsys, hf_folder):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "train", "--init", str(hf_folder), "--lengths", "abc", "--output", str(tmp_path)])
    assert exit_.value.code == 2 and capsys.readouterr().err.count("\n") == 1
