"""`ServeSettings`: the service's limits and batching, one field per `sdbert serve` flag.

Kept apart from `sdbert.serving.app` (which needs the [serve] extra) so `sdbert serve --help` works without it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdbert.cli_args import arg, non_negative_float, positive_float, positive_int
from sdbert.errors import ConfigError
from sdbert.precision import PRECISION_HELP, Precision


@dataclass
class ServeSettings:
    """Limits and batching of the service."""

    max_texts: int = arg(64, "texts per request; more is a 413", type=positive_int)
    max_chars: int = arg(100_000, "characters per text; longer is a 413 (it bounds the tokenizer's work and the "
                         "request size: texts are truncated to --max-length tokens anyway)", type=positive_int)
    max_length: int | None = arg(None, "tokens per text (default: as trained)", type=positive_int)
    max_batch_texts: int = arg(64, "texts gathered into one model call (a request is never split, so a call may "
                               "hold up to --max-texts more)", type=positive_int)
    max_wait_ms: float = arg(5.0, "how long the first waiting request waits for others to join its batch, in ms",
                             type=non_negative_float)
    max_queue: int = arg(256, "requests waiting for the model before the service answers 503", type=positive_int)
    batch_size: int = arg(32, "forward-pass batch inside a model call (texts of one block count per batch)",
                          type=positive_int)
    max_concurrent: int = arg(16, "requests whose bodies are read at once; more are answered 503 before their "
                              "body is read, so memory stays below this x the body limit", type=positive_int)
    request_timeout_s: float = arg(60.0, "seconds a request may wait for its answer before a 504",
                                   type=positive_float)
    precision: Precision = arg("auto", PRECISION_HELP)

    def __post_init__(self) -> None:
        for name in ("max_texts", "max_chars", "max_batch_texts", "max_queue", "batch_size", "max_concurrent"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive")
        if self.max_wait_ms < 0:
            raise ConfigError("max_wait_ms must be >= 0")
        if self.request_timeout_s <= 0:
            raise ConfigError("request_timeout_s must be positive")

    @property
    def max_body_bytes(self) -> int:
        # A JSON-escaped character takes at most 6 bytes (\uXXXX); plus room for the envelope.
        return self.max_texts * (self.max_chars * 6 + 16) + 65536
