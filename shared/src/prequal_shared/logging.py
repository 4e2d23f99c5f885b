"""structlog set-up, done once per process.

Every line (ours, uvicorn's, aiokafka's, SQLAlchemy's) goes through the same processors, the
last of which masks anything shaped like a PAN: the full PAN never reaches a log line.

Our own lines are rendered by structlog and written straight to stderr; only third-party
lines go through the standard library's `logging`. Each application gets three lines
(accepted, scored, decided), and the trip through `logging` (a LogRecord, handler locks, a
formatter) made a line cost 23 us instead of 13: py-spy put a fifth of the credit service's
CPU in logging.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import structlog

from prequal_shared.domain import redact_pans

_SECRET_KEYS = ("password", "secret", "token", "database_url")


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_pans(value)
    if isinstance(value, Mapping):
        return {key: _redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(item) for item in value]
    return value


@functools.lru_cache(maxsize=4096)
def _is_secret(key: str) -> bool:
    # Remembered: a line has some ten keys, nearly always the same ones, and testing each
    # against every secret-looking word was a fifth of a line's cost.
    lowered = key.lower()
    return any(secret in lowered for secret in _SECRET_KEYS)


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask PANs everywhere in the event and drop values of secret-looking keys."""
    for key in list(event_dict):
        if _is_secret(key):
            event_dict[key] = "***"
        else:
            event_dict[key] = _redact(event_dict[key])
    return event_dict


class _StderrLogger:
    """Where structlog's chain ends for our own loggers: the rendered line, in one write.

    sys.stderr is looked up per line (a test may have swapped it); it is line-buffered, so
    every line is flushed as it is written. As with `logging`'s handlers, a line that cannot
    be written (stderr closed, a broken pipe) is dropped: logging never fails the caller."""

    _lock = threading.Lock()

    def __init__(self, name: str) -> None:
        self.name = name  # read by `add_logger_name`

    def msg(self, message: str) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):
            sys.stderr.write(message + "\n")

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _logger_factory(*args: Any) -> _StderrLogger:
    return _StderrLogger(str(args[0]) if args else "")


def configure_logging(
    *, service: str, level: str = "INFO", fmt: str = "json", context: Sequence[Any] = ()
) -> None:
    """Render structlog's lines and the standard library's with the same processors and the
    same JSON (or console) renderer, to stderr.

    `context`: extra processors that add fields to every line (the API adds the request's
    correlation id, which its middleware keeps in a context variable of its own).
    """
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        *context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, redact_processor, renderer],
        logger_factory=_logger_factory,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redact_processor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "kafka", "sqlalchemy.engine", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
