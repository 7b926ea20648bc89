"""Load test of the HTTP service on loopback: latency percentiles and throughput.

`running_server` starts `sdbert serve` in a subprocess on a free 127.0.0.1 port and stops it with
SIGTERM; `run_serve_bench` sends `requests` POST /v1/classify requests from `concurrency` concurrent
clients (httpx, keep-alive) after a few untimed warm-up requests and returns latencies,
throughput, status counts and the server's batching counters. Loopback only: the benchmark is
for this machine's service, not a tool to load somebody else's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
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
from urllib.parse import urlparse

from sdbert.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
# Words of synthetic reviews: realistic enough for a WordPiece tokenizer, no data set needed.
_WORDS = ("the film movie story acting plot was is a an and but not very really quite good great bad "
          "terrible wonderful boring slow fast funny sad beautiful ending start hour director actor actress "
          "scene scenes character characters music script dialogue camera watch watched again never ever "
          "best worst love loved hate hated minutes long short simple clever predictable surprising").split()


@dataclass
class ServeBenchConfig:
    """What the load test sends."""

    # Timed requests (after the warm-up).
    requests: int = 1000
    # Clients sending at the same time; each sends its next request when the last one returns.
    concurrency: int = 16
    texts_per_request: int = 1
    # Words per synthetic text (about 1.3 tokens each with a BERT vocabulary).
    words: int = 200
    # Untimed requests first (the model's first calls allocate).
    warmup: int = 16
    seed: int = 0
    # Seconds one request may take before it counts as an error.
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        for name in ("requests", "concurrency", "texts_per_request", "words"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive")
        if self.warmup < 0:
            raise ConfigError("warmup must be >= 0")


def synthetic_texts(count: int, words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "." for _ in range(count)]


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
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "sdbert", "serve", "--model", str(model_dir), "--host", "127.0.0.1",
           "--port", str(port), *server_args]
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                if proc.poll() is not None:
                    raise ConfigError(f"the server exited with status {proc.returncode}: {_tail(log)}")
                try:
                    if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise ConfigError(f"the server did not start within {startup_timeout:.0f} s: {_tail(log)}")
                time.sleep(0.1)
            yield url
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _tail(log, lines: int = 5) -> str:
    log.flush()
    log.seek(0)
    return " | ".join(log.read().strip().splitlines()[-lines:])


def run_serve_bench(cfg: ServeBenchConfig, url: str) -> dict:
    """Send the load to `url` (a running service on loopback) and measure it."""
    import httpx

    from sdbert.bench.report import load_average, machine_info

    check_loopback(url)
    texts = synthetic_texts(max(64, cfg.texts_per_request * 8), cfg.words, cfg.seed)
    info = httpx.get(f"{url}/v1/model", timeout=30).json()
    load_start = load_average()
    latencies, statuses, errors, elapsed = asyncio.run(_load(cfg, url, texts))
    load_end = load_average()
    after = httpx.get(f"{url}/v1/model", timeout=30).json()

    lat = sorted(latencies)
    batching = after.get("batching", {})
    return {
        "benchmark": "serve",
        "machine": machine_info() | {"load_average_start": load_start, "load_average_end": load_end},
        "config": asdict(cfg),
        "server": {"name": info.get("name"), "backend": info.get("backend"), "parameters": info.get("parameters"),
                   "quantization": info.get("quantization"),
                   "max_length": info.get("max_length"),
                   "max_wait_ms": batching.get("max_wait_ms"), "max_batch_texts": batching.get("max_batch_texts")},
        "requests": len(latencies),
        "errors": errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds": round(elapsed, 3),
        "throughput_rps": round(len(latencies) / elapsed, 2) if elapsed else None,
        "throughput_texts_per_s": round(len(latencies) * cfg.texts_per_request / elapsed, 2) if elapsed else None,
        "latency_ms": {"p50": _pct(lat, 50), "p95": _pct(lat, 95), "p99": _pct(lat, 99),
                       "mean": round(1000 * sum(lat) / len(lat), 2) if lat else None,
                       "max": round(1000 * lat[-1], 2) if lat else None},
        "server_batches": _delta(info, after, "batches"),
        "server_requests": _delta(info, after, "requests"),
    }


async def _load(cfg: ServeBenchConfig, url: str, texts: list[str]):
    import httpx

    limits = httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency)
    latencies: list[float] = []
    statuses: Counter = Counter()
    errors = 0
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=cfg.timeout_s) as client:
        def payload(i: int) -> dict:
            start = (i * cfg.texts_per_request) % len(texts)
            return {"texts": [texts[(start + j) % len(texts)] for j in range(cfg.texts_per_request)]}

        await asyncio.gather(*(client.post("/v1/classify", json=payload(i)) for i in range(cfg.warmup)))
        counter = iter(range(cfg.requests))

        async def worker() -> None:
            nonlocal errors
            for i in counter:
                start = time.perf_counter()
                try:
                    response = await client.post("/v1/classify", json=payload(i))
                    ok = response.status_code == 200 and len(response.json()["results"]) == cfg.texts_per_request
                    statuses[response.status_code] += 1
                except (httpx.HTTPError, ValueError, KeyError):
                    ok = False
                    statuses["exception"] += 1
                latencies.append(time.perf_counter() - start)
                errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(cfg.concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, statuses, errors, elapsed




def _pct(sorted_values: list[float], q: float) -> float | None:
    """The q-th percentile in milliseconds (nearest rank)."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))
    return round(1000 * sorted_values[int(rank) - 1], 2)


def _delta(before: dict, after: dict, key: str):
    a, b = before.get("batching", {}).get(key), after.get("batching", {}).get(key)
    return None if a is None or b is None else b - a


def summary_lines(result: dict) -> list[str]:
    lat, cfg, server = result["latency_ms"], result["config"], result["server"]
    per_batch = (result["server_requests"] / result["server_batches"]
                 if result.get("server_batches") else None)
    return [
        f"{result['requests']} requests, {cfg['concurrency']} concurrent, {cfg['texts_per_request']} text(s) of "
        f"{cfg['words']} words each, model {server['name']} ({server['backend']}, {server['parameters']:,} "
        f"parameters, max_length {server['max_length']}), loopback",
        f"latency p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms (mean {lat['mean']}, max {lat['max']})",
        f"throughput {result['throughput_rps']} requests/s ({result['throughput_texts_per_s']} texts/s); "
        f"errors {result['errors']}" + (f"; {per_batch:.1f} requests per model call on average" if per_batch else ""),
    ]


# --- `sdbert bench serve` (registered in commands/bench.py) ----------------------------------------


def add_arguments(p) -> None:
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", metavar="DIR", help="start `sdbert serve --model DIR` on a free loopback port")
    target.add_argument("--url", help="a service already running on this machine (http://127.0.0.1:PORT)")
    p.add_argument("--requests", type=int, default=1000, help="timed requests (default 1000)")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--texts-per-request", type=int, default=1, help="texts per request (default 1)")
    p.add_argument("--words", type=int, default=200, help="words per synthetic text (default 200)")
    p.add_argument("--warmup", type=int, default=16, help="untimed requests first (default 16)")
    p.add_argument("--server-args", default="", metavar="ARGS",
                   help="extra `sdbert serve` options with --model, e.g. \"--threads 2 --max-wait-ms 2\"")
    p.add_argument("--output", type=Path, default=Path("benchmarks"),
                   help="folder for serve.json and BENCHMARKS.md (default benchmarks)")


def run_from_args(args) -> dict:
    """Run the load test; a run with failed requests is an error (nothing is written for it)."""
    import logging
    import shlex

    try:
        import httpx  # noqa: F401
    except ImportError:
        raise ConfigError("the serve benchmark needs httpx: pip install 'sdbert[serve]'") from None
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    cfg = ServeBenchConfig(requests=args.requests, concurrency=args.concurrency,
                           texts_per_request=args.texts_per_request, words=args.words, warmup=args.warmup)
    if args.url:
        result = run_serve_bench(cfg, args.url.rstrip("/"))
    else:
        with running_server(args.model, server_args=shlex.split(args.server_args)) as url:
            result = run_serve_bench(cfg, url)
    target = f"--model {shlex.quote(str(args.model))}" if args.model else f"--url {args.url}"
    result["command"] = (f"sdbert bench serve {target} --requests {cfg.requests} --concurrency {cfg.concurrency} "
                         f"--texts-per-request {cfg.texts_per_request} --words {cfg.words}"
                         + (f" --server-args {shlex.quote(args.server_args)}" if args.server_args else ""))
    if result["errors"]:
        raise ConfigError(f"{result['errors']} of {result['requests']} requests failed "
                          f"(statuses {result['statuses']}); nothing written")
    return result


def _load_line(machine: dict) -> str:
    if machine.get("load_average_start") is None:
        return ""
    return (f"load average (1 min) at start / end of the timed requests: {machine['load_average_start']} / "
            f"{machine['load_average_end']}")


def text_report(result: dict) -> str:
    machine = result["machine"]
    return "\n".join([f"{machine['cpu']}, {machine['cpu_count']} cores, torch {machine['torch']}",
                      *summary_lines(result)] + ([_load_line(machine)] if _load_line(machine) else []))


def markdown_report(result: dict) -> str:
    machine = result["machine"]
    return "\n".join([
        "## HTTP service (`sdbert bench serve`)", "",
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores, torch {machine['torch']}, Python "
        f"{machine['python']}. Client and server share the machine (loopback), so the client's CPU time counts "
        "against the server's." + (f" The machine is shared with other jobs: {_load_line(machine)}."
                                   if _load_line(machine) else ""), "",
        f"Command: `{result['command']}`", "",
        *[f"- {line}" for line in summary_lines(result)],
    ])
