"""The few domain errors syncd raises.

Library errors (aiohttp, sqlite, pydantic) are re-raised as one of these ``from err`` at the edge
where they happen, so callers handle one vocabulary. Messages name the service, the call and the
reason, and never contain a secret.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "AuthError",
    "ConfigError",
    "PayloadError",
    "StoreError",
    "SyncLockedError",
    "SyncdError",
    "UpstreamError",
]


class SyncdError(Exception):
    """Base of every error syncd raises on purpose."""


class ConfigError(SyncdError):
    """The configuration cannot be used. ``key`` is the dotted path of the offending key."""

    def __init__(self, key: str, reason: str, *, more: tuple[tuple[str, str], ...] = ()) -> None:
        self.key = key
        self.reason = reason
        self.problems = ((key, reason), *more)  # every problem found, the first one first
        text = f"{key}: {reason}" if key else reason
        if more:
            text += f" (and {len(more)} more problem(s): `syncd check-config` lists them all)"
        super().__init__(text)


class UpstreamError(SyncdError):
    """A call to ClassCharts, epaas or Chengjiyun failed.

    ``transient`` says whether trying again later may succeed (timeouts, 5xx, busy codes).
    """

    def __init__(self, service: str, call: str, reason: str, *, transient: bool = False) -> None:
        self.service = service
        self.call = call
        self.reason = reason
        self.transient = transient
        super().__init__(f"{service} {call}: {reason}")


class AuthError(UpstreamError):
    """Login failed or the session was not accepted even after one fresh login."""


class PayloadError(UpstreamError):
    """The service answered, but not in the shape its documentation promises."""


class ApiError(SyncdError):
    """A pull-API request we refuse, answered as ``{"code": code, "msg": msg}`` (codes in docs/protocols.md)."""

    def __init__(self, code: int, msg: str) -> None:
        self.code = code
        self.msg = msg
        super().__init__(f"{code} {msg}")


class StoreError(SyncdError):
    """The database cannot be opened, read or written; the message names the file and what to do."""


class SyncLockedError(SyncdError):
    """Another syncd process is already syncing this database (``pid`` holds the lock)."""

    def __init__(self, message: str, pid: int | None) -> None:
        self.pid = pid
        super().__init__(message)
