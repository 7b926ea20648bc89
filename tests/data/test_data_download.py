"""`imdb` as a source: download once into the cache, verify, never leave a bad file behind.

A tiny archive in the IMDb layout stands in for the real one, served from 127.0.0.1.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from data_fixtures import make_imdb_tarball, serve_directory
from sdbert.data import download_imdb, load_split, resolve_source
from sdbert.errors import DataError


@pytest.fixture
def served(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    archive = make_imdb_tarball(root / "aclImdb_v1.tar.gz")
    data = archive.read_bytes()
    with serve_directory(root) as (base, requests):
        yield {
            "url": f"{base}/aclImdb_v1.tar.gz",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "requests": requests,
        }


def test_download_then_cache_hit(tmp_path: Path, served: dict) -> None:
    cache = tmp_path / "cache"
    args = dict(url=served["url"], sha256=served["sha256"], size=served["size"], cache_dir=cache, progress=False)
    src = resolve_source("imdb", **args)
    assert src.kind == "imdb_archive" and src.path == cache / "aclImdb_v1.tar.gz"
    assert src.path.stat().st_size == served["size"]
    assert len(served["requests"]) == 1
    assert resolve_source("imdb", **args) == src
    assert len(served["requests"]) == 1  # second call: no second request
    assert sorted(p.name for p in cache.iterdir()) == ["aclImdb_v1.tar.gz"]  # no temporary files
    assert len(load_split(src, "train")) == 6


def test_cache_dir_from_env(tmp_path: Path, served: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDBERT_CACHE", str(tmp_path / "envcache"))
    path = download_imdb(url=served["url"], sha256=served["sha256"], size=None, progress=False)
    assert path == tmp_path / "envcache" / "aclImdb_v1.tar.gz"


def test_wrong_checksum_leaves_nothing(tmp_path: Path, served: dict) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="failed its checksum: expected sha256 0+, got [0-9a-f]{64}; nothing was saved"):
        download_imdb(url=served["url"], sha256="0" * 64, size=served["size"], cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []


def test_wrong_size_leaves_nothing(tmp_path: Path, served: dict) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=f"has {served['size']} bytes, expected 84125825"):
        download_imdb(url=served["url"], sha256=served["sha256"], cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []


def test_http_error_is_a_data_error(tmp_path: Path, served: dict) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="could not download .*missing.tar.gz"):
        download_imdb(url=served["url"].replace("aclImdb_v1", "missing"), cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []


def test_truncated_cached_file_is_fetched_again(tmp_path: Path, served: dict) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "aclImdb_v1.tar.gz").write_bytes(b"partial")
    path = download_imdb(
        url=served["url"], sha256=served["sha256"], size=served["size"], cache_dir=cache, progress=False
    )
    assert path.stat().st_size == served["size"] and len(served["requests"]) == 1
