"""Chengjiyun vendor API client: the pushes and the single-sign-on link.

Push methods never raise for upstream trouble: they classify the answer into a
:class:`PushResult` the outbox can act on (acknowledge, retry later, re-add, stop the whole
drain, or dead-letter). Each request is signed when it is *sent* (the timestamp is valid for
600 s), never when queued.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode

import aiohttp

from syncd.clients.transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    SessionClient,
    classify_failure,
    parse_json,
    read_bounded,
)
from syncd.config import Config
from syncd.core.signing import sign
from syncd.exceptions import PayloadError
from syncd.metrics import PUSH_ANSWERS, UPSTREAM_LATENCY, school_label

__all__ = [
    "ACCOUNT_REFUSED_CODES",
    "TRANSIENT_CODES",
    "ChengjiyunClient",
    "PushOutcome",
    "PushResult",
    "classify",
    "client_from_config",
]

SERVICE = "chengjiyun"
# 服务器忙, 服务器无响应, 操作超时, 网络异常: worth trying again later.
TRANSIENT_CODES = frozenset({10002, 10003, 10004, 10005})
# The whole account is refused, not the record: retrying other records is pointless and
# dead-lettering them would be wrong. Each code names its likely cause.
ACCOUNT_REFUSED_CODES = {
    30006: "check [chengjiyun] key and the server clock",  # 验证失败: the sign did not verify
    30005: "check [chengjiyun] org_id / platform",  # 参数值内容错误
    10006: "check the server's IP is allowed",  # IP地址无效或不匹配
}
ACCOUNT_REFUSED_STATUS = {
    401: "check [chengjiyun] key, platform and org_id (HTTP 401 unauthorized)",
    403: "check the server's IP is allowed and [chengjiyun] platform (HTTP 403 forbidden)",
}
USER_UNKNOWN = 40001  # 用户账号不存在


class PushOutcome(StrEnum):
    OK = "ok"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    ACCOUNT_REFUSED = "account_refused"  # stop the drain; every operation stays queued
    NOT_FOUND = "not_found"  # updateUser of a user Chengjiyun no longer has: re-add it


@dataclass(frozen=True)
class PushResult:
    outcome: PushOutcome
    code: int | None
    message: str
    http_status: int | None = None
    retry_after_s: float | None = None
    hint: str | None = None  # for ACCOUNT_REFUSED: which setting is the likely cause

    @property
    def ok(self) -> bool:
        return self.outcome is PushOutcome.OK


def _retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: either delay-seconds or an HTTP-date."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: fall back to our own backoff
    now = time.time() if now_s is None else now_s
    return max(0.0, when.timestamp() - now)


def classify(
    http_status: int,
    body: bytes,
    retry_after: str | None = None,
    *,
    endpoint: str | None = None,
    now_s: float | None = None,
) -> PushResult:
    """Turn one HTTP answer into a PushResult (pure, so every branch is tested directly).

    ``endpoint`` (``addUser``, ``updateUser``...) matters for code 40001: an update of an
    unknown user is NOT_FOUND (send the whole record again), a delete of one is done.
    """
    if http_status in ACCOUNT_REFUSED_STATUS:
        return PushResult(
            PushOutcome.ACCOUNT_REFUSED,
            None,
            f"HTTP {http_status}",
            http_status,
            hint=ACCOUNT_REFUSED_STATUS[http_status],
        )
    failure = classify_failure(http_status)
    if failure is not None:
        if failure.transient:
            return PushResult(
                PushOutcome.TRANSIENT,
                None,
                failure.reason,
                http_status,
                _retry_after(retry_after, now_s),
            )
        return PushResult(PushOutcome.PERMANENT, None, failure.reason, http_status)
    try:
        data = parse_json(SERVICE, endpoint or "push", body)
    except PayloadError as err:  # not JSON, or nested too deep: say which
        return PushResult(PushOutcome.PERMANENT, None, err.reason, http_status)
    try:
        code = int(data["code"])
        msg = str(data.get("msg", ""))
    except (KeyError, TypeError, ValueError, AttributeError):
        snippet = body[:80].decode("utf-8", "replace")
        return PushResult(
            PushOutcome.PERMANENT, None, f"answer is not Chengjiyun JSON: {snippet!r}", http_status
        )
    message = f"code {code}: {msg}"
    if code == 0:
        return PushResult(PushOutcome.OK, 0, msg or "success", http_status)
    if code in ACCOUNT_REFUSED_CODES:
        return PushResult(
            PushOutcome.ACCOUNT_REFUSED,
            code,
            message,
            http_status,
            hint=ACCOUNT_REFUSED_CODES[code],
        )
    if code in TRANSIENT_CODES:
        return PushResult(
            PushOutcome.TRANSIENT, code, message, http_status, _retry_after(retry_after, now_s)
        )
    if code == USER_UNKNOWN and endpoint == "updateUser":
        return PushResult(PushOutcome.NOT_FOUND, code, message, http_status)
    if code == USER_UNKNOWN and endpoint == "deleteUser":
        # The API documents no code for deleting an id it does not know; 40001 "user does not
        # exist" is the one that fits, and the user being gone is what the delete wanted.
        return PushResult(PushOutcome.OK, code, f"already gone ({message})", http_status)
    return PushResult(PushOutcome.PERMANENT, code, message, http_status)


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
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        connections: int = 4,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._max_response_bytes = max_response_bytes
        self._connections = connections
        self._platform = platform
        self._key = key
        self._org_id = org_id
        self._timeout_s = timeout_s
        self._clock = clock

    def _signed_params(self, *, with_platform: bool) -> dict[str, str]:
        # The pushes sign only orgId and timestamp; platform rides along unsigned.
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
                try:
                    payload = await read_bounded(
                        response, SERVICE, endpoint, self._max_response_bytes
                    )
                except PayloadError as err:  # over max_response_bytes: no answer we can read
                    result = PushResult(PushOutcome.PERMANENT, None, err.reason, response.status)
                else:
                    result = classify(
                        response.status,
                        payload,
                        response.headers.get("Retry-After"),
                        endpoint=endpoint,
                    )
        except (TimeoutError, aiohttp.ClientError) as err:
            failure = classify_failure(err, timeout_s=self._timeout_s)
            assert failure is not None
            result = PushResult(PushOutcome.TRANSIENT, None, failure.reason)
        finally:
            UPSTREAM_LATENCY.labels(org_id=school_label(), service=SERVICE).observe(
                time.perf_counter() - started
            )
        answer = result.code if result.code is not None else result.http_status
        PUSH_ANSWERS.labels(
            org_id=school_label(),
            endpoint=endpoint,
            answer=str(answer) if answer is not None else "none",
        ).inc()
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
        """A single-sign-on link (单点登录), valid for 7200 s from now."""
        params: dict[str, str] = {"orgId": self._org_id, "account": account}
        if stage:
            params["type"] = stage
        params["timestamp"] = str(int(self._clock()))
        portal = "mobile-portal" if mobile else "portal"
        return f"{self._base_url}/{portal}/{self._platform}?{urlencode({**params, 'sign': sign(params, self._key)})}"


def client_from_config(config: Config) -> ChengjiyunClient:
    section = config.chengjiyun
    return ChengjiyunClient(
        base_url=section.base_url,
        platform=section.platform,
        key=section.key.reveal(),
        org_id=section.org_id,
        timeout_s=section.timeout_s,
        max_response_bytes=section.max_response_bytes,
        # One connection per request the drain may have in flight, or they queue for one.
        connections=max(4, section.max_in_flight),
    )
