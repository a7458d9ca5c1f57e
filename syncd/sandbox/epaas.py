"""A fake epaas open platform: the token flow and the class/teacher calls, in memory.

Faults (``fake.faults.add(kind, path=..., value=...)``), besides those every fake has
(delay, status, rate_limited, malformed, huge, huge_declared, deep; see ``Fault``):

* ``"errcode"``: answer errcode ``value`` (default 60011) with errmsg "injected error";
* ``"errmsg"``: answer errcode 60011 with errmsg ``value`` verbatim (the upstream echoing a
  string, e.g. a secret, back in its message: for redaction tests);
* ``"repeat_last_page"`` (on ``/class/list``): the last page of a listing answers the same
  classes as the page before it, a "successful" answer whose ids repeat across pages and whose
  distinct count falls short of ``total``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from syncd.sandbox.base import FakeServer

__all__ = ["FakeClass", "FakeEpaas"]

Handler = Callable[[web.Request], Awaitable[web.Response]]

STAGE_ATTRIBUTE = {"小学": 1, "初中": 5, "高中": 3}


@dataclass
class FakeClass:
    id: int
    class_name: str
    grade_name: str
    stage: str
    department_type: int = 1
    parentid: int = 10
    grade_id: int = 0
    # userid -> (type, subjects)
    teachers: dict[str, tuple[int, list[str]]] = field(default_factory=dict)


def _ok(**body: Any) -> web.Response:
    return web.json_response({"errcode": 0, "errmsg": "ok", **body})


def _error(errcode: int, errmsg: str) -> web.Response:
    return web.json_response({"errcode": errcode, "errmsg": errmsg})


class FakeEpaas(FakeServer):
    def __init__(
        self,
        *,
        suite_id: str = "sandbox-suite",
        suite_secret: str = "sandbox-suite-secret",
        suite_ticket: str = "sandbox-ticket",
        auth_corpid: str = "sandbox-corp",
        permanent_code: str = "sandbox-permanent",
        token_ttl_s: int = 7200,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.suite = {
            "suite_id": suite_id,
            "suite_secret": suite_secret,
            "suite_ticket": suite_ticket,
        }
        self.corp = {"auth_corpid": auth_corpid, "permanent_code": permanent_code}
        self.token_ttl_s = token_ttl_s
        self.clock = clock
        self.classes: dict[int, FakeClass] = {}
        self.teachers: dict[str, str] = {}  # userid -> name
        self.students: dict[str, list[int]] = {}
        self._suite_tokens: set[str] = set()
        self._tokens: dict[str, float] = {}  # access token -> expires at
        self.token_requests = 0
        super().__init__()

    # --- data API ----------------------------------------------------------------------------

    def add_class(
        self, id: int, class_name: str, grade_name: str, stage: str, department_type: int = 1
    ) -> FakeClass:
        grade_id = 5_000_000 + int("".join(ch for ch in grade_name if ch.isdigit()) or 0)
        klass = FakeClass(id, class_name, grade_name, stage, department_type, grade_id=grade_id)
        self.classes[id] = klass
        return klass

    def add_teacher(self, userid: str, name: str) -> None:
        self.teachers[userid] = name

    def assign(self, class_id: int, userid: str, type: int, subjects: list[str]) -> None:
        self.classes[class_id].teachers[userid] = (type, list(subjects))

    def unassign(self, class_id: int, userid: str) -> None:
        self.classes[class_id].teachers.pop(userid, None)

    def remove_teacher(self, userid: str) -> None:
        self.teachers.pop(userid, None)
        for klass in self.classes.values():
            klass.teachers.pop(userid, None)

    def rename_class(self, class_id: int, class_name: str) -> None:
        self.classes[class_id].class_name = class_name

    def add_student(self, userid: str, class_ids: list[int]) -> None:
        self.students[userid] = list(class_ids)

    def expire_tokens(self) -> None:
        """Every issued token is rejected from now on (errcode 42001) until a new one is fetched."""
        for token in self._tokens:
            self._tokens[token] = 0.0

    # --- routes ------------------------------------------------------------------------------

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/service/get_suite_token", self._suite_token)
        app.router.add_post("/service/get_corp_token", self._corp_token)
        for path, handler in {
            "/user/class/get": self._user_class_get,
            "/class/list": self._class_list,
            "/teacher/class/list": self._teacher_class_list,
            "/class/teacher/list": self._class_teacher_list,
            "/student/class/list": self._student_class_list,
        }.items():
            app.router.add_get(path, self._guarded(handler))
        app.router.add_post("/class/teacher/batch_add", self._guarded(self._batch_add))
        app.router.add_post("/class/teacher/batch_delete", self._guarded(self._batch_delete))

    async def _suite_token(self, request: web.Request) -> web.Response:
        body = await request.json()
        if any(body.get(k) != v for k, v in self.suite.items()):
            return _error(40001, "invalid suite credential")
        token = secrets.token_hex(16)
        self._suite_tokens.add(token)
        return _ok(suite_access_token=token, expires_in=7200)

    async def _corp_token(self, request: web.Request) -> web.Response:
        if request.query.get("suite_access_token") not in self._suite_tokens:
            return _error(40014, "invalid suite_access_token")
        body = await request.json()
        if any(body.get(k) != v for k, v in self.corp.items()):
            return _error(40001, "invalid permanent_code")
        self.token_requests += 1
        token = secrets.token_hex(16)
        self._tokens[token] = self.clock() + self.token_ttl_s
        return _ok(access_token=token, expires_in=self.token_ttl_s)

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.Response:
            token = request.query.get("access_token")
            if token not in self._tokens:
                return _error(40014, "invalid access_token")
            if self._tokens[token] <= self.clock():
                return _error(42001, "access_token expired")
            fault = self.faults.take(request.path, ("errcode", "errmsg"))
            if fault is not None and fault.kind == "errmsg":
                return _error(60011, str(fault.value))
            if fault is not None:
                return _error(int(fault.number(60011)), "injected error")
            try:
                return await handler(request)
            except (KeyError, ValueError) as err:
                return _error(40003, f"invalid parameter: {err}")

        return guarded

    def _department(self, klass: FakeClass, query: Any) -> dict[str, Any]:
        info: dict[str, Any] = {"id": klass.id, "class_name": klass.class_name}
        school = "/沙盒学校"
        if query.get("full_path") == "1":
            info["full_id_path"] = f"/11807265/11807266/{klass.grade_id}/{klass.id}"
            info["full_path"] = f"{school}/学生/{klass.grade_name}/{klass.class_name}"
        if query.get("department_info") == "1":
            info.update(
                grade_id=klass.grade_id,
                grade_name=klass.grade_name,
                standard_grade=0,
                academic_dpt_id=5666173,
                academic_dpt_name=f"{klass.stage}部",
                org_attribute=STAGE_ATTRIBUTE.get(klass.stage, 0),
                org_attribute_name=klass.stage,
                campus_id=0,
                campus_name="",
            )
        return info

    @staticmethod
    def _type_matches(klass: FakeClass, department_type: str | None) -> bool:
        return department_type in (None, "", "0") or int(department_type) == klass.department_type

    async def _user_class_get(self, request: web.Request) -> web.Response:
        student, teacher = request.query["student_userid"], request.query["teacher_userid"]
        departments = [
            {"id": k.id, "class_name": k.class_name, "type": k.teachers[teacher][0]}
            for k in self.classes.values()
            if teacher in k.teachers and k.id in self.students.get(student, [])
        ]
        return _ok(departments=departments)

    async def _class_list(self, request: web.Request) -> web.Response:
        page, size = int(request.query["page_index"]), int(request.query["page_size"])
        if page < 1 or size < 1:
            return _error(40003, "page_index and page_size start from 1")
        matching = [
            k
            for k in sorted(self.classes.values(), key=lambda k: k.id)
            if self._type_matches(k, request.query["department_type"])
        ]
        last_page = max(1, -(-len(matching) // size))
        shown = page
        if page == last_page > 1 and self.faults.take(request.path, ("repeat_last_page",)):
            shown = page - 1
        chunk = matching[(shown - 1) * size : shown * size]
        departments = [
            {"id": k.id, "class_name": k.class_name, "parentid": k.parentid, "level": 4}
            for k in chunk
        ]
        return _ok(total=len(matching), departments=departments)

    async def _teacher_class_list(self, request: web.Request) -> web.Response:
        userid = request.query["teacher_userid"]
        departments = []
        for klass in sorted(self.classes.values(), key=lambda k: k.id):
            if userid in klass.teachers and self._type_matches(
                klass, request.query.get("department_type")
            ):
                kind, subjects = klass.teachers[userid]
                departments.append(
                    {
                        **self._department(klass, request.query),
                        "userid": userid,
                        "name": self.teachers.get(userid, ""),
                        "type": kind,
                        "subject": subjects,
                    }
                )
        return _ok(departments=departments)

    async def _class_teacher_list(self, request: web.Request) -> web.Response:
        klass = self.classes.get(int(request.query["department_id"]))
        if klass is None:
            return _error(60003, "department not found")
        departments = [
            {
                "id": klass.id,
                "userid": userid,
                "name": self.teachers.get(userid, ""),
                "type": kind,
                "subject": subjects,
            }
            for userid, (kind, subjects) in sorted(klass.teachers.items())
        ]
        return _ok(departments=departments)

    async def _student_class_list(self, request: web.Request) -> web.Response:
        class_ids = self.students.get(request.query["userid"], [])
        departments = [
            {
                **self._department(self.classes[cid], request.query),
                "department_type": self.classes[cid].department_type,
            }
            for cid in class_ids
            if self._type_matches(self.classes[cid], request.query.get("department_type"))
        ]
        return _ok(departments=departments)

    async def _batch_target(
        self, request: web.Request
    ) -> tuple[FakeClass | None, list[dict[str, Any]]]:
        body = await request.json()
        return self.classes.get(int(body["department_id"])), list(body.get("teachers", []))

    async def _batch_add(self, request: web.Request) -> web.Response:
        klass, teachers = await self._batch_target(request)
        if klass is None:
            return _error(60003, "department not found")
        results = []
        for teacher in teachers:
            if teacher["userid"] not in self.teachers:
                results.append(
                    {"errcode": 60111, "errmsg": "userid not found", "userid": teacher["userid"]}
                )
                continue
            klass.teachers[teacher["userid"]] = (
                int(teacher["type"]),
                list(teacher.get("subject", [])),
            )
            results.append({"errcode": 0, "errmsg": "OK", "userid": teacher["userid"]})
        return _ok(result_list=results)

    async def _batch_delete(self, request: web.Request) -> web.Response:
        klass, teachers = await self._batch_target(request)
        if klass is None:
            return _error(60003, "department not found")
        results = []
        for teacher in teachers:
            if klass.teachers.pop(teacher["userid"], None) is None:
                results.append(
                    {"errcode": 1, "errmsg": "班级不存在该教师", "userid": teacher["userid"]}
                )
            else:
                results.append({"errcode": 0, "errmsg": "OK", "userid": teacher["userid"]})
        return _ok(result_list=results)
