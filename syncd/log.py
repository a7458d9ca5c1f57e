"""Logging: structlog for our events, stdlib loggers (aiohttp, APScheduler) routed through the same chain.

JSON lines when stdout is not a terminal (journald), coloured key=value on a terminal. Every event
passes :class:`RedactSecrets`, which replaces each registered secret value, wherever it occurs
(event text, fields, exception text and tracebacks), with ``***``.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable
from typing import Any

import structlog
from structlog.tracebacks import ExceptionDictTransformer

__all__ = ["MASK", "RedactSecrets", "configure_logging", "get_logger", "redact", "register_secret"]

MASK = "***"
_MIN_SECRET_LEN = 4  # shorter strings would mask ordinary words and numbers


class _SecretRegistry:
    """Process-wide set of values that must never be written anywhere."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()

    def add(self, value: str | None) -> None:
        if not value or len(value) < _MIN_SECRET_LEN:
            return
        with self._lock:
            if value not in self._values:
                # Longest first, so a secret that contains another is masked whole.
                self._values = tuple(sorted((*self._values, value), key=len, reverse=True))

    def redact(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return text


_registry = _SecretRegistry()


def register_secret(value: str | None) -> None:
    """Mask ``value`` in every later log line (passwords, keys, session ids as they change)."""
    _registry.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret masked; for messages that leave the process."""
    return _registry.redact(text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return _registry.redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v) for v in value)
    if isinstance(value, BaseException):
        return _registry.redact(f"{type(value).__name__}: {value}")
    return value


class RedactSecrets:
    """structlog processor: mask registered secrets anywhere in the event dict.

    Runs after exceptions have been rendered to text or dicts, so tracebacks are covered.
    """

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        return {key: _redact_value(value) for key, value in event_dict.items()}


def _pre_chain(json_output: bool) -> list[Any]:
    exceptions: Any = (
        structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        if json_output
        else structlog.processors.format_exc_info
    )
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.PositionalArgumentsFormatter(),
        exceptions,
        RedactSecrets(),
    ]


def configure_logging(
    *,
    secrets: Iterable[str] = (),
    json_output: bool | None = None,
    level: str = "INFO",
    stream: Any = None,
) -> None:
    """Set up structlog and the stdlib root logger; ``json_output=None`` means "not a terminal"."""
    for value in secrets:
        register_secret(value)
    stream = stream if stream is not None else sys.stdout
    if json_output is None:
        json_output = not (hasattr(stream, "isatty") and stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json_output
        else structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    pre_chain = _pre_chain(json_output)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *pre_chain,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            RedactSecrets(),
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is chatty at INFO and carries query strings; keep it at WARNING.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
