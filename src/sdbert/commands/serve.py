"""`sdbert serve`: an HTTP classification service (FastAPI + uvicorn) with micro-batching."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from sdbert.cli_args import add_config_arguments, config_from_args, non_negative_float, positive_int, ranged
from sdbert.errors import ConfigError
from sdbert.hub import add_revision_argument, resolve_flag
from sdbert.serving.settings import ServeSettings

API_KEY_ENV = "SDBERT_API_KEY"

_port = ranged(int, 0, 65535, what="a port in 0..65535")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="model folder: sdbert/Hugging Face weights, or an ONNX export (model.onnx); or a hub "
                             "name org/name")
    add_revision_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    parser.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                        help="auto: onnxruntime when the folder holds model.onnx, else PyTorch")
    parser.add_argument("--threads", type=positive_int, help="intra-op threads of the model (default: all cores)")
    _add_security_arguments(parser.add_argument_group("access"))
    add_config_arguments(parser.add_argument_group("limits and batching"), ServeSettings)
    parser.add_argument("--access-log", action="store_true",
                        help="log one JSON line per request on stdout (method, path, status, latency, texts, id)")
    parser.add_argument("--graceful-timeout", type=non_negative_float, default=30.0,
                        help="seconds in-flight requests get to finish after SIGTERM (default 30)")


def _add_security_arguments(group) -> None:
    group.add_argument("--api-key-file", metavar="PATH",
                       help=f"file holding the API key (default: ${API_KEY_ENV}); with a key, every route but "
                            "/healthz needs 'Authorization: Bearer <key>'")
    group.add_argument("--insecure", action="store_true",
                       help="allow a --host other than this machine without an API key")


def read_api_key(path: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The key from `--api-key-file`, else from $SDBERT_API_KEY, else None (no authentication).
    A key that is empty or could not travel in a header is a user error, never a silently open service."""
    if path is not None:
        source = f"--api-key-file {path}"
        try:
            key = Path(path).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ConfigError(f"{source} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source} cannot be read: {exc}") from None
    elif API_KEY_ENV in environ:
        source, key = f"${API_KEY_ENV}", environ[API_KEY_ENV].strip()
    else:
        return None
    if not key:
        raise ConfigError(f"{source} is empty: it must hold the API key")
    if not (key.isascii() and key.isprintable()) or " " in key:
        raise ConfigError(f"{source} must hold one key on one line: printable ASCII without spaces")
    return key


def run(args: argparse.Namespace) -> int:
    # optional extra [serve]: `sdbert serve --help` works without fastapi; running it says what to install
    from sdbert.serving.app import check_bind, serve

    api_key = read_api_key(args.api_key_file)
    check_bind(args.host, api_key, args.insecure)  # before loading anything
    settings = config_from_args(ServeSettings, args)
    serve(resolve_flag(args.model, args.revision, "--model"), host=args.host, port=args.port, settings=settings,
          backend=args.backend, threads=args.threads, access_log=args.access_log,
          timeout_graceful_shutdown=args.graceful_timeout, log_level="debug" if args.verbose else "info",
          api_key=api_key, insecure=args.insecure)
    return 0
