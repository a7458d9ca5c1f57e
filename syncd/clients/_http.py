"""What the ClassCharts and epaas clients share: one JSON request, errors in our vocabulary.

URLs are logged and reported without their query string, because epaas puts its access token
there.
"""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from syncd.exceptions import PayloadError, UpstreamError
from syncd.metrics import UPSTREAM_LATENCY

__all__ = ["parse_json", "request_json"]


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
        raise UpstreamError(service, call, f"connection failed ({type(err).__name__})", transient=True) from None
    finally:
        UPSTREAM_LATENCY.labels(service=service).observe(time.perf_counter() - started)
    if response.status >= 500:
        raise UpstreamError(service, call, f"HTTP {response.status}", transient=True)
    if 300 <= response.status < 400:
        return response.status, None, response
    if response.status >= 400:
        raise UpstreamError(service, call, f"HTTP {response.status}")
    return response.status, parse_json(service, call, body), response
