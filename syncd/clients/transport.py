"""What the three clients share: one HTTP policy, bounded answers, errors in our vocabulary.

The policy in one place:

* which failures are worth trying again later (:func:`classify_failure`): timeouts, connection
  errors, HTTP 5xx and 429; every other 4xx is permanent for that request;
* how big an answer may be (:func:`read_bounded`): the cap is enforced *while reading*, so a
  misbehaving upstream cannot make us hold hundreds of megabytes;
* what a JSON answer may look like (:func:`parse_json`): JSON, and not nested so deep that the
  parser runs out of stack;
* timeouts and connection limits (:func:`make_session`);
* how a pydantic ValidationError reads in an error message (:func:`describe_validation_error`).

URLs are logged and reported without their query string, because epaas puts its access token
there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Self

import aiohttp
from pydantic import BaseModel, ConfigDict, ValidationError

from syncd import __version__
from syncd.exceptions import PayloadError, UpstreamError
from syncd.metrics import UPSTREAM_LATENCY, school_label

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "USER_AGENT",
    "Failure",
    "SessionClient",
    "UpstreamRecord",
    "classify_failure",
    "describe_size_limit",
    "describe_validation_error",
    "make_session",
    "parse_json",
    "read_bounded",
    "request_json",
]

USER_AGENT = f"syncd/{__version__} (school data sync; +https://github.com/syncd)"
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # 64 MiB: far above any real answer we expect
CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Failure:
    """Why a request failed, and whether trying again later may succeed."""

    reason: str
    transient: bool


def classify_failure(
    outcome: int | TimeoutError | aiohttp.ClientError, *, timeout_s: float | None = None
) -> Failure | None:
    """The one transient/permanent rule for an HTTP status or a transport exception.

    Returns None for a status that is not a failure (1xx-3xx). Overload (5xx), rate limiting
    (429), timeouts and broken connections are transient; any other 4xx is permanent.
    """
    if isinstance(outcome, aiohttp.ConnectionTimeoutError):
        return Failure("could not connect in time (connect timeout)", transient=True)
    if isinstance(outcome, TimeoutError):
        within = f"within {timeout_s:g} s " if timeout_s is not None else "in time "
        return Failure(f"no answer {within}(timeout)", transient=True)
    if isinstance(outcome, aiohttp.ClientError):
        return Failure(f"connection failed ({type(outcome).__name__})", transient=True)
    if outcome == 429:
        return Failure("HTTP 429 too many requests", transient=True)
    if outcome >= 500:
        return Failure(f"HTTP {outcome}", transient=True)
    if outcome >= 400:
        return Failure(f"HTTP {outcome}", transient=False)
    return None


def describe_size_limit(max_bytes: int) -> str:
    return (
        f"answer is larger than the limit of {max_bytes} bytes "
        f"({max_bytes / 2**20:g} MiB, max_response_bytes)"
    )


async def read_bounded(
    response: aiohttp.ClientResponse, service: str, call: str, max_bytes: int
) -> bytes:
    """The body, refused with a PayloadError as soon as it grows past ``max_bytes``.

    A Content-Length above the cap is refused before reading anything. The count is taken on
    the bytes as delivered (after any gzip decoding), so a small compressed bomb is caught too.
    """
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise PayloadError(service, call, describe_size_limit(max_bytes))
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        total += len(chunk)
        if total > max_bytes:
            raise PayloadError(service, call, describe_size_limit(max_bytes))
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(service: str, call: str, body: bytes) -> Any:
    """Parsed JSON, or a PayloadError that says what was wrong with the bytes."""
    try:
        return json.loads(body)
    except RecursionError as err:  # the C parser recurses once per nesting level
        raise PayloadError(service, call, "answer is nested too deep") from err
    except ValueError as err:
        snippet = body[:60].decode("utf-8", "replace")
        raise PayloadError(service, call, f"answer is not JSON: {snippet!r}") from err


def describe_validation_error(err: ValidationError, *, where: str = "data") -> str:
    """The first problem as ``location: message`` (no input values, which may be personal)."""
    problems = err.errors(include_url=False, include_input=False)
    first = problems[0]
    location = ".".join(str(part) for part in first["loc"]) or where
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{location}: {first['msg']}{more}"


def make_session(
    *,
    timeout_s: float = 30.0,
    connections_per_host: int = 4,
    cookie_jar: aiohttp.abc.AbstractCookieJar | None = None,
    connector: aiohttp.BaseConnector | None = None,
) -> aiohttp.ClientSession:
    """A ClientSession with a total timeout, a per-host connection cap and our User-Agent.

    Cookies are ignored unless a jar is passed: only ClassCharts uses them, and it passes
    ``aiohttp.CookieJar(unsafe=True)`` so that cookies from an IP-address host (the loopback
    sandbox) are kept too. A ``connector`` shared between sessions (one pool for many accounts)
    is left open when this session closes; its owner closes it.
    """
    return aiohttp.ClientSession(
        # sock_connect, not connect: aiohttp counts waiting for a pooled connection against
        # connect, and a busy pool is not an unreachable host.
        timeout=aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(10.0, timeout_s)),
        connector=connector or aiohttp.TCPConnector(limit_per_host=connections_per_host),
        connector_owner=connector is None,
        headers={"User-Agent": USER_AGENT},
        cookie_jar=cookie_jar if cookie_jar is not None else aiohttp.DummyCookieJar(),
    )


class UpstreamRecord(BaseModel):
    """A record from an upstream answer: the fields we need are typed, unknown extra ones kept
    (a source's client may drop them where they are many and never read)."""

    model_config = ConfigDict(extra="allow", frozen=True)


class SessionClient:
    """Owns one aiohttp session (made on first use), closed by ``close()`` or ``async with``."""

    _timeout_s: float
    _max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    _connections: int = 4  # per host: as many as requests may be in flight at once
    _session: aiohttp.ClientSession | None = None

    @property
    def connections(self) -> int:
        """Connections to its host at most: more requests at once only wait for one."""
        return self._connections

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = make_session(
                timeout_s=self._timeout_s, connections_per_host=self._connections
            )
        return self._session


async def request_json(
    session: aiohttp.ClientSession,
    service: str,
    call: str,
    method: str,
    url: str,
    *,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    expect_json: bool = True,
    **kwargs: Any,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """One request under the shared policy; failures become UpstreamError/PayloadError.

    Returns (status, parsed JSON or None for a redirect, response) — the response is already
    released; its headers and cookies stay readable. Redirects are never followed. With
    ``expect_json=False`` (a login form answered by an HTML page) the body is read, bounded,
    and not parsed: None is returned in its place.
    """
    started = time.perf_counter()
    try:
        async with session.request(method, url, allow_redirects=False, **kwargs) as response:
            failure = classify_failure(response.status)
            body = (
                b"" if failure else await read_bounded(response, service, call, max_response_bytes)
            )
    except (TimeoutError, aiohttp.ClientError) as err:
        broken = classify_failure(err, timeout_s=session.timeout.total)
        assert broken is not None
        raise UpstreamError(service, call, broken.reason, transient=broken.transient) from err
    finally:
        UPSTREAM_LATENCY.labels(org_id=school_label(), service=service).observe(
            time.perf_counter() - started
        )
    if failure is not None:
        raise UpstreamError(service, call, failure.reason, transient=failure.transient)
    if 300 <= response.status < 400 or not expect_json:
        return response.status, None, response
    return response.status, parse_json(service, call, body), response
