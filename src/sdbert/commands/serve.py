"""`sdbert serve`: an HTTP classification service (FastAPI + uvicorn) with micro-batching."""

from __future__ import annotations

import argparse
import logging

from sdbert.commands.common import positive_int, ranged

logger = logging.getLogger(__name__)
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


_non_negative_float = ranged(float, 0.0, what="a number >= 0")
_port = ranged(int, 0, 65535, what="a port in 0..65535")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="model folder: sdbert/Hugging Face weights, or an ONNX export (model.onnx)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    parser.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                        help="auto: onnxruntime when the folder holds model.onnx, else PyTorch")
    parser.add_argument("--threads", type=positive_int, help="intra-op threads of the model (default: all cores)")
    limits = parser.add_argument_group("limits and batching")
    limits.add_argument("--max-texts", type=positive_int, default=64, help="texts per request (default 64; 413 above)")
    limits.add_argument("--max-chars", type=positive_int, default=100_000,
                        help="characters per text (default 100000; 413 above)")
    limits.add_argument("--max-length", type=positive_int, help="tokens per text (default: as trained)")
    limits.add_argument("--max-batch-texts", type=positive_int, default=64,
                        help="texts gathered into one model call (default 64)")
    limits.add_argument("--max-wait-ms", type=_non_negative_float, default=5.0,
                        help="how long a request waits for others to join its batch (default 5 ms)")
    limits.add_argument("--max-queue", type=positive_int, default=256,
                        help="requests waiting for the model before answering 503 (default 256)")
    limits.add_argument("--batch-size", type=positive_int, default=32, help="forward-pass batch (default 32)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--graceful-timeout", type=_non_negative_float, default=30.0,
                        help="seconds in-flight requests get to finish after SIGTERM (default 30)")


def run(args: argparse.Namespace) -> int:
    from sdbert.serve import ServeSettings, serve

    settings = ServeSettings(max_texts=args.max_texts, max_chars=args.max_chars, max_batch_texts=args.max_batch_texts,
                             max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, batch_size=args.batch_size,
                             max_length=args.max_length)
    if args.host not in _LOOPBACK:
        logger.warning("listening on %s: the service has no authentication; put it behind a proxy that has", args.host)
    serve(args.model, host=args.host, port=args.port, settings=settings, backend=args.backend, threads=args.threads,
          access_log=args.access_log, timeout_graceful_shutdown=args.graceful_timeout,
          log_level="debug" if args.verbose else "info")
    return 0
