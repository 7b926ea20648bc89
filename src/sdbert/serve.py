"""HTTP inference: a FastAPI app with micro-batching, run by uvicorn (`pip install 'sdbert[serve]'`).

Endpoints:

* `POST /v1/classify` `{"texts": ["...", ...]}` -> `{"model", "results": [{"label", "score",
  "probabilities": {label: p}}]}`, one result per text, in order;
* `GET /healthz` -> `{"status": "ok"}` (503 once shutting down);
* `GET /v1/model` -> name, backend (and int8 quantisation), labels, parameter count, config, limits and
  batching counters.

Errors are JSON, `{"error": {"code", "message"}}`: 413 for too many texts, a text longer than
`max_chars` or a body above `max_body_bytes` (declared or chunked); 422 for a malformed body or an
empty text; 503 when the queue is full. A limit violation is never a 500.

Micro-batching: each request puts its texts on an asyncio queue and awaits a future. One worker
task takes the first waiting request, keeps collecting for up to `max_wait_ms` (or until
`max_batch_texts`), then tokenises and runs the model in a single worker thread (the event loop
stays free) and hands each request its slice of the results. `inference.predict_logits` groups
texts by block count, so a text's result does not depend on which requests it was batched with.

Shutdown: uvicorn turns SIGTERM/SIGINT into a graceful stop: it stops accepting connections, lets
in-flight requests finish (up to `timeout_graceful_shutdown`), then the app's lifespan drains the
queue and stops the worker.
"""

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

from sdbert.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class ServeSettings:
    """Limits and batching of the service."""

    # Texts per request; more is a 413.
    max_texts: int = 64
    # Characters per text; longer is a 413 (texts are truncated to the model's max_length anyway,
    # so this only bounds the tokeniser's work and the request size).
    max_chars: int = 100_000
    # Texts per model call; one request is never split, so a call may hold up to max_texts more.
    max_batch_texts: int = 64
    # After the first waiting request, how long to wait for others to join its batch.
    max_wait_ms: float = 5.0
    # Requests waiting for the model; beyond this the service answers 503.
    max_queue: int = 256
    # Forward-pass batch inside a model call (texts of one block count per batch).
    batch_size: int = 32
    # Tokens per text (default: the model's training length).
    max_length: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_texts", "max_chars", "max_batch_texts", "max_queue", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive")
        if self.max_wait_ms < 0:
            raise ConfigError("max_wait_ms must be >= 0")

    @property
    def max_body_bytes(self) -> int:
        # A JSON-escaped character takes at most 6 bytes (\uXXXX); plus room for the envelope.
        return self.max_texts * (self.max_chars * 6 + 16) + 65536


class Busy(Exception):
    """The queue is full."""


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future


class MicroBatcher:
    """Collects concurrent requests into one call of `fn(texts) -> results` run in a worker thread."""

    def __init__(self, fn: Callable[[list[str]], list[Any]], *, max_batch_texts: int = 64,
                 max_wait_ms: float = 5.0, max_queue: int = 256):
        self.fn = fn
        self.max_batch_texts = max_batch_texts
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.stats = {"batches": 0, "requests": 0, "texts": 0, "max_requests_per_batch": 0}
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.running = False

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
            jobs, count = [job], len(job.texts)
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
                    stopping = True
                    break
                jobs.append(job)
                count += len(job.texts)
            await self._execute(loop, jobs)

    async def _execute(self, loop, jobs: list[_Job]) -> None:
        live = [j for j in jobs if not j.future.done()]  # a client that went away cancelled its future
        if not live:
            return
        texts = [t for j in live for t in j.texts]
        self.stats["batches"] += 1
        self.stats["requests"] += len(live)
        self.stats["texts"] += len(texts)
        self.stats["max_requests_per_batch"] = max(self.stats["max_requests_per_batch"], len(live))
        try:
            results = await loop.run_in_executor(self._executor, self.fn, texts)
        except Exception as exc:  # the requests get the error; the worker keeps serving
            logger.exception("model call failed")
            for j in live:
                if not j.future.done():
                    j.future.set_exception(exc)
            return
        start = 0
        for j in live:
            if not j.future.done():
                j.future.set_result(results[start : start + len(j.texts)])
            start += len(j.texts)


def create_app(model, settings: ServeSettings | None = None, *, name: str = "model"):
    """The FastAPI app serving `model` (an `SDBertForSequenceClassification` or `OnnxClassifier`).

    (This module does not use `from __future__ import annotations`: FastAPI reads the request model
    from the route's annotation, and the model class is defined here, after the lazy imports.)"""
    fastapi = _require_serve()
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict
    from starlette.exceptions import HTTPException

    from sdbert.inference import classify, max_length_of

    settings = settings or ServeSettings()
    max_length = max_length_of(model, settings.max_length)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    def run_model(texts: list[str]) -> list[dict]:
        results = classify(model, texts, max_length=max_length, batch_size=settings.batch_size)
        for r in results:
            r["score"] = round(r["score"], 6)
            r["probabilities"] = {k: round(v, 6) for k, v in r["probabilities"].items()}
        return results

    batcher = MicroBatcher(run_model, max_batch_texts=settings.max_batch_texts, max_wait_ms=settings.max_wait_ms,
                           max_queue=settings.max_queue)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        logger.info("serving %s (%s)", name, _backend(model))
        yield
        await batcher.stop()
        logger.info("stopped: %d requests in %d batches", batcher.stats["requests"], batcher.stats["batches"])

    app = fastapi.FastAPI(title="sdbert", version=_version(), lifespan=lifespan)
    app.state.batcher = batcher

    def error(code: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
                             for e in exc.errors())
        return error(422, f"invalid request: {problems}")

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request, exc: Exception):
        logger.exception("unhandled error")
        return error(500, "internal error")

    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes, exception=HTTPException)

    class ClassifyRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        texts: list[str]

    @app.post("/v1/classify")
    async def classify_texts(body: ClassifyRequest):
        texts = body.texts
        if not texts:
            return error(422, "texts is empty")
        if len(texts) > settings.max_texts:
            return error(413, f"{len(texts)} texts is above the limit of {settings.max_texts} per request")
        for i, text in enumerate(texts):
            if len(text) > settings.max_chars:
                return error(413, f"text {i} has {len(text)} characters, above the limit of {settings.max_chars}")
            if not text.strip():
                return error(422, f"text {i} is empty")
        try:
            results = await batcher.submit(texts)
        except Busy as exc:
            return error(503, f"busy: {exc}", {"Retry-After": "1"})
        return {"model": name, "results": results}

    @app.get("/healthz")
    async def healthz():
        if not batcher.running:
            return error(503, "shutting down")
        return {"status": "ok"}

    started = time.time()

    @app.get("/v1/model")
    async def describe():
        return {
            "name": name,
            "backend": _backend(model),
            "quantization": getattr(model, "quantization", None),  # "int8-dynamic" for a quantised ONNX graph
            "labels": labels,
            "parameters": model.num_parameters(),
            "max_length": max_length,
            "config": model.config.to_dict(),
            "limits": {"max_texts": settings.max_texts, "max_chars": settings.max_chars,
                       "max_body_bytes": settings.max_body_bytes},
            "batching": {**asdict(settings), **batcher.stats, "uptime_s": round(time.time() - started, 1)},
        }

    return app


class _BodyLimit:
    """ASGI middleware: a body above `limit` bytes is a 413, whether it declares its length or is
    chunked. A declared length is refused before reading; a chunked body fails while the route reads
    it (an HTTPException, which the app's handler turns into the JSON error)."""

    def __init__(self, app, *, limit: int, exception):
        self.app, self.limit, self.exception = app, limit, exception

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", ())).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            body = (f'{{"error": {{"code": 413, "message": "request body of {int(declared)} bytes is above the '
                    f'limit of {self.limit}"}}}}').encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise self.exception(413, f"request body is above the limit of {self.limit} bytes")
            return message

        await self.app(scope, limited_receive, send)


def serve(model_dir: str, *, host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings | None = None,
          backend: str = "auto", threads: int | None = None, access_log: bool = False,
          timeout_graceful_shutdown: float = 30.0, log_level: str = "info") -> None:
    """Load `model_dir` and serve it until SIGTERM/SIGINT (blocking)."""
    _require_serve()
    import uvicorn

    from sdbert.inference import load_classifier, model_name

    model = load_classifier(model_dir, backend=backend, threads=threads)
    app = create_app(model, settings, name=model_name(model_dir))
    config = uvicorn.Config(app, host=host, port=port, access_log=access_log, log_level=log_level,
                            timeout_graceful_shutdown=timeout_graceful_shutdown, lifespan="on")
    server = _graceful_server_class(uvicorn)(config)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits when it cannot bind
        if exc.code:
            raise ConfigError(f"could not serve on {host}:{port} (is the port in use?)") from None
    if not server.started:
        raise ConfigError(f"could not serve on {host}:{port} (is the port in use?)")


def _graceful_server_class(uvicorn):
    class GracefulServer(uvicorn.Server):
        """uvicorn re-raises a caught SIGTERM/SIGINT once its graceful shutdown is done, so the process
        dies by the signal (status -15). A stop that drained every request is a normal exit here."""

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                yield
                captured = getattr(self, "_captured_signals", [])
                if captured:
                    logger.info("stopped by %s", signal.Signals(captured[-1]).name)
                captured.clear()

    return GracefulServer


def _backend(model) -> str:
    return getattr(model, "backend", "torch")


def _version() -> str:
    from sdbert import __version__

    return __version__


def _require_serve():
    try:
        import fastapi
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError("the HTTP service needs fastapi and uvicorn: pip install 'sdbert[serve]'") from None
    return fastapi
