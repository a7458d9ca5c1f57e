"""epaas education open platform client: classes, teachers, who teaches what.

Token flow: suite_access_token → corp access_token, cached until shortly before
``expires_in``; an invalid/expired-token errcode refreshes once and retries once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import Field, ValidationError, field_validator

from syncd.clients.transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    SessionClient,
    UpstreamRecord,
    describe_validation_error,
    request_json,
)
from syncd.exceptions import PayloadError, UpstreamError
from syncd.log import get_logger, register_secret

__all__ = [
    "TOKEN_ERRCODES",
    "ClassInfo",
    "ClassTeacher",
    "EpaasClass",
    "EpaasClient",
    "EpaasSchool",
    "ItemResult",
    "TeacherAssignment",
    "TeacherClass",
    "UserClass",
    "fetch_school",
]

SERVICE = "epaas"
TOKEN_ERRCODES = frozenset({40001, 40014, 42001})  # invalid credential / token, token expired
TOKEN_MARGIN_S = 300.0  # refresh this long before the token expires
ADMINISTRATIVE_CLASS = 1  # 行政班
COURSE_CLASS = 8  # 课程班
TEACHING_GROUP = 10  # 教学班
# class/list takes one type at a time and does not say a class's type, so ask per type.
CLASS_LIST_TYPES = (ADMINISTRATIVE_CLASS, COURSE_CLASS, TEACHING_GROUP)

log = get_logger(__name__)


class UserClass(UpstreamRecord):
    id: int
    class_name: str
    type: int


class ClassInfo(UpstreamRecord):
    id: int
    class_name: str
    parentid: int | None = None
    level: int | None = None


def _first_if_list(value: Any) -> Any:
    # Seed 002 documents grade_name as "string list" but shows a string; accept both.
    if isinstance(value, list):
        return value[0] if value else None
    return value


class _DepartmentInfo(UpstreamRecord):
    id: int
    class_name: str
    full_id_path: str | None = None
    full_path: str | None = None
    grade_id: int | None = None
    grade_name: str | None = None
    standard_grade: int | str | None = None
    academic_dpt_id: int | None = None
    academic_dpt_name: str | None = None
    org_attribute: int | None = None
    org_attribute_name: str | None = None
    campus_id: int | None = None
    campus_name: str | None = None

    _grade_name = field_validator("grade_name", mode="before")(_first_if_list)


_Info = TypeVar("_Info", bound="_DepartmentInfo")


class TeacherClass(_DepartmentInfo):
    userid: str
    name: str
    type: int
    subject: list[str] = Field(default_factory=list)


class StudentClass(_DepartmentInfo):
    department_type: int | None = None


class ClassTeacherRecord(UpstreamRecord):
    id: int | None = None
    userid: str
    name: str
    type: int
    subject: list[str] = Field(default_factory=list)


class ItemResult(UpstreamRecord):
    errcode: int
    errmsg: str
    userid: str

    @property
    def ok(self) -> bool:
        return self.errcode == 0


@dataclass(frozen=True)
class TeacherAssignment:
    userid: str
    type: int
    subject: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClassTeacher:
    userid: str
    name: str
    type: int
    subject: tuple[str, ...]


@dataclass(frozen=True)
class EpaasClass:
    id: int
    class_name: str
    grade_name: str | None
    org_attribute_name: str | None
    teachers: tuple[ClassTeacher, ...]
    department_type: int = ADMINISTRATIVE_CLASS


@dataclass(frozen=True)
class EpaasSchool:
    classes: tuple[EpaasClass, ...]
    complete: bool
    warnings: tuple[str, ...]


def _parse_list(
    call: str, items: Any, model: type[UpstreamRecord], warnings: list[str]
) -> list[Any]:
    """Validate each record; a malformed one is skipped with a warning naming it."""
    if not isinstance(items, list):
        raise PayloadError(SERVICE, call, f"expected a list, got {type(items).__name__}")
    parsed = []
    for index, item in enumerate(items):
        try:
            parsed.append(model.model_validate(item))
        except ValidationError as err:
            ident = (
                item.get("id", item.get("userid", f"#{index}"))
                if isinstance(item, dict)
                else f"#{index}"
            )
            problem = describe_validation_error(err, where="record")
            warnings.append(f"epaas {call}: record {ident} skipped: {problem}")
    return parsed


class EpaasClient(SessionClient):
    def __init__(
        self,
        *,
        base_url: str,
        suite_id: str,
        suite_secret: str,
        suite_ticket: str,
        auth_corpid: str,
        permanent_code: str,
        page_size: int = 100,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._max_response_bytes = max_response_bytes
        self._suite = {
            "suite_id": suite_id,
            "suite_secret": suite_secret,
            "suite_ticket": suite_ticket,
        }
        self._corp = {"auth_corpid": auth_corpid, "permanent_code": permanent_code}
        for secret in (suite_secret, suite_ticket, permanent_code):
            register_secret(secret)
        self.page_size = page_size
        self._timeout_s = timeout_s
        self._clock = clock
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._token_lock = asyncio.Lock()
        self.warnings: list[str] = []

    async def _call_raw(
        self,
        call: str,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> dict[str, Any]:
        status, data, _ = await request_json(
            self._http(),
            SERVICE,
            call,
            method,
            f"{self._base_url}/{path}",
            max_response_bytes=self._max_response_bytes,
            params=params,
            json=body,
        )
        if data is None:
            raise UpstreamError(SERVICE, call, f"unexpected redirect (HTTP {status})")
        if not isinstance(data, dict) or "errcode" not in data:
            raise PayloadError(SERVICE, call, "answer has no errcode")
        return data

    async def _access_token(self, *, refresh: bool = False) -> str:
        async with self._token_lock:
            if not refresh and self._token and self._clock() < self._token_expires_at:
                return self._token
            suite = await self._call_raw(
                "get_suite_token", "POST", "service/get_suite_token", body=self._suite
            )
            self._check(suite, "get_suite_token")
            suite_token = suite.get("suite_access_token")
            if not isinstance(suite_token, str) or not suite_token:
                raise PayloadError(SERVICE, "get_suite_token", "answer has no suite_access_token")
            register_secret(suite_token)
            corp = await self._call_raw(
                "get_corp_token",
                "POST",
                "service/get_corp_token",
                params={"suite_access_token": suite_token},
                body=self._corp,
            )
            self._check(corp, "get_corp_token")
            token, expires_in = corp.get("access_token"), corp.get("expires_in", 7200)
            if not isinstance(token, str) or not token or not isinstance(expires_in, int):
                raise PayloadError(
                    SERVICE, "get_corp_token", "answer has no access_token/expires_in"
                )
            register_secret(token)
            self._token = token
            self._token_expires_at = self._clock() + max(0.0, expires_in - TOKEN_MARGIN_S)
            return token

    @staticmethod
    def _check(data: dict[str, Any], call: str) -> None:
        if data.get("errcode") != 0:
            raise UpstreamError(
                SERVICE, call, f"errcode {data.get('errcode')}: {data.get('errmsg', '')}"
            )

    async def _call(
        self,
        call: str,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> dict[str, Any]:
        """An API call with the corp token; one refresh-and-retry on a token errcode."""
        for attempt in (1, 2):
            token = await self._access_token(refresh=attempt == 2)
            data = await self._call_raw(
                call, method, path, params={**(params or {}), "access_token": token}, body=body
            )
            if data.get("errcode") in TOKEN_ERRCODES and attempt == 1:
                log.info(
                    "epaas token rejected; fetching a new one",
                    call=call,
                    errcode=data.get("errcode"),
                )
                continue
            self._check(data, call)
            return data
        raise AssertionError("unreachable")  # pragma: no cover

    # --- the seven calls -----------------------------------------------------------

    async def get_user_classes(self, student_userid: str, teacher_userid: str) -> list[UserClass]:
        data = await self._call(
            "user/class/get",
            "GET",
            "user/class/get",
            params={"student_userid": student_userid, "teacher_userid": teacher_userid},
        )
        return _parse_list("user/class/get", data.get("departments", []), UserClass, self.warnings)

    async def list_classes(self, department_type: int = 0) -> list[ClassInfo]:
        """Every class of the type, paging with page_index from 1 until ``total`` is reached.

        A "successful" paging can still be wrong: a page that repeats ids of an earlier one, or
        fewer distinct classes than ``total``. Either adds a warning (so the school counts as
        incomplete and nothing is deleted from it); repeated classes are kept once.
        """
        classes: dict[int, ClassInfo] = {}
        seen = 0
        repeated = 0
        total = 0
        page = 1
        while True:
            data = await self._call(
                "class/list",
                "GET",
                "class/list",
                params={
                    "department_type": department_type,
                    "page_index": page,
                    "page_size": self.page_size,
                },
            )
            items = data.get("departments", [])
            answer_total = data.get("total")
            if not isinstance(answer_total, int) or isinstance(answer_total, bool):
                raise PayloadError(SERVICE, "class/list", "answer has no integer total")
            total = answer_total
            seen += len(items) if isinstance(items, list) else 0
            for klass in _parse_list("class/list", items, ClassInfo, self.warnings):
                if klass.id in classes:
                    repeated += 1
                else:
                    classes[klass.id] = klass
            if seen >= total or not items:
                break
            page += 1
        if repeated:
            self.warnings.append(
                f"epaas class/list: repeated {repeated} class ids across pages "
                f"(total {total}, distinct {len(classes)})"
            )
        elif seen < total:
            self.warnings.append(
                f"epaas class/list: total says {total} but the pages ended after {seen}"
            )
        elif len(classes) < total:
            self.warnings.append(
                f"epaas class/list: fewer distinct classes than total "
                f"(total {total}, distinct {len(classes)})"
            )
        return list(classes.values())

    async def list_teacher_classes(
        self,
        teacher_userid: str,
        *,
        department_type: int = 0,
        full_path: bool = True,
        department_info: bool = True,
    ) -> list[TeacherClass]:
        return await self._person_classes(
            "teacher/class/list",
            TeacherClass,
            {"teacher_userid": teacher_userid},
            department_type,
            full_path,
            department_info,
        )

    async def list_class_teachers(self, department_id: int) -> list[ClassTeacherRecord]:
        data = await self._call(
            "class/teacher/list",
            "GET",
            "class/teacher/list",
            params={"department_id": department_id},
        )
        return _parse_list(
            "class/teacher/list", data.get("departments", []), ClassTeacherRecord, self.warnings
        )

    async def list_student_classes(
        self,
        userid: str,
        *,
        department_type: int = 0,
        full_path: bool = True,
        department_info: bool = True,
    ) -> list[StudentClass]:
        return await self._person_classes(
            "student/class/list",
            StudentClass,
            {"userid": userid},
            department_type,
            full_path,
            department_info,
        )

    async def _person_classes(
        self,
        call: str,
        model: type[_Info],
        person: dict[str, str],
        department_type: int,
        full_path: bool,
        department_info: bool,
    ) -> list[_Info]:
        """The classes of one teacher or one student: the two calls differ only in the id."""
        params = {
            **person,
            "department_type": department_type,
            "full_path": int(full_path),
            "department_info": int(department_info),
        }
        data = await self._call(call, "GET", call, params=params)
        return _parse_list(call, data.get("departments", []), model, self.warnings)

    async def _batch(
        self, call: str, department_id: int, teachers: Sequence[dict[str, Any]]
    ) -> list[ItemResult]:
        data = await self._call(
            call, "POST", call, body={"department_id": department_id, "teachers": list(teachers)}
        )
        return _parse_list(call, data.get("result_list", []), ItemResult, self.warnings)

    async def batch_add_class_teachers(
        self, department_id: int, teachers: Sequence[TeacherAssignment]
    ) -> list[ItemResult]:
        return await self._batch(
            "class/teacher/batch_add",
            department_id,
            [{"userid": t.userid, "type": t.type, "subject": list(t.subject)} for t in teachers],
        )

    async def batch_delete_class_teachers(
        self, department_id: int, teachers: Sequence[TeacherAssignment]
    ) -> list[ItemResult]:
        return await self._batch(
            "class/teacher/batch_delete",
            department_id,
            [{"userid": t.userid, "type": t.type} for t in teachers],
        )


async def fetch_school(client: EpaasClient) -> EpaasSchool:
    """Every class of every type (行政班 and 课程班) with its teachers and its grade/stage.

    Course classes are fetched too, so a teacher who teaches only course classes is seen; each
    class keeps its ``department_type`` for the mapping to tell them apart. class/list has no
    grade information, so it comes from teacher/class/list (with department_info, all types) of
    some teacher of each class; each teacher is asked at most once.
    """
    client.warnings.clear()
    typed: list[tuple[int, ClassInfo]] = []
    known: set[int] = set()
    for department_type in CLASS_LIST_TYPES:
        for klass in await client.list_classes(department_type):
            if klass.id not in known:  # a class listed under two types is kept under the first
                known.add(klass.id)
                typed.append((department_type, klass))
    classes = [klass for _, klass in typed]
    # As many at once as the pool has connections: a request's timeout starts when it is sent,
    # so hundreds of classes queued in a pool of four do not time out waiting for a connection.
    pool = asyncio.Semaphore(client.connections)

    async def teachers_of(class_id: int) -> list[ClassTeacherRecord]:
        async with pool:
            return await client.list_class_teachers(class_id)

    teacher_lists = await asyncio.gather(*(teachers_of(c.id) for c in classes))
    info: dict[int, TeacherClass] = {}
    asked: set[str] = set()
    for klass, teachers in zip(classes, teacher_lists, strict=True):
        for teacher in teachers:
            if klass.id in info:
                break
            if teacher.userid in asked:
                continue
            asked.add(teacher.userid)
            for entry in await client.list_teacher_classes(teacher.userid, department_type=0):
                info.setdefault(entry.id, entry)
    result = []
    for (department_type, klass), teachers in zip(typed, teacher_lists, strict=True):
        details = info.get(klass.id)
        result.append(
            EpaasClass(
                id=klass.id,
                class_name=klass.class_name,
                grade_name=details.grade_name if details else None,
                org_attribute_name=details.org_attribute_name if details else None,
                teachers=tuple(
                    ClassTeacher(t.userid, t.name, t.type, tuple(t.subject)) for t in teachers
                ),
                department_type=department_type,
            )
        )
    warnings = tuple(client.warnings)
    return EpaasSchool(classes=tuple(result), complete=not warnings, warnings=warnings)
