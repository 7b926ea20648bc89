"""Tiny data fixtures for the data-layer tests: an IMDb-shaped tree and tarball, and an HTTP server.

Plain helpers rather than pytest fixtures so each test builds exactly what it needs in tmp_path.
"""

from __future__ import annotations

import contextlib
import http.server
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

# (directory under aclImdb/, file name, text); names chosen so sorting by name is not insertion order.
IMDB_REVIEWS: list[tuple[str, str, str]] = [
    ("train/pos", "10_9.txt", "A wonderful film.<br /><br />Loved every minute."),
    ("train/pos", "2_8.txt", "Great acting and a clever plot."),
    ("train/pos", "1_10.txt", "Best movie of the year, truly moving."),
    ("train/neg", "5_1.txt", "Dull, slow and far too long."),
    ("train/neg", "3_2.txt", "I walked out after twenty minutes."),
    ("train/neg", "4_3.txt", "The script made no sense at all."),
    ("test/pos", "0_9.txt", "Charming and funny throughout."),
    ("test/pos", "1_7.txt", "Solid performances, good pacing."),
    ("test/neg", "0_2.txt", "A boring mess of a movie."),
    ("test/neg", "1_4.txt", "Not worth the ticket price."),
    ("train/unsup", "0_0.txt", "Saw it last night with friends."),
    ("train/unsup", "1_0.txt", "The soundtrack is by a famous composer."),
    ("train/unsup", "2_0.txt", "It runs for two hours."),
]


def make_imdb_tree(root: Path, reviews: list[tuple[str, str, str | bytes]] | None = None) -> Path:
    """Write an `aclImdb/` folder under `root` (plus the extra files the real one has); returns it."""
    top = root / "aclImdb"
    for directory, name, text in reviews if reviews is not None else IMDB_REVIEWS:
        path = top / directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    top.mkdir(parents=True, exist_ok=True)
    (top / "README").write_text("Large Movie Review Dataset v1.0\n")
    (top / "urls_pos.txt").write_text("http://www.imdb.com/title/tt0000001/usercomments\n")
    return top


def make_imdb_tarball(path: Path, reviews: list[tuple[str, str, str | bytes]] | None = None) -> Path:
    """A gzipped tarball in the IMDb layout at `path` (built from a tree beside it)."""
    tree = make_imdb_tree(path.parent / f"{path.name}.tree", reviews)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tree, arcname="aclImdb")
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve `directory` on 127.0.0.1 in a thread; yields (base URL, list of requested paths)."""
    requests: list[str] = []
    handler = partial(type("Handler", (_QuietHandler,), {"requests": requests}), directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
