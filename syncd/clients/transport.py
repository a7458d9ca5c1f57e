"""What the ClassCharts and epaas clients share: one JSON request, errors in our vocabulary.

URLs are logged and reported without their query string, because epaas puts its access token
there.
"""

from __future__ import annotations

import json
import time
from typing import Any, Self

import aiohttp
from pydantic import BaseModel, ConfigDict

from syncd import __version__
from syncd.exceptions import PayloadError, UpstreamError
from syncd.metrics import UPSTREAM_LATENCY

__all__ = [
    "USER_AGENT",
    "SessionClient",
    "UpstreamRecord",
    "make_session",
    "parse_json",
    "request_json",
]

USER_AGENT = f"syncd/{__version__} (school data sync; +https://github.com/syncd)"


def make_session(
    *,
    timeout_s: float = 30.0,
    connections_per_host: int = 4,
    cookie_jar: aiohttp.abc.AbstractCookieJar | None = None,
) -> aiohttp.ClientSession:
    """A ClientSession with a total timeout, a per-host connection cap and our User-Agent.

    Cookies are ignored unless a jar is passed: only ClassCharts uses them, and it passes
    ``aiohttp.CookieJar(unsafe=True)`` so that cookies from an IP-address host (the loopback
    sandbox) are kept too.
    """
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout_s, connect=min(10.0, timeout_s)),
        connector=aiohttp.TCPConnector(limit_per_host=connections_per_host),
        headers={"User-Agent": USER_AGENT},
        cookie_jar=cookie_jar if cookie_jar is not None else aiohttp.DummyCookieJar(),
    )


class UpstreamRecord(BaseModel):
    """A record from an upstream answer: the fields we need are typed, unknown extra ones kept."""

    model_config = ConfigDict(extra="allow", frozen=True)


class SessionClient:
    """Owns one aiohttp session (made on first use), closed by ``close()`` or ``async with``."""

    _timeout_s: float
    _session: aiohttp.ClientSession | None = None

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
            self._session = make_session(timeout_s=self._timeout_s)
        return self._session


def parse_json(service: str, call: str, body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        snippet = body[:60].decode("utf-8", "replace")
        raise PayloadError(service, call, f"answer is not JSON: {snippet!r}") from None


async def request_json(
    session: aiohttp.ClientSession,
    service: str,
    call: str,
    method: str,
    url: str,
    **kwargs: Any,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """One request; 5xx, timeouts and connection errors become transient UpstreamErrors.

    Returns (status, parsed JSON or None for a redirect, response) — the response is already
    released; its headers and cookies stay readable.
    """
    started = time.perf_counter()
    try:
        async with session.request(method, url, allow_redirects=False, **kwargs) as response:
            body = await response.read()
    except TimeoutError:
        raise UpstreamError(service, call, "no answer in time (timeout)", transient=True) from None
    except aiohttp.ClientError as err:
        raise UpstreamError(
            service, call, f"connection failed ({type(err).__name__})", transient=True
        ) from None
    finally:
        UPSTREAM_LATENCY.labels(service=service).observe(time.perf_counter() - started)
    if response.status >= 500 or response.status == 429:  # overloaded or rate-limited: try later
        raise UpstreamError(service, call, f"HTTP {response.status}", transient=True)
    if 300 <= response.status < 400:
        return response.status, None, response
    if response.status >= 400:
        raise UpstreamError(service, call, f"HTTP {response.status}")
    return response.status, parse_json(service, call, body), response
