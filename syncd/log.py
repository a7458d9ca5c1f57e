"""Logging: structlog for our events, stdlib loggers (aiohttp, APScheduler) routed through the same chain.

Formats (``[log] format``): ``journal`` under systemd (each line starts with its syslog priority so
``journalctl -p warning`` works; journald adds the time), ``json`` (one object per line),
``console`` (human-readable, coloured on a terminal unless ``NO_COLOR`` is set), and ``auto``
(journal when ``$JOURNAL_STREAM`` is set, console on a terminal, else json).

Every event passes :class:`RedactSecrets`, which masks each registered secret, wherever it occurs
(event text, fields, exception text and tracebacks), with ``***``. Redaction cost must not grow
with uptime: see :class:`Redactor`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, Literal

import structlog
from structlog.tracebacks import ExceptionDictTransformer

__all__ = [
    "MASK",
    "JournalRenderer",
    "LogFormat",
    "RedactSecrets",
    "Redactor",
    "configure_logging",
    "get_logger",
    "redact",
    "register_secret",
    "resolve_format",
]

MASK = "***"
_MIN_SECRET_LEN = 4  # shorter strings would mask ordinary words and numbers

LogFormat = Literal["auto", "journal", "json", "console"]

# A run-time token (session id, access token) is one opaque word of these characters.
_WORD_CHARS = r"A-Za-z0-9_\-"
_TOKEN_SHAPE = re.compile(rf"[{_WORD_CHARS}]{{16,}}")
# Words that may hold a token, %XX escapes included (tokens inside url-encoded cookies and URLs).
# (Leftmost-greedy matching already yields whole runs, so no look-behind is needed.)
_CANDIDATE = re.compile(rf"[{_WORD_CHARS}%]{{16,}}")
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
# Tokens named by their context are masked whether or not they were registered: ClassCharts'
# ``session_id`` (cookie JSON, ping meta) and ``Authorization: Basic <id>``, epaas'
# ``access_token``/``suite_access_token`` (query strings, JSON answers).
_CONTEXT_TOKEN = re.compile(
    r"(?P<name>session_id|suite_access_token|access_token|\bBasic)"
    r"(?P<sep>(?:[\"'\s:=]|%[0-9A-Fa-f]{2}){1,12})"
    rf"(?P<token>[{_WORD_CHARS}]{{16,}})"
)
_CONTEXT_NAMES = ("session_id", "access_token", "Basic")  # cheap test before the regex
# Fields that hold a secret by their name alone.
_SECRET_FIELDS = frozenset({"session_id", "access_token", "suite_access_token", "password"})


class Redactor:
    """Masks secrets in text at a cost that depends on the text, not on how many were seen.

    * Values that look like tokens (one word of 16+ ``[A-Za-z0-9_-]``: keys, session ids, access
      tokens) are matched as whole words (also between ``%XX`` escapes) by one scan and a dict
      lookup per word. The first ``pinned_tokens_max`` of them (the configured keys, registered at
      start) are kept for the process lifetime; later ones are run-time tokens, a new one every
      login, kept in an LRU of at most ``recent_max`` entries (O(1) insert).
    * Other values (passwords, codes, dates of birth) are pinned and matched anywhere in the text
      by one regex, recompiled only when that set changes (at most ``pinned_max``, oldest dropped).
    * Tokens named by their context (``session_id``, ``access_token``, ``Authorization: Basic``)
      are masked even after they fell out of the LRU.
    """

    def __init__(
        self, *, recent_max: int = 4096, pinned_tokens_max: int = 256, pinned_max: int = 1024
    ) -> None:
        self._lock = threading.Lock()
        self._recent_max = recent_max
        self._pinned_tokens_max = pinned_tokens_max
        self._pinned_max = pinned_max
        self._pinned_tokens: set[str] = set()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._pinned: OrderedDict[str, None] = OrderedDict()
        self._pinned_re: re.Pattern[str] | None = None

    @property
    def size(self) -> int:
        """How many values are held; bounded by the constructor's limits."""
        return len(self._pinned_tokens) + len(self._recent) + len(self._pinned)

    def add(self, value: str | None) -> None:
        if not value or len(value) < _MIN_SECRET_LEN:
            return
        with self._lock:
            if _TOKEN_SHAPE.fullmatch(value) is None:
                self._pin(value)
            elif value in self._pinned_tokens:
                return
            elif len(self._pinned_tokens) < self._pinned_tokens_max:
                self._pinned_tokens.add(value)
            else:
                self._recent[value] = None
                self._recent.move_to_end(value)
                if len(self._recent) > self._recent_max:
                    self._recent.popitem(last=False)

    def _pin(self, value: str) -> None:
        if value in self._pinned:
            return
        self._pinned[value] = None
        if len(self._pinned) > self._pinned_max:
            self._pinned.popitem(last=False)
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(self._pinned, key=len, reverse=True)
        self._pinned_re = re.compile("|".join(map(re.escape, ordered)))

    def redact(self, text: str) -> str:
        if len(text) < _MIN_SECRET_LEN:
            return text
        long_enough = len(text) >= 16
        if long_enough and any(name in text for name in _CONTEXT_NAMES):
            text = _CONTEXT_TOKEN.sub(_mask_context, text)
        spans: list[tuple[int, int]] = []
        if long_enough and (self._recent or self._pinned_tokens):
            spans += self._token_spans(text)
        pinned = self._pinned_re
        if pinned is not None:
            spans += (match.span() for match in pinned.finditer(text))
        return _mask_spans(text, spans) if spans else text

    def _known(self, word: str) -> bool:
        return word in self._recent or word in self._pinned_tokens

    def _token_spans(self, text: str) -> Iterator[tuple[int, int]]:
        for match in _CANDIDATE.finditer(text):
            word = match.group()
            if self._known(word):
                yield match.span()
            elif "%" in word:
                # a token between %XX escapes: url-encoded cookie JSON, query strings
                start = match.start()
                for part in _PERCENT_ESCAPE.split(word):
                    if self._known(part):
                        yield start, start + len(part)
                    start += len(part) + 3


def _mask_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each union of overlapping spans replaced by one MASK."""
    spans.sort()
    out: list[str] = []
    done = 0
    for start, end in spans:
        if end <= done:
            continue
        if start >= done:
            out += [text[done:start], MASK]
        done = end
    out.append(text[done:])
    return "".join(out)


def _mask_context(match: re.Match[str]) -> str:
    return f"{match.group('name')}{match.group('sep')}{MASK}"


_redactor = Redactor()


def register_secret(value: str | None) -> None:
    """Mask ``value`` in every later log line (passwords, keys, session ids as they change)."""
    _redactor.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret masked; for messages that leave the process."""
    return _redactor.redact(text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return _redactor.redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v) for v in value)
    if isinstance(value, BaseException):
        return _redactor.redact(f"{type(value).__name__}: {value}")
    return value


class RedactSecrets:
    """structlog processor: mask registered secrets anywhere in the event dict.

    Runs after exceptions have been rendered to text or dicts, so tracebacks are covered.
    """

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> dict[str, Any]:
        return {
            key: MASK if key in _SECRET_FIELDS and value else _redact_value(value)
            for key, value in event_dict.items()
        }


# syslog priorities, as journald reads them from a "<N>" line prefix
_PRIORITY = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "info": 6, "debug": 7}
_BARE_VALUE = re.compile(r"[^\s\"'=]+")


class JournalRenderer:
    """``<priority>message key=value ...``: no colour, no time (journald stamps each line).

    Every line of a multi-line event (a traceback) carries the priority, so journald files the
    whole event under it.
    """

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
        level = str(event_dict.pop("level", method_name)).lower()
        prefix = f"<{_PRIORITY.get(level, 6)}>"
        event_dict.pop("timestamp", None)
        message = str(event_dict.pop("event", ""))
        exception = event_dict.pop("exception", None)
        stack = event_dict.pop("stack", None)
        fields = " ".join(f"{key}={_field(value)}" for key, value in event_dict.items())
        text = f"{message} {fields}" if fields else message
        for extra in (stack, exception):
            if extra:
                text += "\n" + str(extra).rstrip("\n")
        return "\n".join(prefix + line for line in text.split("\n"))


def _field(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if _BARE_VALUE.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _is_tty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def resolve_format(fmt: str, stream: Any) -> Literal["journal", "json", "console"]:
    """The concrete format ``auto`` stands for on ``stream`` in this environment."""
    if fmt in ("journal", "json", "console"):
        return fmt  # type: ignore[return-value]
    if fmt != "auto":
        raise ValueError(f"unknown log format {fmt!r}; use auto, journal, json or console")
    if os.environ.get("JOURNAL_STREAM"):
        return "journal"
    return "console" if _is_tty(stream) else "json"


def _pre_chain(fmt: str) -> list[Any]:
    exceptions: Any = (
        structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        if fmt == "json"
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


def _renderer(fmt: str, stream: Any) -> Any:
    if fmt == "json":
        return structlog.processors.JSONRenderer(ensure_ascii=False)
    if fmt == "journal":
        return JournalRenderer()
    colors = _is_tty(stream) and not os.environ.get("NO_COLOR")
    return structlog.dev.ConsoleRenderer(
        colors=colors, exception_formatter=structlog.dev.plain_traceback
    )


def configure_logging(
    *,
    secrets: Iterable[str] = (),
    json_output: bool | None = None,
    level: str = "INFO",
    stream: Any = None,
    fmt: str = "auto",
) -> None:
    """Set up structlog and the stdlib root logger.

    ``fmt`` is one of auto, journal, json, console; ``json_output`` (older callers) forces json
    when true and console when false.
    """
    for value in secrets:
        register_secret(value)
    stream = stream if stream is not None else sys.stdout
    if json_output is not None:
        fmt = "json" if json_output else "console"
    concrete = resolve_format(fmt, stream)
    pre_chain = _pre_chain(concrete)
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
            _renderer(concrete, stream),
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
