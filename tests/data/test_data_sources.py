"""Data sources: the IMDb archive and folder, table files, source resolution and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_fixtures import IMDB_REVIEWS, make_imdb_tarball, make_imdb_tree
from sdbert.data import Source, load_split, load_splits, resolve_source
from sdbert.errors import DataError

# ---------------------------------------------------------------- IMDb archive and folder


def _expected(split: str) -> tuple[list[str], list[int] | None]:
    dirs = {"train": ("train/neg", "train/pos"), "test": ("test/neg", "test/pos"), "unsup": ("train/unsup",)}[split]
    rows = sorted((f"{d}/{name}", text, d.endswith("pos")) for d, name, text in IMDB_REVIEWS if d in dirs)
    texts = [text for _, text, _ in rows]
    return texts, None if split == "unsup" else [int(pos) for _, _, pos in rows]


@pytest.fixture
def tarball(tmp_path: Path) -> Path:
    return make_imdb_tarball(tmp_path / "aclImdb_v1.tar.gz")


@pytest.mark.parametrize("split", ["train", "test", "unsup"])
def test_archive_splits_sorted_by_member_name(tarball: Path, split: str) -> None:
    ds = load_split(tarball, split, progress=False)
    texts, labels = _expected(split)
    assert ds.texts == texts
    assert ds.labels == labels
    assert ds.id2label == {0: "neg", 1: "pos"}


def test_archive_reads_several_splits_in_one_call(tarball: Path) -> None:
    both = load_splits(tarball, ["train", "test"], progress=False)
    assert set(both) == {"train", "test"}
    assert both["test"].texts == load_split(tarball, "test", progress=False).texts


def test_folder_matches_archive_including_fingerprint(tmp_path: Path, tarball: Path) -> None:
    tree = make_imdb_tree(tmp_path / "extracted")
    for src in (tree, tree.parent):  # the aclImdb/ folder itself, or the folder holding it
        for split in ("train", "test", "unsup"):
            a, b = load_split(src, split, progress=False), load_split(tarball, split, progress=False)
            assert (a.texts, a.labels, a.fingerprint) == (b.texts, b.labels, b.fingerprint)
    assert resolve_source(tree).kind == "imdb_folder"


def test_fingerprint_is_stable_and_content_sensitive(tmp_path: Path, tarball: Path) -> None:
    train, test = load_split(tarball, "train"), load_split(tarball, "test")
    assert train.fingerprint == load_split(tarball, "train").fingerprint
    assert train.fingerprint != test.fingerprint
    edited = [(d, n, t + "!" if n == "2_8.txt" else t) for d, n, t in IMDB_REVIEWS]
    other = make_imdb_tarball(tmp_path / "edited" / "a.tar.gz", edited)
    assert load_split(other, "train").fingerprint != train.fingerprint


def test_unknown_split(tarball: Path) -> None:
    with pytest.raises(DataError, match="unknown split 'dev'.*train, test, unsup"):
        load_split(tarball, "dev")


def test_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing file"):
        load_split(tmp_path / "nope.tar.gz", "train")


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9, -4])
def test_truncated_archive(tmp_path: Path, tarball: Path, keep: float) -> None:
    # tarfile's own gzip stream would end quietly at some of these cuts and drop reviews.
    data = tarball.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: int(len(data) * keep)] if keep > 0 else data[: int(keep)])
    with pytest.raises(DataError, match="corrupt or truncated archive"):
        load_split(cut, "train")


def test_flipped_byte_in_archive(tmp_path: Path, tarball: Path) -> None:
    data = bytearray(tarball.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "flipped.tar.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt or truncated archive"):
        load_splits(bad, ["train", "test"])


def test_garbage_archive(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"this is not a gzip file at all" * 10)
    with pytest.raises(DataError, match="corrupt or truncated archive"):
        load_split(bad, "train")


def test_archive_of_something_else(tmp_path: Path) -> None:
    other = make_imdb_tarball(tmp_path / "x.tar.gz", [("docs/misc", "a.txt", "hello")])
    with pytest.raises(DataError, match="no reviews for split 'train'.*is it IMDb"):
        load_split(other, "train")


def test_non_utf8_review_named_and_replaceable(tmp_path: Path) -> None:
    reviews = [*IMDB_REVIEWS, ("train/neg", "9_1.txt", b"caf\xe9 was awful")]
    archive = make_imdb_tarball(tmp_path / "a.tar.gz", reviews)
    with pytest.raises(DataError, match=r"non-UTF-8 text .* aclImdb/train/neg/9_1\.txt"):
        load_split(archive, "train")
    ds = load_split(archive, "train", errors="replace")
    assert "caf\ufffd was awful" in ds.texts
    load_split(archive, "test")  # other splits are unaffected


def test_empty_review_named(tmp_path: Path) -> None:
    archive = make_imdb_tarball(tmp_path / "a.tar.gz", [*IMDB_REVIEWS, ("test/pos", "7_8.txt", "  \n")])
    with pytest.raises(DataError, match=r"empty text .* aclImdb/test/pos/7_8\.txt"):
        load_split(archive, "test")


# ---------------------------------------------------------------- table files


def _write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_csv_string_labels_sorted_to_ids(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "d.csv",
        "text,label",
        ['"Great, really great",pos', "awful,neg", '"multi\nline",neutral', "fine,pos"],
    )
    ds = load_split(path)
    assert ds.texts == ["Great, really great", "awful", "multi\nline", "fine"]
    assert ds.id2label == {0: "neg", 1: "neutral", 2: "pos"}
    assert ds.labels == [2, 0, 1, 2]


def test_csv_integer_labels_kept_and_columns_overridable(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", "review,stars,extra", ["good,3,x", "bad,0,y", "ok,1,z"])
    ds = load_split(path, text_column="review", label_column="stars")
    assert ds.labels == [3, 0, 1]
    assert ds.id2label == {0: "0", 1: "1", 2: "2", 3: "3"}  # dense, so num_labels == 4


def test_csv_with_bom_and_unlabelled(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes("\ufefftext\nhello\nworld\n".encode())
    ds = load_split(path, label_column=None)
    assert ds.texts == ["hello", "world"] and ds.labels is None


def test_csv_wrong_columns_names_those_found(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", "review,sentiment", ["good,pos"])
    with pytest.raises(DataError, match=r"has columns \['review', 'sentiment'\], expected 'text' and 'label' "
                                        r"\(name yours with --text-column and --label-column\)"):
        load_split(path)


def test_csv_row_with_extra_fields_is_named_not_split(tmp_path: Path) -> None:
    """An unquoted comma would turn 'loved it' into a new class; the row is refused instead."""
    path = _write_csv(tmp_path / "d.csv", "text,label", ["fine,pos", "great movie, loved it,pos", "bad,neg"])
    with pytest.raises(DataError, match=r"d\.csv row 2 has 3 fields but the header has 2: quote texts"):
        load_split(path)


def test_jsonl_keeps_unicode_line_separators_inside_strings(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "one\u2028two\u2029three", "label": "pos"}\n{"text": "bad", "label": "neg"}\n',
                    encoding="utf-8")
    assert "\u2028" in path.read_text(encoding="utf-8")  # written raw, as JSON allows
    ds = load_split(path)
    assert ds.texts == ["one\u2028two\u2029three", "bad"] and ds.labels == [1, 0]


def test_csv_empty_text_rows_named(tmp_path: Path) -> None:
    rows = ["good,1", '"",0', "ok,1", "   ,0"] + [",1"] * 6
    path = _write_csv(tmp_path / "d.csv", "text,label", rows)
    with pytest.raises(DataError, match=r"empty text in .*d\.csv at rows 2, 4, 5, 6, 7 and 3 more$"):
        load_split(path)


def test_csv_nan_labels_named(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", "text,label", ["good,1", "bad,", "ok,NaN"])
    with pytest.raises(DataError, match=r"label column 'label' .* missing values \(NaN\) at rows 2, 3"):
        load_split(path)


def test_csv_non_utf8_rows_named_unless_replace(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\nfine,1\ncaf\xe9,0\nok,1\n\xff\xfe bad,0\n")
    with pytest.raises(DataError, match=r"non-UTF-8 text in .*d\.csv at rows 2, 4;"):
        load_split(path)
    ds = load_split(path, errors="replace")
    assert ds.texts[1] == "caf\ufffd" and ds.texts[3].startswith("\ufffd")


def test_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    records = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg", "id": 7}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    ds = load_split(path)
    assert ds.texts == ["good", "bad"] and ds.labels == [1, 0]


def test_jsonl_errors_name_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "good", "label": 1}\n\n{"text": "", "label": 0}\n')
    with pytest.raises(DataError, match="empty text .* at line 3$"):
        load_split(path)
    path.write_text('{"text": "good", "label": 1}\n{"text": "x", "label": null}\n')
    with pytest.raises(DataError, match=r"missing values \(NaN\) at line 2$"):
        load_split(path)
    path.write_text('{"text": "good", "label": 1}\n{"text": oops}\n')
    with pytest.raises(DataError, match="invalid JSON .* line 2"):
        load_split(path)
    path.write_text('{"body": "good", "y": 1}\n')
    with pytest.raises(DataError, match=r"has columns \['body', 'y'\]"):
        load_split(path)


def test_label_kinds_rejected(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 0.5}\n')
    with pytest.raises(DataError, match="non-integer"):
        load_split(path)
    path.write_text('{"text": "a", "label": -1}\n')
    with pytest.raises(DataError, match="negative"):
        load_split(path)
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": "pos"}\n')
    with pytest.raises(DataError, match="mixes numbers and names"):
        load_split(path)


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["good", "bad", "meh"], "label": ["pos", "neg", "pos"]}), path)
    ds = load_split(path)
    assert ds.texts == ["good", "bad", "meh"] and ds.labels == [1, 0, 1]
    pq.write_table(pa.table({"text": ["good", "bad"], "label": [1.0, float("nan")]}), path)
    with pytest.raises(DataError, match=r"NaN\) at row 2$"):
        load_split(path)
    pq.write_table(pa.table({"text": ["good", None], "label": [1, 0]}), path)
    with pytest.raises(DataError, match="empty text .* at row 2$"):
        load_split(path)
    pq.write_table(pa.table({"body": ["good"]}), path)
    with pytest.raises(DataError, match=r"has columns \['body'\]"):
        load_split(path)
    pq.write_table(pa.table({"text": pa.array([b"ok", b"caf\xe9"], pa.binary()), "label": [0, 1]}), path)
    with pytest.raises(DataError, match="non-UTF-8 .* at row 2;"):
        load_split(path)
    path.write_bytes(b"PAR1 garbage")
    with pytest.raises(DataError, match="corrupt Parquet"):
        load_split(path)


# ---------------------------------------------------------------- split rules and resolution


def test_single_file_is_the_train_split(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "reviews.csv", "text,label", ["good,1", "bad,0"])
    assert len(load_split(path, None)) == 2
    assert resolve_source(path).splits() == ["train"]
    with pytest.raises(DataError, match="unknown split 'test'.*single file"):
        load_split(path, "test")


def test_folder_of_split_files_shares_label_ids(tmp_path: Path) -> None:
    _write_csv(tmp_path / "train.csv", "text,label", ["good,pos", "bad,neg", "meh,neutral"])
    (tmp_path / "test.jsonl").write_text('{"text": "great", "label": "pos"}\n')
    src = resolve_source(tmp_path)
    assert src == Source("table_folder", tmp_path) and src.splits() == ["test", "train"]
    train = load_split(tmp_path, "train")
    test = load_split(tmp_path, "test", id2label=train.id2label)
    assert test.labels == [2] and test.id2label == train.id2label
    # Read on its own, the test file still takes train's ids ('pos' would otherwise be id 0).
    assert load_split(tmp_path, "test").labels == [2] and load_split(tmp_path, "test").id2label == train.id2label
    with pytest.raises(DataError, match="unknown split 'validation'.*has test, train"):
        load_split(tmp_path, "validation")
    (tmp_path / "test.jsonl").write_text('{"text": "great", "label": "wow"}\n')
    with pytest.raises(DataError, match=r"labels \['wow'\] not in"):
        load_split(tmp_path, "test", id2label=train.id2label)
    _write_csv(tmp_path / "test.csv", "text,label", ["x,pos"])
    with pytest.raises(DataError, match="two files for split 'test'"):
        resolve_source(tmp_path)


def test_resolve_source_default_from_env(tmp_path: Path, tarball: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SDBERT_DATA", raising=False)
    with pytest.raises(DataError, match="no data source given.*SDBERT_DATA"):
        resolve_source(None)
    monkeypatch.setenv("SDBERT_DATA", str(tarball))
    assert resolve_source(None) == Source("imdb_archive", tarball)
    assert len(load_split(None, "test")) == 4


def test_resolve_source_rejects_unknown_things(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="unsupported data source"):
        resolve_source(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither an extracted IMDb folder nor a folder of split files"):
        resolve_source(tmp_path / "empty")
    with pytest.raises(DataError, match="missing file"):
        resolve_source(tmp_path / "missing.csv")
