"""Hub names (`org/name`) wherever a model folder is accepted, resolved through a Hugging Face cache built
here by hand (no network: HF_HUB_OFFLINE=1 throughout), and the google/bigbird-roberta-base layout:
weights in `pytorch_model.bin`, tokenizer as a SentencePiece `spiece.model` without `tokenizer.json`.

The BigBird-layout folder is made in the test: random small weights from `transformers`, a SentencePiece
model trained on synthetic sentences, the tokenizer files `BigBirdTokenizer.save_pretrained` writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdbert.cli import main
from sdbert.errors import CheckpointError, ConfigError, MissingDependency
from sdbert.hub import is_hub_id, resolve_model_dir
from sdbert.paper.table import SYSTEMS

pytest.importorskip("huggingface_hub")

REPO = "google/bigbird-roberta-base"
COMMIT = hashlib.sha1(b"bigbird main").hexdigest()
OLD_COMMIT = hashlib.sha1(b"bigbird v1").hexdigest()
WORDS = ("film movie plot actor story scene great good bad awful boring wonderful script ending music "
         "slow fast funny sad long short best worst loved hated watch again never always really quite").split()
POSITIVE, NEGATIVE = ("great good wonderful funny best loved".split(), "bad awful boring slow worst hated".split())


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def put_in_hub_cache(cache: Path, repo_id: str, files: Path, commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """The layout huggingface_hub writes: blobs/ by content hash, snapshots/<commit>/ of relative links to
    them, refs/<branch or tag> holding the commit. Returns the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for file in sorted(p for p in files.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / file.relative_to(files)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty hub cache in force, offline."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


# --- the resolver --------------------------------------------------------------------------------


def test_hub_ids_and_local_paths():
    assert is_hub_id("google/bigbird-roberta-base") and is_hub_id("sentence-transformers/all-MiniLM-L6-v2")
    for name in ("runs", "a/b/c", "/abs/path", "./x/y", "org/-bad", "org--x/y", "org/na..me", "~/model"):
        assert not is_hub_id(name), name


def test_a_local_folder_is_returned_as_is_and_takes_no_revision(tmp_path):
    assert resolve_model_dir(tmp_path) == tmp_path
    with pytest.raises(ConfigError, match="applies to hub names"):
        resolve_model_dir(tmp_path, revision="main")
    with pytest.raises(CheckpointError, match="model folder .* does not exist"):
        resolve_model_dir(tmp_path / "a" / "b")  # neither a folder nor a hub id (absolute)


def test_a_missing_local_path_is_never_a_hub_lookup(tmp_path, monkeypatch):
    """`runs/studnet` (a typo) beside an existing `runs/` is a missing folder, not a hub name to fetch."""
    import sdbert.hub as hub

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    monkeypatch.setattr(hub, "_snapshot", lambda *a: pytest.fail("a local path reached the hub"))
    for name in ("runs/studnet", "./org/name"):
        with pytest.raises(CheckpointError, match=f"model folder {re.escape(str(Path(name)))} does not exist"):
            resolve_model_dir(name)
    (tmp_path / "runs" / "config.json").write_text("{}")
    from sdbert.checkpoint import load_config

    with pytest.raises(CheckpointError, match="config.json is a file, not a model folder"):
        load_config(tmp_path / "runs" / "config.json")


def test_hub_name_resolves_to_its_cached_snapshot_offline(hub_cache, tmp_path, caplog):
    files = tmp_path / "files"
    files.mkdir()
    (files / "config.json").write_text('{"model_type": "bert"}')
    old = put_in_hub_cache(hub_cache, "org/name", files, OLD_COMMIT, refs=("v1",))
    (files / "config.json").write_text('{"model_type": "big_bird"}')
    new = put_in_hub_cache(hub_cache, "org/name", files, COMMIT)

    with caplog.at_level("WARNING", logger="sdbert.hub"):
        assert resolve_model_dir("org/name").resolve() == new.resolve()
    assert f"using hub model org/name at commit {COMMIT}" in caplog.text  # what was fetched is never silent
    assert json.loads((resolve_model_dir("org/name") / "config.json").read_text())["model_type"] == "big_bird"
    assert resolve_model_dir("org/name", revision=OLD_COMMIT).resolve() == old.resolve()  # a commit
    assert resolve_model_dir("org/name", revision="v1").resolve() == old.resolve()  # a tag
    from sdbert.inference import model_name

    assert model_name(resolve_model_dir("org/name")) == "name"


def test_uncached_hub_name_offline_is_one_line_and_exit_2(hub_cache, tmp_path, capsys):
    from helpers import write_review_csv

    data = write_review_csv(tmp_path / "reviews.csv", 16)
    out = tmp_path / "out"
    code, err = run_cli(capsys, "train", "--init", "org/missing", "--data", str(data), "--output", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "org/missing" in err and "not (fully) in the Hugging Face cache" in err and "HF_HUB_OFFLINE" in err
    assert "pass a local folder" in err and not out.exists()

    code, err = run_cli(capsys, "predict", "--model", "org/missing", "--revision", "v2")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "org/missing at revision v2" in err, err
    code, err = run_cli(capsys, "predict", "--model", "no/such/folder")  # not a hub id: as for any folder
    assert code == 2 and "model folder no/such/folder does not exist" in err, err


def test_a_revision_without_a_hub_name_is_refused(tmp_path, capsys):
    from helpers import write_review_csv

    data = write_review_csv(tmp_path / "reviews.csv", 16)
    code, err = run_cli(capsys, "train", "--revision", "main", "--data", str(data), "--output", str(tmp_path / "o"))
    assert code == 2 and "--revision main needs a hub name in --init" in err, err


def test_missing_huggingface_hub_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    with pytest.raises(MissingDependency, match=r"pip install 'sdbert\[hub\]'"):
        resolve_model_dir("org/name")


# --- the google/bigbird-roberta-base layout ---------------------------------------------------------


def synthetic_sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) for _ in range(n)]


def train_spiece(directory: Path) -> Path:
    """A unigram SentencePiece model with BigBird's special pieces ([CLS], [SEP], [MASK] in the vocabulary)."""
    spm = pytest.importorskip("sentencepiece")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(synthetic_sentences(400)), model_prefix=str(directory / "sp"), vocab_size=120,
        model_type="unigram", pad_id=0, eos_id=1, bos_id=2, unk_id=3, user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
        hard_vocab_limit=False, minloglevel=2)
    return directory / "sp.model"


def make_bigbird_layout(folder: Path, spiece: Path) -> Path:
    """config.json + pytorch_model.bin (BigBirdForPreTraining, as on the hub) + spiece.model and the
    tokenizer config files, without tokenizer.json."""
    transformers = pytest.importorskip("transformers")
    staging = spiece.parent / "staging"
    staging.mkdir()
    (staging / "spiece.model").write_bytes(spiece.read_bytes())
    # from_pretrained rather than BigBirdTokenizer(vocab_file=...): transformers 5 reads the file only there
    tokenizer = transformers.BigBirdTokenizer.from_pretrained(str(staging))
    tokenizer.save_pretrained(str(folder))
    (folder / "tokenizer.json").unlink(missing_ok=True)
    if not (folder / "spiece.model").is_file():  # transformers versions differ in what they write
        (folder / "spiece.model").write_bytes(spiece.read_bytes())
    config = transformers.BigBirdConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=256, attention_type="block_sparse", block_size=16, num_random_blocks=1,
        pad_token_id=0, eos_token_id=1, bos_token_id=2, sep_token_id=tokenizer.convert_tokens_to_ids("[SEP]"))
    torch.manual_seed(0)
    model = transformers.BigBirdForPreTraining(config)
    config.save_pretrained(str(folder))
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # the legacy file, as save_pretrained once wrote
    return folder


@pytest.fixture(scope="module")
def bigbird_layout(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bigbird")
    folder = make_bigbird_layout(root / "google-bigbird-roberta-base", train_spiece(root))
    names = sorted(p.name for p in folder.iterdir())
    assert "tokenizer.json" not in names and {"spiece.model", "pytorch_model.bin", "config.json"} <= set(names)
    return folder


def test_spiece_tokenizer_matches_sentencepiece(bigbird_layout):
    import sentencepiece

    from sdbert.data.tokenization import load_tokenizer, pad_token_id, special_tokens

    tokenizer = load_tokenizer(bigbird_layout)
    processor = sentencepiece.SentencePieceProcessor(model_file=str(bigbird_layout / "spiece.model"))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    assert (cls, sep) == (processor.piece_to_id("[CLS]"), processor.piece_to_id("[SEP]"))
    assert special_tokens(tokenizer) == ([cls], [sep]) and pad_token_id(tokenizer) == 0
    for text in synthetic_sentences(20, seed=1):
        assert tokenizer.encode(text).ids == [cls] + processor.encode(text) + [sep], text


def test_no_tokenizer_file_is_one_line(tmp_path):
    from sdbert.data.tokenization import load_tokenizer

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="expected tokenizer.json, spiece.model or vocab.txt"):
        load_tokenizer(tmp_path)


def test_pytorch_model_bin_and_spiece_load_by_hub_name(bigbird_layout, hub_cache, tmp_path, capsys):
    from sdbert import SDBertForSequenceClassification

    put_in_hub_cache(hub_cache, REPO, bigbird_layout, COMMIT)
    state = torch.load(bigbird_layout / "pytorch_model.bin", weights_only=True)
    ours = SDBertForSequenceClassification.from_pretrained(REPO, revision=COMMIT)
    torch.testing.assert_close(ours.bert.embeddings.word_embeddings.weight,
                               state["bert.embeddings.word_embeddings.weight"])
    torch.testing.assert_close(ours.bert.pooler.dense.weight, state["bert.pooler.weight"])
    assert ours.config.attention_type == "block_sparse" and ours.config.block_size == 16

    text = tmp_path / "review.txt"
    text.write_text("a wonderful film, loved the music")
    code = main(["predict", "--model", REPO, str(text)])
    line = json.loads(capsys.readouterr().out.strip())
    assert code == 0 and line["input"] == str(text) and set(line["probabilities"]) == {"LABEL_0", "LABEL_1"}


def write_reviews(root: Path) -> Path:
    """An aclImdb/ tree of synthetic reviews whose label shows in their words, in BigBird's vocabulary."""
    from data_fixtures import make_imdb_tree

    rng = random.Random(3)
    reviews = []
    for split, count in (("train", 40), ("test", 16)):
        for i in range(count):
            label = "pos" if i % 2 else "neg"
            words = [rng.choice(WORDS) for _ in range(rng.randint(10, 60))] + [rng.choice(POSITIVE if i % 2 else
                                                                                          NEGATIVE)] * 3
            rng.shuffle(words)
            reviews.append((f"{split}/{label}", f"{i}_{7 if i % 2 else 2}.txt", " ".join(words)))
    reviews += [("train/unsup", f"{i}_0.txt", s) for i, s in enumerate(synthetic_sentences(8, seed=5))]
    return make_imdb_tree(root, reviews)


def test_reproduce_tiny_from_the_bigbird_layout_by_hub_name(bigbird_layout, hub_cache, tmp_path, capsys, monkeypatch):
    """`reproduce --preset tiny --teacher-init google/bigbird-roberta-base --revision <commit>`, offline, from
    the cache: the teachers start from the .bin weights and use the converted SentencePiece tokenizer."""
    monkeypatch.setenv("SDBERT_CACHE", str(tmp_path / "sdbert-cache"))
    snapshot = put_in_hub_cache(hub_cache, REPO, bigbird_layout, COMMIT)
    data, out = write_reviews(tmp_path), tmp_path / "run"
    code = main(["reproduce", "--preset", "tiny", "--teacher-init", REPO, "--revision", COMMIT, "--data", str(data),
                 "--output", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["teacher_init"] == REPO
    rows = {row["system"]: row for row in results["rows"]}
    teacher = json.loads((out / "full_teacher" / "config.json").read_text())
    hf_config = json.loads((bigbird_layout / "config.json").read_text())
    assert teacher["source_model_type"] == "big_bird" and teacher["vocab_size"] == hf_config["vocab_size"]
    assert Path(teacher["init_checkpoint"]).resolve() == snapshot.resolve()
    tokenizer = json.loads((out / "full_teacher" / "tokenizer.json").read_text())
    assert tokenizer["model"]["type"] == "Unigram"  # the spiece.model, not a WordPiece trained from scratch
    assert all(rows[system]["eval_examples"] == 16 and 0.0 <= rows[system]["accuracy"] <= 1.0 for system in SYSTEMS)


def test_a_real_process_offline_and_uncached_shows_no_traceback(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty"))
    result = subprocess.run([sys.executable, "-m", "sdbert", "predict", "--model", "org/missing"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "org/missing" in result.stderr
