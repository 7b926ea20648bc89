"""HTTP inference: a FastAPI app with micro-batching, run by uvicorn (`pip install 'sdbert[serve]'`).

Endpoints:

* `POST /v1/classify` `{"texts": ["...", ...]}` -> `{"model", "results": [{"label", "score",
  "probabilities": {label: p}}]}`, one result per text, in order;
* `GET /healthz` -> `{"status": "ok"}` (503 as soon as draining starts: load balancers stop sending);
* `GET /v1/model` -> name, backend (and int8 quantisation), labels, parameter count, config, limits and
  batching counters;
* `GET /metrics` -> Prometheus text format: requests by route and status, errors by status, request
  latency, texts per model call, queue depth, model info.

Errors are JSON, `{"error": {"code", "message"}}`: 401 without the API key (when one is set); 413 for
too many texts, a text longer than `max_chars` or a body above `max_body_bytes` (declared or chunked);
422 for a malformed body or an empty text; 503 when `max_concurrent` requests are already in flight
(answered before the body is read, so memory stays bounded) or the queue is full; 504 after
`request_timeout_s`. A limit violation is never a 500. When a model call fails, its requests are
retried one by one, so one bad text fails only its own request.

With an API key, every route but `/healthz` needs `Authorization: Bearer <key>`; the key is checked
(in constant time) before the body is read. Every request logs one JSON line on the
`sdbert.serving.access` logger (method, path, status, latency, number of texts, request id; never the
texts or the key) and answers with its `X-Request-ID`.

Micro-batching: each request puts its texts on an asyncio queue and awaits a future. One worker
task takes the first waiting request, keeps collecting for up to `max_wait_ms` (or until
`max_batch_texts`), then tokenises and runs the model in a single worker thread (the event loop
stays free) and hands each request its slice of the results. `inference.predict_logits` groups
texts by block count, so a text's result does not depend on which requests it was batched with.

Shutdown: uvicorn turns SIGTERM/SIGINT into a graceful stop: it stops accepting connections, lets
in-flight requests finish (up to `timeout_graceful_shutdown`), then the app's lifespan drains the
queue and stops the worker.

The app is a module-level router of plain functions; what they share (model, batcher, settings,
metrics) lives on `app.state`, so several apps can live in one process.
"""

import asyncio
import contextlib
import functools
import hmac
import ipaddress
import json
import logging
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sdbert import __version__
from sdbert.classifier import Classifier
from sdbert.errors import ConfigError, MissingDependency, missing_hint, require
from sdbert.inference import model_name
from sdbert.serving.settings import ServeSettings  # noqa: F401  (public here; defined without fastapi for --help)

try:  # the [serve] extra: without it, importing this module is a one-line user error, not a traceback
    import prometheus_client
    from fastapi import APIRouter, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from pydantic import BaseModel, ConfigDict
    from starlette.exceptions import HTTPException
except ImportError as exc:
    raise MissingDependency(missing_hint(exc.name or "fastapi", "the HTTP service")) from None

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("sdbert.serving.access")
OPEN_PATHS = frozenset({"/healthz"})  # reachable without the API key: load balancers probe it
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


# --- micro-batching -----------------------------------------------------------------------------------


class Busy(Exception):
    """The queue is full."""


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future


class MicroBatcher:
    """Collects concurrent requests into one call of `fn(texts) -> results` run in a worker thread;
    `on_batch(number_of_texts)` hears of every call."""

    def __init__(self, fn: Callable[[list[str]], list[Any]], *, max_batch_texts: int = 64,
                 max_wait_ms: float = 5.0, max_queue: int = 256, on_batch: Callable[[int], None] | None = None):
        self.fn = fn
        self.max_batch_texts = max_batch_texts
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.stats = {"batches": 0, "requests": 0, "texts": 0, "max_requests_per_batch": 0}
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.running = False

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the model (not counting the call in progress)."""
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdbert-model")
        self._task = asyncio.create_task(self._run(), name="sdbert-batcher")
        self.running = True

    async def stop(self) -> None:
        """Finish every queued request, then stop the worker."""
        if not self.running:
            return
        self.running = False
        await self._queue.put(None)
        await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> list[Any]:
        if not self.running:
            raise Busy("shutting down")
        if self._queue.qsize() >= self.max_queue:
            raise Busy("queue full")
        job = _Job(texts, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        return await job.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            job = await self._queue.get()
            if job is None:
                break
            jobs, stopping = await self._collect(loop, job)
            await self._execute(loop, jobs)

    async def _collect(self, loop, first: _Job) -> tuple[list[_Job], bool]:
        """`first` and the requests waiting or arriving before the deadline; and whether stop was asked."""
        jobs, count = [first], len(first.texts)
        deadline = loop.time() + self.max_wait
        while count < self.max_batch_texts:
            try:  # whatever is already waiting, then what arrives before the deadline
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), timeout)
                except asyncio.TimeoutError:  # TimeoutError from 3.11; distinct in 3.10
                    break
            if job is None:
                return jobs, True
            jobs.append(job)
            count += len(job.texts)
        return jobs, False

    async def _execute(self, loop, jobs: list[_Job]) -> None:
        live = [j for j in jobs if not j.future.done()]  # a client that went away cancelled its future
        if not live:
            return
        texts = [t for j in live for t in j.texts]
        self._count(len(live), len(texts))
        try:
            results = await loop.run_in_executor(self._executor, self.fn, texts)
        except Exception as exc:  # one request's text must not fail the others: retry each on its own
            if len(live) == 1:
                logger.exception("model call failed")
                if not live[0].future.done():
                    live[0].future.set_exception(exc)
                return
            logger.warning("a model call of %d requests failed (%s); retrying them one by one", len(live), exc)
            for j in live:
                await self._execute(loop, [j])
            return
        start = 0
        for j in live:
            if not j.future.done():
                j.future.set_result(results[start : start + len(j.texts)])
            start += len(j.texts)

    def _count(self, requests: int, texts: int) -> None:
        self.stats["batches"] += 1
        self.stats["requests"] += requests
        self.stats["texts"] += texts
        self.stats["max_requests_per_batch"] = max(self.stats["max_requests_per_batch"], requests)
        if self.on_batch is not None:
            self.on_batch(texts)


# --- metrics ------------------------------------------------------------------------------------------


@dataclass
class ServiceMetrics:
    """The app's Prometheus metrics, in a registry of its own (several apps in one process do not clash)."""

    registry: "prometheus_client.CollectorRegistry"
    requests: "prometheus_client.Counter"
    errors: "prometheus_client.Counter"
    latency: "prometheus_client.Histogram"
    batch_texts: "prometheus_client.Histogram"
    queue_depth: "prometheus_client.Gauge"
    model: "prometheus_client.Info"

    @classmethod
    def create(cls) -> "ServiceMetrics":
        pc, registry = prometheus_client, prometheus_client.CollectorRegistry()
        return cls(
            registry=registry,
            requests=pc.Counter("sdbert_http_requests", "HTTP requests by route and status code",
                                ["route", "code"], registry=registry),
            errors=pc.Counter("sdbert_http_errors", "HTTP responses with a 4xx or 5xx status, by code", ["code"],
                              registry=registry),
            latency=pc.Histogram("sdbert_http_request_duration_seconds", "Time from request to response, by route",
                                 ["route"], registry=registry),
            batch_texts=pc.Histogram("sdbert_batch_texts", "Texts per model call of the micro-batcher",
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=registry),
            queue_depth=pc.Gauge("sdbert_queue_depth", "Requests waiting for the model", registry=registry),
            model=pc.Info("sdbert_model", "The model served", registry=registry),
        )

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, code=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)
        if status >= 400:
            self.errors.labels(code=str(status)).inc()


# --- routes -------------------------------------------------------------------------------------------


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[str]


router = APIRouter()


@router.post("/v1/classify")
async def classify_texts(body: ClassifyRequest, request: Request):
    state, texts = request.app.state, body.texts
    request.state.texts = len(texts)  # for the access log
    problem = find_problem(texts, state.settings)
    if problem is not None:
        return error_response(*problem)
    try:
        results = await asyncio.wait_for(state.batcher.submit(texts), state.settings.request_timeout_s)
    except Busy as exc:
        return error_response(503, f"busy: {exc}", {"Retry-After": "1"})
    except asyncio.TimeoutError:  # TimeoutError from 3.11; distinct in 3.10
        return error_response(504, f"no answer within {state.settings.request_timeout_s:g} s")
    return {"model": state.name, "results": results}


@router.get("/healthz")
async def healthz(request: Request):
    state = request.app.state
    if state.draining or not state.batcher.running:
        return error_response(503, "shutting down")
    return {"status": "ok"}


@router.get("/v1/model")
async def describe(request: Request):
    return model_description(request.app.state)


@router.get("/metrics")
async def prometheus_metrics(request: Request):
    registry = request.app.state.metrics.registry
    return Response(prometheus_client.generate_latest(registry), media_type=prometheus_client.CONTENT_TYPE_LATEST)


ROUTES = frozenset(route.path for route in router.routes)  # metric labels: any other path counts as "other"


def find_problem(texts: list[str], settings: ServeSettings) -> tuple[int, str] | None:
    """The status and message a request with `texts` is refused with, or None when it is fine."""
    if not texts:
        return 422, "texts is empty"
    if len(texts) > settings.max_texts:
        return 413, f"{len(texts)} texts is above the limit of {settings.max_texts} per request"
    for i, text in enumerate(texts):
        if len(text) > settings.max_chars:
            return 413, f"text {i} has {len(text)} characters, above the limit of {settings.max_chars}"
        if not text.strip():
            return 422, f"text {i} is empty"
    return None


def model_description(state) -> dict:
    classifier, settings = state.classifier, state.settings
    config = classifier.config
    return {
        "name": state.name,
        "backend": classifier.backend,
        "precision": classifier.resolved_precision().precision,
        "quantization": getattr(classifier.model, "quantization", None),  # "int8-dynamic": a quantised ONNX graph
        "labels": [config.id2label[i] for i in range(config.num_labels)],
        "parameters": classifier.model.num_parameters(),
        "max_length": state.max_length,
        "truncation": classifier.settings.truncation,
        "config": public_config(config),
        "limits": {"max_texts": settings.max_texts, "max_chars": settings.max_chars,
                   "max_body_bytes": settings.max_body_bytes},
        "batching": {**asdict(settings), **state.batcher.stats, "uptime_s": round(time.time() - state.started, 1)},
    }


def public_config(config) -> dict:
    """The model's config without this server's paths (where its weights came from is named, not located)."""
    out = config.to_dict()
    if out.get("init_checkpoint"):
        out["init_checkpoint"] = Path(out["init_checkpoint"]).name
    return out


def error_response(code: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=code, headers=headers)


async def invalid_request(request, exc: RequestValidationError):
    content_type = request.headers.get("content-type", "")
    if request.method == "POST" and "json" not in content_type.lower():
        return error_response(422, f"invalid request: the body must be JSON sent with 'Content-Type: "
                                   f"application/json' (got {content_type or 'no Content-Type'})")
    return error_response(422, "invalid request: " + "; ".join(_describe_error(e) for e in exc.errors()))


def _describe_error(error: dict) -> str:
    """One validation error in words: where in the body, and for broken JSON at which character and why."""
    where = [str(p) for p in error.get("loc", ()) if p != "body"]
    if error.get("type") == "json_invalid":
        why = (error.get("ctx") or {}).get("error", "")
        return f"malformed JSON at character {where[0] if where else '?'}" + (f": {why}" if why else "")
    return f"{'.'.join(where) or 'body'}: {error.get('msg')}"


async def http_error(request, exc: HTTPException):
    return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def internal_error(request, exc: Exception):
    logger.exception("unhandled error")
    return error_response(500, "internal error")


def run_model(classifier, texts: list[str], *, max_length: int, batch_size: int) -> list[dict]:
    """What the batcher's worker thread runs: the classifier, rounded for the wire."""
    results = classifier(texts, max_length=max_length, batch_size=batch_size)
    for r in results:
        r["score"] = round(r["score"], 6)
        r["probabilities"] = {k: round(v, 6) for k, v in r["probabilities"].items()}
    return results


# --- the app ------------------------------------------------------------------------------------------


@asynccontextmanager
async def lifespan(app):
    state = app.state
    await state.batcher.start()
    logger.info("serving %s (%s)%s", state.name, state.classifier.backend, "" if state.api_key else ", no API key")
    yield
    await state.batcher.stop()
    logger.info("stopped: %d requests in %d batches", state.batcher.stats["requests"], state.batcher.stats["batches"])


def create_app(classifier, settings: ServeSettings | None = None, *, name: str = "model",
               api_key: str | None = None):
    """The FastAPI app serving a `sdbert.classifier.Classifier` (PyTorch or ONNX); with
    `api_key`, every route but /healthz needs `Authorization: Bearer <api_key>`."""
    if api_key is not None and not api_key:
        raise ConfigError("the API key is empty")
    app = FastAPI(title="sdbert", version=_version(), lifespan=lifespan)
    state = app.state
    state.classifier, state.name, state.api_key = classifier, name, api_key
    state.settings = settings = settings or ServeSettings()
    state.max_length = classifier.max_length(settings.max_length)
    state.started, state.draining = time.time(), False
    state.metrics = _model_metrics(classifier, name)
    state.batcher = MicroBatcher(
        functools.partial(run_model, classifier, max_length=state.max_length, batch_size=settings.batch_size),
        max_batch_texts=settings.max_batch_texts, max_wait_ms=settings.max_wait_ms, max_queue=settings.max_queue,
        on_batch=state.metrics.batch_texts.observe)
    state.metrics.queue_depth.set_function(lambda: state.batcher.queue_depth)
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
    # The last added runs first: the access log sees every answer, then the key, then the concurrency cap
    # (before any body is read), then the body limit.
    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(_ConcurrencyCap, limit=settings.max_concurrent)
    if api_key is not None:
        app.add_middleware(_BearerAuth, key=api_key)
    app.add_middleware(_AccessLog, metrics=state.metrics)
    return app


def _model_metrics(classifier, name: str) -> ServiceMetrics:
    metrics = ServiceMetrics.create()
    metrics.model.info({"name": name, "attention_type": str(classifier.config.attention_type),
                        "backend": classifier.backend, "version": _version()})
    return metrics


# --- ASGI middleware ----------------------------------------------------------------------------------


async def _send_error(send, code: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """A JSON error answered straight from a middleware (the shape of `error_response`)."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send({"type": "http.response.start", "status": code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class _BodyLimit:
    """A body above `limit` bytes is a 413, whether it declares its length or is chunked. A declared
    length is refused before reading; a chunked body fails while the route reads it (an HTTPException,
    which the app's handler turns into the JSON error)."""

    def __init__(self, app, *, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", ())).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await _send_error(send, 413, f"request body of {int(declared)} bytes is above the limit of "
                                                f"{self.limit}")
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, f"request body is above the limit of {self.limit} bytes")
            return message

        await self.app(scope, limited_receive, send)


class _ConcurrencyCap:
    """At most `limit` POST requests in flight; the next is a 503 before its body is read (a body is read
    whole before it is parsed, so this cap is what bounds the memory that bodies take)."""

    def __init__(self, app, *, limit: int):
        self.app, self.limit, self.in_flight = app, limit, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        if self.in_flight >= self.limit:
            return await _send_error(send, 503, f"busy: {self.limit} requests in flight", ((b"retry-after", b"1"),))
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class _BearerAuth:
    """Every path but `OPEN_PATHS` needs `Authorization: Bearer <key>`, checked before the body is read:
    a client without the key cannot make the service read a large body."""

    def __init__(self, app, *, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._authorized(scope):
            return await self.app(scope, receive, send)
        await _send_error(send, 401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                          ((b"www-authenticate", b"Bearer"),))

    def _authorized(self, scope) -> bool:
        header = dict(scope.get("headers", ())).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        # compare_digest: the time taken does not tell how much of a guessed key was right
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)


class _AccessLog:
    """Per request: one JSON line on `sdbert.serving.access`, the request metrics, an `X-Request-ID` answer
    header (the client's own, when it sent a well-formed one)."""

    def __init__(self, app, *, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = _request_id(scope)
        state = scope.setdefault("state", {})  # the classify route notes its number of texts here
        status = 500  # an exception that escapes the app is answered with a 500 further out

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", request_id.encode())]}
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            path = scope["path"]
            self.metrics.observe(path if path in ROUTES else "other", status, seconds)
            access_logger.info(json.dumps({
                "method": scope["method"], "path": path, "status": status, "latency_ms": round(1000 * seconds, 2),
                "texts": state.get("texts"), "request_id": request_id}))


def _request_id(scope) -> str:
    given = dict(scope.get("headers", ())).get(b"x-request-id", b"").decode("latin-1")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


# --- running it ---------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None, insecure: bool = False) -> None:
    """Refuse to listen beyond this machine without an API key, unless the caller says `insecure`."""
    if api_key or is_loopback(host):
        return
    if not insecure:
        raise ConfigError(f"refusing to listen on {host or 'every address'} without an API key: give --api-key-file "
                          "(or set SDBERT_API_KEY), or --insecure to serve anyone who can reach the port")


def serve(model_dir: str, *, host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings | None = None,
          backend: str = "auto", threads: int | None = None, access_log: bool = False,
          timeout_graceful_shutdown: float = 30.0, log_level: str = "info", api_key: str | None = None,
          insecure: bool = False) -> None:
    """Load `model_dir` and serve it until SIGTERM/SIGINT (blocking)."""
    check_bind(host, api_key, insecure)
    if not api_key and not is_loopback(host):
        logger.warning("listening on %s without an API key (--insecure): anyone who can reach the port can use it",
                       host)
    uvicorn = require("uvicorn", "the HTTP service")
    settings = settings or ServeSettings()
    classifier = Classifier.from_pretrained(model_dir, backend=backend, threads=threads, precision=settings.precision)
    classifier.resolved_precision()  # measure (and log) before the first request, not during it
    app = create_app(classifier, settings, name=model_name(model_dir), api_key=api_key)
    _configure_access_log(access_log)
    config = uvicorn.Config(app, host=host, port=port, access_log=False, log_level=log_level,
                            timeout_graceful_shutdown=timeout_graceful_shutdown, lifespan="on")
    server = _graceful_server_class(uvicorn)(config)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits when it cannot bind
        if exc.code:
            raise ConfigError(f"could not serve on {host}:{port} (is the port in use?)") from None
    if not server.started:
        raise ConfigError(f"could not serve on {host}:{port} (is the port in use?)")


def _configure_access_log(enabled: bool) -> None:
    """On: the JSON lines alone on stdout (one per request, ready for a log shipper). Off: none."""
    access_logger.setLevel(logging.INFO if enabled else logging.WARNING)
    if enabled and not access_logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_logger.addHandler(handler)
        access_logger.propagate = False


def _graceful_server_class(uvicorn):
    class GracefulServer(uvicorn.Server):
        """uvicorn re-raises a caught SIGTERM/SIGINT once its graceful shutdown is done, so the process
        dies by the signal (status -15). A stop that drained every request is a normal exit here."""

        def handle_exit(self, sig, frame):
            app = self.config.app
            if hasattr(app, "state"):
                app.state.draining = True  # /healthz says 503 at once, while in-flight requests finish
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                yield
                captured = getattr(self, "_captured_signals", [])
                if captured:
                    logger.info("stopped by %s", signal.Signals(captured[-1]).name)
                captured.clear()

    return GracefulServer


def _version() -> str:
    return __version__
