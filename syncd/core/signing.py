"""Chengjiyun's request signature (docs/protocols.md, "Sign").

PHP reference: ``ksort($data); md5(urldecode(http_build_query($data)) . '&key=' . $key)``.
``urldecode`` undoes the encoding, so the string signed is the raw ``k=v&k=v`` text, UTF-8
values (``role=学生``) included.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from urllib.parse import urlencode

__all__ = [
    "API_WINDOW_S",
    "SSO_WINDOW_S",
    "sign",
    "signed_query",
    "verify",
]

API_WINDOW_S = 600
SSO_WINDOW_S = 7200


def _string_to_sign(params: Mapping[str, object], key: str) -> str:
    pairs = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "sign")
    return f"{pairs}&key={key}"


def sign(params: Mapping[str, object], key: str) -> str:
    """MD5 (lowercase hex) of the sorted, unencoded ``k=v`` pairs plus ``&key=``; ``sign`` is skipped."""
    return hashlib.md5(_string_to_sign(params, key).encode("utf-8")).hexdigest()


def signed_query(params: Mapping[str, object], key: str) -> str:
    """The URL query string for ``params`` with its ``sign`` appended (values URL-encoded on the wire)."""
    return urlencode({**params, "sign": sign(params, key)})


def verify(
    params: Mapping[str, str],
    key: str,
    *,
    window_s: int = API_WINDOW_S,
    now: float | None = None,
) -> str | None:
    """Check an incoming request's ``sign`` and ``timestamp``; return why it fails, or None.

    Signs are compared in constant time. A timestamp further than ``window_s`` from now, in
    either direction, is stale.
    """
    given = params.get("sign", "")
    raw_ts = params.get("timestamp", "")
    try:
        timestamp = int(raw_ts)
    except ValueError:
        return "timestamp is not an integer"
    current = time.time() if now is None else now
    if abs(current - timestamp) > window_s:
        return f"timestamp is outside the {window_s} s window"
    expected = sign({k: v for k, v in params.items() if k != "sign"}, key)
    if not hmac.compare_digest(expected.encode(), given.lower().encode()):
        return "sign does not match"
    return None
