"""Load test of the HTTP service on loopback: per-round throughput and latency percentiles.

    python tools/bench_serve.py --preset quick --data aclImdb_v1.tar.gz --reviews 400 --output benchmarks
    python tools/bench_serve.py --url http://127.0.0.1:8000 --data aclImdb_v1.tar.gz   # a service already running

A repository tool (it needs the [serve] extra's httpx): it writes `serve.json` and its section of
`BENCHMARKS.md` like the `sdbert bench` commands.

The requests are real IMDb test reviews: a seeded sample of the test split, each round sending the
same reviews in the same order, so the service batches texts of their natural, uneven lengths (one
length for every text would flatter the micro-batcher, whose model calls group texts by block
count). `--synthetic` sends random words of one length instead, for a run without the data set;
its report says so. One untimed warm-up round comes first (first calls allocate); every timed
round's numbers are kept and the report gives their median and range.

Malformed requests (`--malformed`, a fraction of all requests sent, default 10%) are mixed in at
seeded places: bad JSON, an empty text list, an empty text and an oversized body. The report gives
their status codes, every 5xx answer, and the good answers that differ from the answer for the same
text alone: computed by the model itself in this process when the benchmark serves a folder, asked of
the service one text at a time before the rounds with `--url`. An oversized request declares a body
one byte above the service's limit and sends its first 4 KiB (the service refuses on the declared
length, before reading; sending all of it would measure loopback copying of tens of megabytes).

With $SDBERT_API_KEY set, the client sends it as a bearer token (and a server the benchmark starts
inherits it).

`running_server` starts `sdbert serve` in a subprocess on a free 127.0.0.1 port and stops it with
SIGTERM. Loopback only: the benchmark is for this machine's service, not a tool to load somebody
else's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from sdbert.bench.model import save_preset_student
from sdbert.bench.report import add_output_arguments, bench_config, describe_machine, markdown_table, text_table
from sdbert.bench.timing import finish, provenance, spread
from sdbert.classifier import Classifier
from sdbert.cli_args import add_config_arguments, arg, non_negative_int, positive_int, ranged
from sdbert.commands.bench import benchmark_command
from sdbert.errors import ConfigError, SDBertError, require
from sdbert.training.setup import DataSettings, prepare_data

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
MIN_ROUNDS = 5  # DESIGN.md, Evidence: a median and a spread need at least 5 timed rounds
# Words of `--synthetic` texts: tokenizable by a WordPiece vocabulary, no data set needed.
_WORDS = ("the film movie story acting plot was is a an and but not very really quite good great bad "
          "terrible wonderful boring slow fast funny sad beautiful ending start hour director actor actress "
          "scene scenes character characters music script dialogue camera watch watched again never ever "
          "best worst love loved hate hated minutes long short simple clever predictable surprising").split()
# Malformed request kinds and the status the service must answer each with.
MALFORMED = {"bad_json": 422, "empty_list": 422, "empty_text": 422, "oversized": 413}
_MALFORMED_BODIES = {"bad_json": b'{"texts": ["an unfinished request', "empty_list": b'{"texts": []}',
                     "empty_text": b'{"texts": [""]}'}
MAX_MALFORMED = 0.5
# A good answer differs from the reference when its label does or a probability is further off than this
# (the service rounds to 6 decimals; batched and lone forward passes differ by float noise only).
ANSWER_TOLERANCE = 1e-4


@dataclass
class ServeBenchConfig:
    """What is served and what the load test sends."""

    model: str | None = arg(None, "start `sdbert serve --model DIR` on a free loopback port", metavar="DIR")
    url: str | None = arg(None, "a service already running on this machine (http://127.0.0.1:PORT)")
    preset: Literal["quick", "standard"] | None = arg(
        None, "serve this reproduce preset's student architecture, built from its teacher checkpoint (untrained "
        "head: for latency on a fresh clone without training)")
    data: str | None = arg(None, "IMDb source of the test reviews (default $SDBERT_DATA)", metavar="SRC")
    reviews: int = arg(1000, "test reviews in the seeded sample; each round sends every one (at 1,000 a round's "
                       "p99 is its 10th-slowest request, not its slowest)", type=positive_int)
    synthetic: bool = arg(False, "send random words of one length instead of reviews (no data; flatters batching)")
    words: int = arg(200, "words per --synthetic text", type=positive_int)
    concurrency: int = arg(16, "concurrent clients; each sends its next request when the last one returns",
                           type=positive_int)
    texts_per_request: int = arg(1, "texts per request", type=positive_int)
    rounds: int = arg(MIN_ROUNDS, f"timed rounds, at least {MIN_ROUNDS}", type=positive_int)
    warmup: int = arg(1, "untimed rounds first (the model's first calls allocate, connections open)",
                      type=non_negative_int)
    seed: int = arg(0, "seed of the sample, its order and the malformed requests' places")
    timeout_s: float = 120.0
    """seconds one request may take before it counts as an error"""
    malformed: float = arg(0.1, "malformed requests (bad JSON, empty list, empty text, oversized body) as a "
                           "fraction of all requests sent",
                           type=ranged(float, 0.0, MAX_MALFORMED, what=f"a fraction in [0, {MAX_MALFORMED}]"))
    server_args: tuple[str, ...] = arg((), "extra `sdbert serve` options with --model, e.g. \"--threads 2 "
                                       "--max-wait-ms 2\"", type=shlex.split, metavar="ARGS")

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.model, self.url, self.preset)) != 1:
            raise ConfigError("give one of: a model folder to serve, a preset's student, the url of a running service")
        for name in ("reviews", "words", "concurrency", "texts_per_request"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive")
        if self.rounds < MIN_ROUNDS:
            raise ConfigError(f"rounds must be at least {MIN_ROUNDS}: a median and a spread need them")
        if self.warmup < 0:
            raise ConfigError("warmup must be >= 0")
        if not 0 <= self.malformed <= MAX_MALFORMED:
            raise ConfigError(f"malformed must be a fraction in [0, {MAX_MALFORMED}], got {self.malformed}")
        if self.url is not None:
            check_loopback(self.url)
            if self.server_args:
                raise ConfigError("server options apply only to a server the benchmark starts (--model)")
        self.server_args = tuple(self.server_args)


def synthetic_texts(count: int, words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "." for _ in range(count)]


def review_sample(source: str | None, count: int, seed: int = 0) -> list[str]:
    """`count` IMDb test reviews, a seeded class-balanced sample, in a seeded random order (the split's
    file order groups reviews by class and film)."""
    test = prepare_data(DataSettings(source=source, eval_limit=count, seed=seed, progress=False),
                        train=False, test=True).test
    texts = list(test.texts)
    random.Random(seed).shuffle(texts)
    return texts


def request_texts(cfg: ServeBenchConfig) -> tuple[list[str], dict]:
    """The texts one round sends, in order, and a description of them for the JSON."""
    if cfg.synthetic:
        texts = synthetic_texts(cfg.reviews, cfg.words, cfg.seed)
        described = {"kind": "synthetic", "words_per_text": cfg.words}
    else:
        source = cfg.data or os.environ.get("SDBERT_DATA") or None
        texts = review_sample(source, cfg.reviews, cfg.seed)
        described = {"kind": "imdb_test_reviews", "source": source, "split": "test"}
    described.update(texts=len(texts), seed=cfg.seed,
                     chars=length_spread([len(t) for t in texts]),
                     words=length_spread([len(t.split()) for t in texts]))
    return texts, described


def length_spread(lengths: Sequence[int]) -> dict[str, int]:
    values = sorted(lengths)
    return {"p10": _nearest_rank(values, 10), "p50": _nearest_rank(values, 50),
            "p90": _nearest_rank(values, 90), "max": values[-1]}


def _nearest_rank(sorted_values: Sequence, q: float):
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host not in LOOPBACK and host.strip("[]") not in LOOPBACK:
        raise ConfigError(f"the serve benchmark only targets this machine (127.0.0.1/localhost), not {host!r}")


@contextlib.contextmanager
def running_server(model_dir: str | os.PathLike[str], *, server_args: Sequence[str] = (),
                   startup_timeout: float = 180.0, env: dict[str, str] | None = None) -> Iterator[str]:
    """`sdbert serve` on a free loopback port in a subprocess; yields its base URL, then sends SIGTERM.

    Raises ConfigError when the server exits or does not answer /healthz within `startup_timeout`
    (with the tail of its log).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "sdbert", "serve", "--model", str(model_dir), "--host", "127.0.0.1",
           "--port", str(port), *server_args]
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_healthy(proc, url, log, startup_timeout)
            yield url
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _wait_healthy(proc: subprocess.Popen, url: str, log, timeout: float) -> None:
    # optional extra [serve]: the load tester's HTTP client
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ConfigError(f"the server exited with status {proc.returncode}: {_tail(log)}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise ConfigError(f"the server did not start within {timeout:.0f} s: {_tail(log)}")
        time.sleep(0.1)


def _tail(log, lines: int = 5) -> str:
    log.flush()
    log.seek(0)
    return " | ".join(log.read().strip().splitlines()[-lines:])


@contextlib.contextmanager
def _target(cfg: ServeBenchConfig) -> Iterator[tuple[str, str | None]]:
    """The service's base URL, and the model folder it serves when the benchmark started it."""
    if cfg.url is not None:
        yield cfg.url.rstrip("/"), None
    elif cfg.preset is not None:
        with tempfile.TemporaryDirectory(prefix="sdbert-bench-serve-") as folder:
            save_preset_student(cfg.preset, Path(folder))
            with running_server(folder, server_args=cfg.server_args) as url:
                yield url, folder
    else:
        with running_server(cfg.model, server_args=cfg.server_args) as url:
            yield url, cfg.model


def run_serve_bench(cfg: ServeBenchConfig) -> dict:
    """Sample the requests, serve (or reach) the model, run the warm-up and timed rounds, measure."""
    texts, sample = request_texts(cfg)  # before the server starts: a bad data source fails at once
    with _target(cfg) as (url, folder):
        record = provenance(command_line(cfg))
        record.update(benchmark="serve", config=asdict(cfg), sample=sample)
        record.update(_measure(cfg, url, folder, texts))
        return finish(record)


def auth_headers() -> dict[str, str]:
    """The bearer token of $SDBERT_API_KEY, when set (a server the benchmark starts inherits it)."""
    key = os.environ.get("SDBERT_API_KEY", "").strip()
    return {"Authorization": f"Bearer {key}"} if key else {}


def _measure(cfg: ServeBenchConfig, url: str, folder: str | None, texts: list[str]) -> dict:
    info = _model_info(url)
    reference = reference_answers(info, folder, texts) if folder is not None else None
    batches = [texts[i:i + cfg.texts_per_request] for i in range(0, len(texts), cfg.texts_per_request)]
    raw = asyncio.run(_rounds(cfg, url, batches, info, reference))
    rounds = [_round_numbers(r, len(texts)) for r in raw]
    timed = rounds[cfg.warmup:]
    statuses = sum((Counter(r["statuses"]) for r in rounds), Counter())
    batching = info.get("batching", {})
    return {
        "server": {"model": cfg.model, "name": info.get("name"), "backend": info.get("backend"),
                   "parameters": info.get("parameters"), "quantization": info.get("quantization"),
                   "max_length": info.get("max_length"), "max_wait_ms": batching.get("max_wait_ms"),
                   "max_batch_texts": batching.get("max_batch_texts"), "precision": info.get("precision"),
                   "max_concurrent": batching.get("max_concurrent"),
                   "request_timeout_s": batching.get("request_timeout_s")},
        "warmup_rounds": rounds[:cfg.warmup],
        "rounds": timed,
        "summary": _summary(timed),
        "errors": sum(r["errors"] for r in rounds),
        "statuses": dict(sorted(statuses.items())),
        **_checks(cfg, raw, statuses, reference_kind="model" if folder is not None else "service_alone"),
    }


def _model_info(url: str) -> dict:
    # optional extra [serve]: the load tester's HTTP client
    import httpx

    response = httpx.get(f"{url}/v1/model", headers=auth_headers(), timeout=30)
    if response.status_code == 401:
        raise ConfigError("the service wants an API key: set SDBERT_API_KEY to it")
    if response.status_code != 200:
        raise ConfigError(f"GET {url}/v1/model answered {response.status_code}: is it an sdbert service?")
    return response.json()


def reference_answers(info: dict, folder: str, texts: list[str]) -> dict[str, dict]:
    """Each text's answer from the served model run in this process, with the service's length, backend and
    precision."""

    classifier = Classifier.from_pretrained(folder, backend="onnx" if info.get("backend") == "onnxruntime" else "torch",
                                            precision=info.get("precision") or "fp32")
    unique = list(dict.fromkeys(texts))
    batch_size = info.get("batching", {}).get("batch_size", 32)
    answers = dict(zip(unique, classifier(unique, max_length=info["max_length"], batch_size=batch_size), strict=True))
    del classifier
    gc.collect()  # the rounds should not share the machine with a second copy of the weights
    return answers


async def _answers_alone(client, texts: list[str]) -> dict[str, dict]:
    """Each text's answer from the service, sent alone, one request at a time (no batch to share)."""
    answers = {}
    for text in dict.fromkeys(texts):
        response = await client.post("/v1/classify", json={"texts": [text]})
        if response.status_code != 200:
            raise ConfigError(f"the service answered a text sent alone with {response.status_code}: "
                              f"{response.text[:200]}")
        answers[text] = response.json()["results"][0]
    return answers


def same_answer(got: dict, want: dict, tolerance: float = ANSWER_TOLERANCE) -> bool:
    """Same label, same label set, every probability within `tolerance`."""
    probabilities = got.get("probabilities") or {}
    return (got.get("label") == want["label"] and set(probabilities) == set(want["probabilities"])
            and all(abs(probabilities[k] - p) <= tolerance for k, p in want["probabilities"].items()))


def plan_requests(batches: list[list[str]], fraction: float, seed: int, round_index: int) -> list:
    """One round's requests: `batches` in order (lists of texts) with malformed ones (their kind, a str)
    at seeded places, a `fraction` of all sent. The places are the same every round; the kinds rotate
    from round to round, so a small sample still sends every kind."""
    count = round(len(batches) * fraction / (1 - fraction)) if fraction else 0
    places = set(random.Random(seed).sample(range(len(batches) + count), count))
    kinds = list(MALFORMED)
    good, planned, m = iter(batches), [], round_index * count
    for i in range(len(batches) + count):
        if i in places:
            planned.append(kinds[m % len(kinds)])
            m += 1
        else:
            planned.append(next(good))
    return planned


async def _rounds(cfg: ServeBenchConfig, url: str, batches: list[list[str]], info: dict,
                  reference: dict | None) -> list[dict]:
    """The reference answers (asked of the service when not given), then the warm-up and timed rounds over
    one keep-alive client; each round sends `batches` in order, malformed requests mixed in."""
    # optional extra [serve]: the load tester's HTTP client
    import httpx

    limits = httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency)
    body_limit = info.get("limits", {}).get("max_body_bytes", 64 << 20)
    out = []
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=cfg.timeout_s, headers=auth_headers()) as client:
        if reference is None:
            reference = await _answers_alone(client, [t for b in batches for t in b])
        sender = _Sender(client, url, reference, body_limit, cfg.timeout_s)
        for index in range(cfg.warmup + cfg.rounds):
            before = await _batching(client)
            result = await _one_round(sender, plan_requests(batches, cfg.malformed, cfg.seed, index), cfg.concurrency)
            after = await _batching(client)
            result["server_batches"] = _delta(before, after, "batches")
            result["server_requests"] = _delta(before, after, "requests")
            out.append(result)
    return out


async def _batching(client) -> dict:
    return (await client.get("/v1/model")).json().get("batching", {})


def _delta(before: dict, after: dict, key: str):
    a, b = before.get(key), after.get(key)
    return None if a is None or b is None else b - a


@dataclass
class _Tally:
    """One round's outcome: good requests' latencies and statuses, malformed requests' statuses by kind."""

    latencies: list[float]
    statuses: Counter
    malformed: dict[str, Counter]
    errors: int = 0
    checked: int = 0
    wrong: int = 0

    @classmethod
    def empty(cls) -> _Tally:
        return cls([], Counter(), {kind: Counter() for kind in MALFORMED})


class _Sender:
    """Sends one request of a plan and counts what came back."""

    def __init__(self, client, url: str, reference: dict[str, dict], body_limit: int, timeout: float):
        self.client, self.url, self.reference = client, url, reference
        self.body_limit, self.timeout = body_limit, timeout

    async def good(self, texts: list[str], tally: _Tally) -> None:
        # optional extra [serve]: the load tester's HTTP client
        import httpx

        start = time.perf_counter()
        results = None
        try:
            response = await self.client.post("/v1/classify", json={"texts": texts})
            status = response.status_code
            results = response.json()["results"] if status == 200 else None
        except (httpx.HTTPError, ValueError, KeyError):
            status = "exception"
        tally.latencies.append(time.perf_counter() - start)
        tally.statuses[status] += 1
        if results is None or len(results) != len(texts):
            tally.errors += 1
            return
        tally.checked += len(texts)
        tally.wrong += sum(not same_answer(got, self.reference[text]) for text, got in zip(texts, results, strict=True))

    async def malformed(self, kind: str, tally: _Tally) -> None:
        # optional extra [serve]: the load tester's HTTP client
        import httpx

        try:
            if kind == "oversized":
                status = await asyncio.wait_for(self._oversized(), self.timeout)
            else:
                response = await self.client.post("/v1/classify", content=_MALFORMED_BODIES[kind],
                                                  headers={"content-type": "application/json"})
                status = response.status_code
        except (httpx.HTTPError, OSError, ValueError, IndexError, asyncio.TimeoutError):
            status = "exception"
        tally.malformed[kind][status] += 1

    async def _oversized(self) -> int:
        """A body declared one byte above the limit; the service must refuse it before reading it."""
        address = urlparse(self.url)
        reader, writer = await asyncio.open_connection(address.hostname, address.port or 80)
        try:
            head = ["POST /v1/classify HTTP/1.1", f"Host: {address.netloc}", "Content-Type: application/json",
                    f"Content-Length: {self.body_limit + 1}", "Connection: close",
                    *(f"{k}: {v}" for k, v in auth_headers().items())]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + b'{"texts": ["' + b"a" * 4096)
            await writer.drain()
            return int((await reader.readline()).split()[1])
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _one_round(sender: _Sender, planned: list, concurrency: int) -> dict:
    tally = _Tally.empty()
    pending = iter(planned)  # shared by the clients, so request i always carries planned[i]

    async def worker() -> None:
        for item in pending:
            if isinstance(item, str):
                await sender.malformed(item, tally)
            else:
                await sender.good(item, tally)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"seconds": time.perf_counter() - started, "tally": tally}


def _round_numbers(raw: dict, texts: int) -> dict:
    tally: _Tally = raw["tally"]
    lat = sorted(tally.latencies)
    seconds = raw["seconds"]
    return {"seconds": round(seconds, 3), "requests": len(lat),
            "throughput_rps": round(len(lat) / seconds, 2), "texts_per_s": round(texts / seconds, 2),
            "latency_ms": {f"p{q}": round(1000 * _nearest_rank(lat, q), 2) for q in (50, 95, 99)}
            | {"max": round(1000 * lat[-1], 2)},
            "errors": tally.errors, "statuses": {str(k): v for k, v in tally.statuses.items()},
            "server_batches": raw["server_batches"], "server_requests": raw["server_requests"],
            "malformed_requests": sum(sum(c.values()) for c in tally.malformed.values()),
            "wrong_answers": tally.wrong}


def _checks(cfg: ServeBenchConfig, raw: list[dict], statuses: Counter, *, reference_kind: str) -> dict:
    """What the malformed requests got, the 5xx answers, and the good answers that differ from the reference."""
    tallies: list[_Tally] = [r["tally"] for r in raw]
    by_kind = {kind: sum((t.malformed[kind] for t in tallies), Counter()) for kind in MALFORMED}
    malformed_statuses = sum(by_kind.values(), Counter())
    server_errors = sum(n for s, n in (statuses + malformed_statuses).items() if str(s)[0] == "5")
    return {
        "malformed": {"fraction": cfg.malformed, "sent": sum(malformed_statuses.values()),
                      "expected": dict(MALFORMED),
                      "statuses": {kind: {str(s): n for s, n in sorted(c.items(), key=lambda item: str(item[0]))}
                                   for kind, c in by_kind.items()}},
        "server_errors": server_errors,
        "answers": {"reference": reference_kind, "checked": sum(t.checked for t in tallies),
                    "wrong": sum(t.wrong for t in tallies), "tolerance": ANSWER_TOLERANCE},
    }


def _summary(rounds: list[dict]) -> dict:
    """Median and range over the timed rounds of each headline number."""
    series = {"throughput_rps": [r["throughput_rps"] for r in rounds],
              "texts_per_s": [r["texts_per_s"] for r in rounds]}
    for q in ("p50", "p95", "p99"):
        series[f"latency_{q}_ms"] = [r["latency_ms"][q] for r in rounds]
    return {name: {k: round(v, 2) for k, v in spread(values).items()} for name, values in series.items()}


def command_line(cfg: ServeBenchConfig) -> str:
    """The `python tools/bench_serve.py` command that reproduces `cfg`."""
    target = (f"--model {shlex.quote(cfg.model)}" if cfg.model else f"--preset {cfg.preset}" if cfg.preset
              else f"--url {cfg.url}")
    parts = ["python tools/bench_serve.py", target]
    if cfg.synthetic:
        parts += ["--synthetic", f"--words {cfg.words}"]
    else:
        parts.append(f"--data {shlex.quote(cfg.data or os.environ.get('SDBERT_DATA', ''))}")
    parts += [f"--reviews {cfg.reviews}", f"--seed {cfg.seed}", f"--concurrency {cfg.concurrency}",
              f"--texts-per-request {cfg.texts_per_request}", f"--rounds {cfg.rounds}", f"--warmup {cfg.warmup}",
              f"--malformed {cfg.malformed}"]
    if cfg.server_args:
        parts.append(f"--server-args {shlex.quote(shlex.join(cfg.server_args))}")
    return " ".join(parts)


# --- the command line ----------------------------------------------------------------------------


def add_arguments(p) -> None:
    add_config_arguments(p, ServeBenchConfig)
    add_output_arguments(p, "serve", progress=False)


def run_from_args(args) -> dict:
    """Run the load test; a run with failed requests is an error (nothing is written for it)."""
    require("httpx", "the serve benchmark")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise

    result = run_serve_bench(bench_config(ServeBenchConfig, args))
    problems = failures(result)
    if problems:
        raise ConfigError(f"{'; '.join(problems)}; nothing written")
    return result


def failures(result: dict) -> list[str]:
    """What makes a run a failure: good requests that failed, 5xx answers, malformed requests that were not
    refused with a 4xx, good answers that differ from the same text's answer alone."""
    problems = []
    if result["errors"]:
        problems.append(f"{result['errors']} requests failed (statuses {result['statuses']})")
    if result["server_errors"]:
        problems.append(f"{result['server_errors']} answers were 5xx")
    accepted = {kind: {s: n for s, n in c.items() if not s.startswith("4")}
                for kind, c in result["malformed"]["statuses"].items()}
    accepted = {kind: c for kind, c in accepted.items() if c}
    if accepted:
        problems.append(f"malformed requests not refused with a 4xx: {accepted}")
    if result["answers"]["wrong"]:
        problems.append(f"{result['answers']['wrong']} answers differ from the same text's answer alone")
    return problems


# --- reports: pure functions of the JSON -------------------------------------------------------------


def _spread_text(s: dict) -> str:
    return f"{s['median']} [{s['min']}-{s['max']}]"


def _lengths_text(spread_: dict) -> str:
    return f"{spread_['p10']} / {spread_['p50']} / {spread_['p90']} / {spread_['max']}"


def requests_line(result: dict) -> str:
    req, cfg = result["sample"], result["config"]
    if req["kind"] == "synthetic":
        what = (f"{req['texts']} synthetic texts of {req['words_per_text']} random words each (`--synthetic`: "
                "one length for every text, which flatters batching; not IMDb reviews)")
    else:
        what = (f"{req['texts']} IMDb test reviews, a class-balanced sample (seed {req['seed']}) of the test split "
                f"of `{req['source']}`")
    return (f"Requests: {what}, the same texts in the same order every round, {cfg['texts_per_request']} per request, "
            f"from {cfg['concurrency']} concurrent clients. Text length p10 / p50 / p90 / max: "
            f"{_lengths_text(req['chars'])} characters, {_lengths_text(req['words'])} words.")


def model_line(result: dict) -> str:
    s = result["server"]
    params = f"{s['parameters']:,} parameters" if s.get("parameters") is not None else "parameters unknown"
    where = f" (`{s['model']}`)" if s.get("model") else ""
    quantized = f" ({s['quantization']})" if s.get("quantization") else ""
    precision = f", {s['precision']}" if s.get("precision") else ""
    cap = (f" At most {s['max_concurrent']} requests in flight (more get 503 before their body is read)."
           if s.get("max_concurrent") else "")
    return (f"Model: {s['name']}{where}, {s['backend']} backend{quantized}{precision}, {params}, texts truncated to "
            f"{s['max_length']} tokens; micro-batching waits up to {s['max_wait_ms']} ms for up to "
            f"{s['max_batch_texts']} texts.{cap}")


def round_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    header = ["round", "seconds", "requests/s", "texts/s", "p50 ms", "p95 ms", "p99 ms", "max ms",
              "requests per micro-batch", "errors"]
    rows = []
    for i, r in enumerate(result["rounds"], 1):
        per_call = (round(r["server_requests"] / r["server_batches"], 2)
                    if r.get("server_batches") else None)
        lat = r["latency_ms"]
        rows.append([str(v) if v is not None else "-" for v in
                     (i, r["seconds"], r["throughput_rps"], r["texts_per_s"], lat["p50"], lat["p95"], lat["p99"],
                      lat["max"], per_call, r["errors"])])
    return header, rows


def summary_line(result: dict) -> str:
    s, n = result["summary"], len(result["rounds"])
    warmup = result["config"]["warmup"]
    return (f"Median [min-max] over {n} timed rounds (after {warmup} warm-up round{'s' * (warmup != 1)}): "
            f"{_spread_text(s['throughput_rps'])} requests/s, {_spread_text(s['texts_per_s'])} texts/s; latency "
            f"p50 {_spread_text(s['latency_p50_ms'])} ms, p95 {_spread_text(s['latency_p95_ms'])} ms, "
            f"p99 {_spread_text(s['latency_p99_ms'])} ms. Errors: {result['errors']} "
            f"(responses by status: {', '.join(f'{k}: {v}' for k, v in result['statuses'].items())}).")


_KIND_NAMES = {"bad_json": "bad JSON", "empty_list": "empty text list", "empty_text": "empty text",
               "oversized": "oversized body"}
_REFERENCES = {"model": "the served model run on each text in the benchmark process",
               "service_alone": "the service's answer to each text sent alone before the rounds"}


def checks_line(result: dict) -> str:
    """The malformed requests, 5xx answers and wrong answers; empty for a JSON from before they were sent."""
    if "malformed" not in result:
        return ""
    malformed, answers = result["malformed"], result["answers"]
    sent = sum(result["statuses"].values()) + malformed["sent"]
    kinds = ", ".join(f"{_KIND_NAMES.get(kind, kind)} {', '.join(f'{s}: {n}' for s, n in statuses.items())}"
                      for kind, statuses in malformed["statuses"].items() if statuses)
    return (f"Malformed requests: {malformed['sent']:,} of {sent:,} sent ({malformed['fraction']:.0%}, at seeded "
            f"places in every round), answered by kind and status: {kinds or 'none sent'}. 5xx answers: "
            f"{result['server_errors']}. Wrong answers: {answers['wrong']} of {answers['checked']:,} good texts "
            f"compared with {_REFERENCES.get(answers['reference'], answers['reference'])} (same label, every "
            f"probability within {answers['tolerance']:g}).")


def machine_line(result: dict) -> str:
    return (f"Machine: {describe_machine(result['machine'])}. Client and server share the machine (loopback), so "
            "the client's CPU time counts against the server's.")


def text_report(result: dict) -> str:
    checks = checks_line(result)
    return "\n".join([machine_line(result), f"Command: {result['command']}", requests_line(result),
                      model_line(result), "", text_table(*round_rows(result)), "", summary_line(result),
                      *([checks] if checks else [])])


def markdown_report(result: dict) -> str:
    return "\n".join(["## HTTP service (`python tools/bench_serve.py`)", "", machine_line(result), "",
                      f"Command: `{result['command']}`", "", requests_line(result), "", model_line(result), "",
                      markdown_table(*round_rows(result)), "", summary_line(result),
                      *(["", checks] if (checks := checks_line(result)) else [])])


def main(argv: list[str] | None = None) -> int:
    """`python tools/bench_serve.py ...`: the load test, its report, `serve.json` and its section."""
    parser = argparse.ArgumentParser(prog="python tools/bench_serve.py", description=__doc__.splitlines()[0])
    add, run = benchmark_command(sys.modules[__name__], "serve")  # this module, not a second import of it
    add(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except SDBertError as exc:
        print(f"bench_serve: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
