"""A fake Chengjiyun vendor API: signed pushes applied to an in-memory user table.

Sign check: every query parameter except ``sign`` may be signed, but the pushes sign "only
orgId and timestamp" (只对orgId和timestamp签名), so addUser's ``platform`` is checked for
equality and left out of the signature. The SSO portal signs all its parameters (7200 s).

``users`` is the exact state: which users the fake holds, with their fields, after every
accepted push. ``drop_user`` removes one behind syncd's back (drift at Chengjiyun). An
``updateUser`` naming a user the fake does not hold is refused whole with 40001 (用户账号不存在);
a ``deleteUser`` of an unknown id is accepted (the API documents no code for it).

Faults (``fake.faults.add(kind, path=..., value=...)``), besides those every fake has
(delay, status, rate_limited, malformed, huge, huge_declared, deep; see ``Fault``):

* ``"busy"``: answer code 10002 (服务器忙) without applying the push;
* ``"code"``: answer code ``value`` (e.g. 30006) without applying the push; with
  ``times=None`` every push gets it (an account-wide refusal);
* ``"apply_then_delay"``: apply the push, then wait ``value`` seconds before answering, so a
  client with a shorter timeout never learns that it succeeded (an answer lost in doubt).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from syncd.core.signing import API_WINDOW_S, SSO_WINDOW_S, verify
from syncd.sandbox.base import FakeServer

__all__ = ["FakeChengjiyun", "Push"]

ROLES = {"管理员", "教师", "家长", "学生"}
PUSH_ENDPOINTS = ("addUser", "updateUser", "deleteUser", "update/classStatus")


@dataclass(frozen=True)
class Push:
    endpoint: str
    body: Any
    code: int
    at: float


def _answer(code: int, msg: str, data: Any = None) -> web.Response:
    body: dict[str, Any] = {"code": code, "msg": msg}
    if data is not None:
        body["data"] = data
    return web.json_response(body, dumps=lambda v: json.dumps(v, ensure_ascii=False))


class _Reject(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


class FakeChengjiyun(FakeServer):
    def __init__(
        self,
        *,
        platform: str = "sandbox",
        key: str = "sandbox-key",
        org_id: str = "sandbox-school",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.platform = platform
        self.key = key
        self.org_id = org_id
        self.clock = clock
        self.users: dict[str, dict[str, Any]] = {}
        self.pushes: list[Push] = []
        self.add_count: Counter[str] = Counter()
        self.class_status_notifies = 0
        self.reject_ids: dict[str, str] = {}
        super().__init__()

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/vendor-api/addUser", self._add_user)
        app.router.add_post("/vendor-api/updateUser", self._update_user)
        app.router.add_post("/vendor-api/deleteUser", self._delete_user)
        app.router.add_get("/vendor-api/update/classStatus", self._class_status)
        app.router.add_get("/portal/{platform}", self._portal)
        app.router.add_get("/mobile-portal/{platform}", self._portal)

    def drop_user(self, user_id: str) -> None:
        """Remove a user directly, as someone editing Chengjiyun by hand would (drift)."""
        self.users.pop(user_id, None)

    def accepted(self, endpoint: str) -> list[Push]:
        return [push for push in self.pushes if push.endpoint == endpoint and push.code == 0]

    # --- checks every push goes through -------------------------------------------------------

    def _check_query(self, request: web.Request, *, needs_platform: bool = False) -> None:
        query = dict(request.query)
        required = ["orgId", "timestamp", "sign"] + (["platform"] if needs_platform else [])
        missing = [name for name in required if not query.get(name)]
        if missing:
            raise _Reject(30002, f"参数解析错误: missing {', '.join(missing)}")
        if needs_platform and query["platform"] != self.platform:
            raise _Reject(30005, "参数值内容错误: platform")
        if query["orgId"] != self.org_id:
            raise _Reject(30005, "参数值内容错误: orgId")
        signed = {"orgId": query["orgId"], "timestamp": query["timestamp"], "sign": query["sign"]}
        if verify(signed, self.key, window_s=API_WINDOW_S, now=self.clock()) is not None:
            raise _Reject(30006, "验证失败")

    def _injected(self, request: web.Request) -> _Reject | None:
        if self.faults.take(request.path, ("busy",)) is not None or self.faults.roll_transient():
            return _Reject(10002, "服务器忙")
        coded = self.faults.take(request.path, ("code",))
        if coded is not None:
            return _Reject(int(coded.number(10001)), "injected code")
        return None

    async def _json_array(self, request: web.Request) -> list[Any]:
        try:
            body = json.loads(await request.read())
        except ValueError as err:
            raise _Reject(30003, "参数格式错误: body is not JSON") from err
        if not isinstance(body, list):
            raise _Reject(30003, "参数格式错误: body must be a JSON array")
        return body

    def _check_rejected(self, ids: list[str]) -> None:
        for user_id in ids:
            if user_id in self.reject_ids:
                raise _Reject(20002, f"数据无效: {user_id}: {self.reject_ids[user_id]}")

    async def _handle(
        self, request: web.Request, endpoint: str, apply: Callable[[Any], Any]
    ) -> web.Response:
        body: Any = None
        try:
            self._check_query(request, needs_platform=endpoint == "addUser")
            body = await self._json_array(request) if request.method == "POST" else None
            fault = self._injected(request)
            if fault is not None:
                raise fault
            apply(body)
        except _Reject as reject:
            self.pushes.append(Push(endpoint, body, reject.code, self.clock()))
            return _answer(reject.code, reject.msg)
        self.pushes.append(Push(endpoint, body, 0, self.clock()))
        late = self.faults.take(request.path, ("apply_then_delay",))
        if late is not None:
            await asyncio.sleep(late.number(1.0))
        return _answer(0, "success")

    # --- the four pushes ----------------------------------------------------------------------

    @staticmethod
    def _validate_user(user: Any, *, partial: bool) -> str:
        user_id = user.get("id") if isinstance(user, dict) else None
        if not isinstance(user_id, str) or not user_id:
            raise _Reject(20002, f"数据无效: user without an id: {user!r}")
        if not partial:
            if not isinstance(user.get("name"), str):
                raise _Reject(20002, f"数据无效: {user_id}: name missing")
            roles = user.get("roleList")
            if not isinstance(roles, list) or not roles or not set(roles) <= ROLES:
                raise _Reject(
                    20002, f"数据无效: {user_id}: roleList must use 管理员/教师/家长/学生"
                )
        for field in ("grade", "class"):
            value = user.get(field)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise _Reject(20002, f"数据无效: {user_id}: {field} must be an integer")
        if user.get("grade") is not None and not 1 <= user["grade"] <= 12:
            raise _Reject(20002, f"数据无效: {user_id}: grade must be 1-12")
        if user.get("gender") not in (None, "男", "女", ""):
            raise _Reject(20002, f"数据无效: {user_id}: gender must be 男, 女 or empty")
        return user_id

    async def _add_user(self, request: web.Request) -> web.Response:
        def apply(users: list[Any]) -> None:
            ids = [self._validate_user(user, partial=False) for user in users]
            self._check_rejected(ids)
            for user in users:
                self.users[user["id"]] = dict(user)
                self.add_count[user["id"]] += 1

        return await self._handle(request, "addUser", apply)

    async def _update_user(self, request: web.Request) -> web.Response:
        def apply(users: list[Any]) -> None:
            ids = [self._validate_user(user, partial=True) for user in users]
            self._check_rejected(ids)
            unknown = [user_id for user_id in ids if user_id not in self.users]
            if unknown:
                raise _Reject(40001, f"用户账号不存在: {', '.join(unknown)}")
            for user in users:
                self.users[user["id"]].update({k: v for k, v in user.items() if k != "roleList"})

        return await self._handle(request, "updateUser", apply)

    async def _delete_user(self, request: web.Request) -> web.Response:
        def apply(ids: list[Any]) -> None:
            if not all(isinstance(user_id, str) for user_id in ids):
                raise _Reject(20002, "数据无效: deleteUser takes an array of id strings")
            self._check_rejected(ids)
            for user_id in ids:
                self.users.pop(user_id, None)

        return await self._handle(request, "deleteUser", apply)

    async def _class_status(self, request: web.Request) -> web.Response:
        def apply(_: Any) -> None:
            self.class_status_notifies += 1

        return await self._handle(request, "update/classStatus", apply)

    # --- single sign-on -----------------------------------------------------------------------

    async def _portal(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        if request.match_info["platform"] != self.platform:
            return _answer(30005, "参数值内容错误: platform")
        missing = [
            name for name in ("orgId", "account", "timestamp", "sign") if not query.get(name)
        ]
        if missing:
            return _answer(30002, f"参数解析错误: missing {', '.join(missing)}")
        if query["orgId"] != self.org_id:
            return _answer(30005, "参数值内容错误: orgId")
        if verify(query, self.key, window_s=SSO_WINDOW_S, now=self.clock()) is not None:
            return _answer(30006, "验证失败")
        return _answer(0, "success", {"account": query["account"], "type": query.get("type")})
