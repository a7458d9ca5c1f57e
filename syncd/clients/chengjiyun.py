"""Chengjiyun vendor API client (seed 003): the pushes and the single-sign-on link.

Push methods never raise for upstream trouble: they classify the answer into a
:class:`PushResult` the outbox can act on (acknowledge, retry later, or dead-letter).
Each request is signed when it is *sent* (the timestamp is valid for 600 s), never when queued.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TextIO
from urllib.parse import urlencode

import aiohttp

from syncd.clients.transport import SessionClient
from syncd.core.signing import sign
from syncd.metrics import UPSTREAM_LATENCY

__all__ = [
    "TRANSIENT_CODES",
    "ChengjiyunClient",
    "PushOutcome",
    "PushResult",
    "classify",
    "client_from_config",
    "sso_url_command",
]

SERVICE = "chengjiyun"
# 服务器忙, 服务器无响应, 操作超时, 网络异常: worth trying again later.
TRANSIENT_CODES = frozenset({10002, 10003, 10004, 10005})


class PushOutcome(StrEnum):
    OK = "ok"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    ACCOUNT_REFUSED = "account_refused"
    NOT_FOUND = "not_found"


ACCOUNT_HINTS = {
    30005: "check [chengjiyun] org_id and platform",
    30006: "check [chengjiyun] key and the server clock",
    10006: "check that Chengjiyun allows this server's IP address",
}


@dataclass(frozen=True)
class PushResult:
    outcome: PushOutcome
    code: int | None
    message: str
    http_status: int | None = None
    retry_after_s: float | None = None
    hint: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is PushOutcome.OK


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date: fall back to our own backoff


def classify(http_status: int, body: bytes, retry_after: str | None = None) -> PushResult:
    """Turn one HTTP answer into a PushResult (pure, so every branch is tested directly)."""
    if http_status == 429:
        return PushResult(
            PushOutcome.TRANSIENT,
            None,
            "HTTP 429 too many requests",
            429,
            _retry_after(retry_after),
        )
    if http_status >= 500:
        return PushResult(
            PushOutcome.TRANSIENT,
            None,
            f"HTTP {http_status}",
            http_status,
            _retry_after(retry_after),
        )
    if http_status in (401, 403):
        return PushResult(
            PushOutcome.ACCOUNT_REFUSED,
            None,
            f"HTTP {http_status}",
            http_status,
            hint="check [chengjiyun] key, platform, org_id and that this server's IP is allowed",
        )
    if http_status >= 400:
        return PushResult(PushOutcome.PERMANENT, None, f"HTTP {http_status}", http_status)
    try:
        data = json.loads(body)
        code = int(data["code"])
        msg = str(data.get("msg", ""))
    except (ValueError, KeyError, TypeError):
        snippet = body[:80].decode("utf-8", "replace")
        return PushResult(
            PushOutcome.PERMANENT, None, f"answer is not Chengjiyun JSON: {snippet!r}", http_status
        )
    if code == 0:
        return PushResult(PushOutcome.OK, 0, msg or "success", http_status)
    if code in ACCOUNT_HINTS:
        return PushResult(
            PushOutcome.ACCOUNT_REFUSED,
            code,
            f"code {code}: {msg}",
            http_status,
            hint=ACCOUNT_HINTS[code],
        )
    if code == 40001:
        return PushResult(PushOutcome.NOT_FOUND, code, f"code {code}: {msg}", http_status)
    outcome = PushOutcome.TRANSIENT if code in TRANSIENT_CODES else PushOutcome.PERMANENT
    return PushResult(outcome, code, f"code {code}: {msg}", http_status)


class ChengjiyunClient(SessionClient):
    """One school's (one orgId's) connection to Chengjiyun."""

    def __init__(
        self,
        *,
        base_url: str,
        platform: str,
        key: str,
        org_id: str,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._platform = platform
        self._key = key
        self._org_id = org_id
        self._timeout_s = timeout_s
        self._clock = clock

    def _signed_params(self, *, with_platform: bool) -> dict[str, str]:
        # Seed 003: the pushes sign only orgId and timestamp; platform rides along unsigned.
        params = {"orgId": self._org_id, "timestamp": str(int(self._clock()))}
        signed = {**params, "sign": sign(params, self._key)}
        return {"platform": self._platform, **signed} if with_platform else signed

    async def _send(
        self, method: str, endpoint: str, body: Any = None, *, with_platform: bool = False
    ) -> PushResult:
        url = f"{self._base_url}/vendor-api/{endpoint}"
        started = time.perf_counter()
        try:
            async with self._http().request(
                method,
                url,
                params=self._signed_params(with_platform=with_platform),
                json=body,
                allow_redirects=False,
            ) as response:
                payload = await response.read()
                result = classify(response.status, payload, response.headers.get("Retry-After"))
        except TimeoutError:
            result = PushResult(
                PushOutcome.TRANSIENT, None, f"no answer within {self._timeout_s:g} s"
            )
        except aiohttp.ClientError as err:
            result = PushResult(
                PushOutcome.TRANSIENT, None, f"connection failed: {type(err).__name__}"
            )
        finally:
            UPSTREAM_LATENCY.labels(service=SERVICE).observe(time.perf_counter() - started)
        return result

    async def add_users(self, users: list[dict[str, Any]]) -> PushResult:
        return await self._send("POST", "addUser", users, with_platform=True)

    async def update_users(self, users: list[dict[str, Any]]) -> PushResult:
        return await self._send("POST", "updateUser", users)

    async def delete_users(self, ids: list[str]) -> PushResult:
        return await self._send("POST", "deleteUser", ids)

    async def notify_class_status(self) -> PushResult:
        return await self._send("GET", "update/classStatus")

    def sso_url(self, account: str, *, mobile: bool = False, stage: str | None = None) -> str:
        """A single-sign-on link, valid for 7200 s from now (seed 003 单点登录)."""
        params: dict[str, str] = {"orgId": self._org_id, "account": account}
        if stage:
            params["type"] = stage
        params["timestamp"] = str(int(self._clock()))
        portal = "mobile-portal" if mobile else "portal"
        return f"{self._base_url}/{portal}/{self._platform}?{urlencode({**params, 'sign': sign(params, self._key)})}"


def client_from_config(config: Any) -> ChengjiyunClient:
    section = config.chengjiyun
    return ChengjiyunClient(
        base_url=section.base_url,
        platform=section.platform,
        key=section.key.reveal(),
        org_id=section.org_id,
        timeout_s=section.timeout_s,
    )


async def sso_url_command(config: Any, args: Any, out: TextIO) -> int:
    """``syncd sso-url ACCOUNT [--mobile] [--stage 高中]``: print the link; it logs the user in."""
    client = client_from_config(config)
    out.write(client.sso_url(args.account, mobile=args.mobile, stage=args.stage) + "\n")
    return 0
