"""The one HTTP client policy every upstream client shares."""

from __future__ import annotations

import aiohttp

from syncd import __version__

__all__ = ["USER_AGENT", "make_session"]

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
