"""Source records → canonical records. Pure: data in, data out, no I/O.

A record that cannot be mapped is skipped with a warning that names it; it never stops the rest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Literal, Protocol

from syncd.core.model import ADMIN_SOURCE, ClassStatus, Role, User, canonical_roles
from syncd.exceptions import ConfigError

__all__ = [
    "STAGE_BASE",
    "AdminLike",
    "AdminSpec",
    "ClassChartsAccountPoll",
    "DepartmentType",
    "MappedSource",
    "PupilFacts",
    "apply_admins",
    "apply_admins_by_source",
    "department_type",
    "enrolment_year",
    "grade_for",
    "map_classcharts",
    "map_epaas",
    "parent_account_key",
    "parse_class_number",
    "school_year_start",
    "student_account_key",
    "users_of_source",
]

HEAD_TEACHER = 3


class DepartmentType(IntEnum):
    """epaas ``department_type`` of a class."""

    ADMINISTRATIVE = 1  # 行政班: has a class status, head teacher and course teachers
    COURSE = 8  # 课程班/教学班: only its teachers matter


# Chengjiyun's grade scale: 1-6 小学, 7-9 初中 (7 = 初一), 10-12 高中 (10 = 高一).
STAGE_BASE = {"小学": 0, "初中": 6, "高中": 9}
STAGE_YEARS = {"小学": 6, "初中": 3, "高中": 3}


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PupilFacts:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class ClassChartsAccountPoll:
    """What one ClassCharts login reported. A student login reports its own pupil."""

    account_key: str
    kind: Literal["parent", "student"]
    user_id: int
    user_name: str
    pupils: tuple[PupilFacts, ...]


class TeacherLike(Protocol):
    @property
    def userid(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> int: ...
    @property
    def subject(self) -> Sequence[str]: ...


class EpaasClassLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def class_name(self) -> str: ...
    @property
    def grade_name(self) -> str | None: ...
    @property
    def org_attribute_name(self) -> str | None: ...
    @property
    def teachers(self) -> Sequence[TeacherLike]: ...


class RosterLike(Protocol):
    @property
    def warnings(self) -> tuple[str, ...]: ...
    def overrides_for(self, pupil_id: int) -> RosterOverrides | None: ...


class RosterOverrides(Protocol):
    @property
    def school_id(self) -> str | None: ...
    @property
    def gender(self) -> str | None: ...
    @property
    def grade(self) -> int | None: ...
    @property
    def class_no(self) -> int | None: ...


@dataclass(frozen=True)
class MappedSource:
    users: dict[str, User]
    class_statuses: dict[str, ClassStatus]
    warnings: tuple[str, ...]


# --- account keys: stable, and free of secrets -----------------------------------------------


def parent_account_key(email: str) -> str:
    return f"parent:{email.strip().lower()}"


def student_account_key(code: str, pepper: str) -> str:
    """A keyed hash, so the student's login code itself never reaches the database."""
    digest = hmac.new(pepper.encode(), code.strip().upper().encode(), hashlib.sha256).hexdigest()
    return f"student:{digest[:16]}"


# --- ClassCharts -----------------------------------------------------------------------------


def map_classcharts(
    accounts: Iterable[ClassChartsAccountPoll], *, id_prefix: str, roster: RosterLike | None = None
) -> MappedSource:
    """Pupils and parent accounts; a pupil seen from several accounts is one user with all owners."""
    users: dict[str, User] = {}
    warnings: list[str] = list(roster.warnings) if roster is not None else []

    def merge(user: User) -> None:
        known = users.get(user.id)
        users[user.id] = (
            user if known is None else replace(known, owners=known.owners | user.owners)
        )

    for account in accounts:
        owners = frozenset({account.account_key})
        pupil_ids = []
        for pupil in account.pupils:
            name = pupil.name.strip()
            if not name:
                warnings.append(f"classcharts pupil {pupil.id}: empty name; skipped")
                continue
            pupil_user = User(
                id=f"{id_prefix}{pupil.id}",
                name=name,
                roles=(Role.STUDENT,),
                source="classcharts",
                owners=owners,
            )
            overrides = roster.overrides_for(pupil.id) if roster is not None else None
            if overrides is not None:
                pupil_user = replace(
                    pupil_user,
                    school_id=overrides.school_id,
                    gender=overrides.gender,
                    grade=overrides.grade,
                    class_no=overrides.class_no,
                )
            merge(pupil_user)
            pupil_ids.append(pupil_user.id)
        if account.kind == "parent":
            name = account.user_name.strip()
            if not name:
                warnings.append(f"classcharts parent {account.user_id}: empty name; skipped")
                continue
            merge(
                User(
                    id=f"{id_prefix}parent-{account.user_id}",
                    name=name,
                    roles=(Role.PARENT,),
                    source="classcharts",
                    student_list=tuple(sorted(pupil_ids)),
                    owners=owners,
                )
            )
    return MappedSource(users=users, class_statuses={}, warnings=tuple(warnings))


# --- epaas -----------------------------------------------------------------------------------

_CHINESE_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_BRACKETED = re.compile(r"[(（]\s*([0-9]+|[零〇一二两三四五六七八九十]+)\s*[)）]")
_BEFORE_BAN = re.compile(r"([0-9]+|[零〇一二两三四五六七八九十]+)\s*班")
_ONLY_NUMBER = re.compile(r"^\s*([0-9]+)\s*$")


def _chinese_number(text: str) -> int | None:
    """一 … 九十九 (十二 = 12, 二十一 = 21, 二十 = 20); None if not a number we can read."""
    if text.isdigit():
        return int(text)
    if "十" not in text:
        return _CHINESE_DIGITS.get(text) if len(text) == 1 else None
    tens_text, _, units_text = text.partition("十")
    tens = 1 if tens_text == "" else _CHINESE_DIGITS.get(tens_text) if len(tens_text) == 1 else None
    units = (
        0 if units_text == "" else _CHINESE_DIGITS.get(units_text) if len(units_text) == 1 else None
    )
    if tens is None or units is None:
        return None
    return tens * 10 + units


def parse_class_number(class_name: str) -> int | None:
    """The class number in a class name, or None when the name has none (never guessed).

    A bracketed number wins ("高一(3)班" → 3, not the 一 of 高一); then the number right before
    班 ("十二班" → 12, "3班" → 3); then a bare number ("7" → 7).
    """
    for pattern in (_BRACKETED, _BEFORE_BAN, _ONLY_NUMBER):
        match = pattern.search(class_name)
        if match:
            number = _chinese_number(match.group(1))
            return number if number else None
    return None


def enrolment_year(grade_name: str | None) -> int | None:
    """ "2017级" → 2017; None when there is no four-digit year followed by 级."""
    if not grade_name:
        return None
    match = re.search(r"((?:19|20)[0-9]{2})\s*级", grade_name)
    return int(match.group(1)) if match else None


def school_year_start(today: dt.date) -> int:
    """The calendar year in which the current school year began (it starts on 1 September)."""
    return today.year if today.month >= 9 else today.year - 1


def grade_for(stage: str, year: int, today: dt.date) -> int | None:
    """Chengjiyun grade (1–12) of a class enrolled in ``year``; None if outside its stage."""
    base = STAGE_BASE.get(stage)
    if base is None:
        return None
    offset = school_year_start(today) - year + 1
    if not 1 <= offset <= STAGE_YEARS[stage]:
        return None
    return base + offset


def _stage(org_attribute_name: str | None) -> str | None:
    if not org_attribute_name:
        return None
    for stage in STAGE_BASE:
        if stage in org_attribute_name:
            return stage
    return None


def department_type(klass: object) -> int:
    """A class's epaas type; a class that does not say (older client) counts as administrative."""
    value = getattr(klass, "department_type", None)
    return DepartmentType.ADMINISTRATIVE if value is None else int(value)


def map_epaas(
    classes: Iterable[EpaasClassLike],
    *,
    id_prefix: str,
    today: dt.date,
    class_subjects: Mapping[str, int] | None = None,
) -> MappedSource:
    """Teachers of every class, of any type; one class status per administrative class only.

    Course and teaching classes share teachers with administrative ones, and a teacher who only
    teaches course classes is a teacher all the same.
    """
    class_subjects = class_subjects or {}
    users: dict[str, User] = {}
    statuses: dict[str, ClassStatus] = {}
    warnings: list[str] = []
    for klass in classes:
        _add_teachers(klass, id_prefix=id_prefix, users=users, warnings=warnings)
        if department_type(klass) != DepartmentType.ADMINISTRATIVE:
            continue
        label = f"epaas class {klass.id} {klass.class_name!r}"
        status, problem = _class_status(
            klass, id_prefix=id_prefix, today=today, subject=class_subjects.get(str(klass.id), 0)
        )
        if status is None:
            warnings.append(f"{label}: {problem}; class status skipped")
            continue
        if problem:
            warnings.append(f"{label}: {problem}")
        statuses[status.key] = status
    return MappedSource(users=users, class_statuses=statuses, warnings=tuple(warnings))


def _add_teachers(
    klass: EpaasClassLike, *, id_prefix: str, users: dict[str, User], warnings: list[str]
) -> None:
    for teacher in klass.teachers:
        user_id = f"{id_prefix}{teacher.userid}"
        if user_id in users:
            continue
        if not teacher.name.strip():
            warning = f"epaas teacher {teacher.userid}: empty name; skipped"
            if warning not in warnings:
                warnings.append(warning)
            continue
        users[user_id] = User(
            id=user_id,
            name=teacher.name.strip(),
            roles=(Role.TEACHER,),
            source="epaas",
            owners=frozenset({"epaas"}),
        )


def _class_status(
    klass: EpaasClassLike, *, id_prefix: str, today: dt.date, subject: int
) -> tuple[ClassStatus | None, str]:
    year = enrolment_year(klass.grade_name)
    if year is None:
        return None, f"grade_name {klass.grade_name!r} has no enrolment year like 2017级"
    stage = _stage(klass.org_attribute_name)
    if stage is None:
        return None, f"stage {klass.org_attribute_name!r} is not 小学, 初中 or 高中"
    grade = grade_for(stage, year, today)
    if grade is None:
        return (
            None,
            f"a {year}级 {stage} class is outside its stage this school year (graduated or not yet enrolled)",
        )
    class_no = parse_class_number(klass.class_name)
    if class_no is None:
        return None, "the class name has no class number"
    problems: list[str] = []
    heads = sorted(t.userid for t in klass.teachers if t.type == HEAD_TEACHER)
    if not heads:
        problems.append("no head teacher (type 3); served without headTeacher")
    if len(heads) > 1:
        problems.append(f"several head teachers {heads}; using {heads[0]}")
    courses: dict[str, str] = {}
    for teacher in sorted(klass.teachers, key=lambda t: (t.type != HEAD_TEACHER, t.userid)):
        for course in teacher.subject:
            course = course.strip()
            if not course:
                continue
            if course in courses:
                problems.append(f"{course} is taught by several teachers; using {courses[course]}")
                continue
            courses[course] = teacher.userid
    status = ClassStatus(
        key=f"{id_prefix}class-{klass.id}",
        year=year,
        grade=grade,
        class_no=class_no,
        head_teacher=f"{id_prefix}{heads[0]}" if heads else None,
        subject=subject,
        course_teachers=tuple(
            sorted((course, f"{id_prefix}{userid}") for course, userid in courses.items())
        ),
    )
    return status, "; ".join(problems)


# --- administrators --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdminSpec:
    """One ``[[admins]]`` entry: a synced user's id, or a new user's id and name."""

    id: str
    name: str | None = None


class AdminLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str | None: ...


def apply_admins(
    users: Mapping[str, User],
    admins: Sequence[AdminLike],
    *,
    known_ids: Set[str] = frozenset(),
) -> tuple[dict[str, User], list[str]]:
    """Give 管理员 to the synced users the config names; the others become users of their own.

    ``users`` are the users polled this cycle (every source together, so an admin is matched
    wherever it lives). ``known_ids`` are ids a source owns but did not report this cycle (it
    failed or was not polled): such an admin is neither created nor an error, so a failed poll
    never turns a teacher into a config user. A standalone admin has source ``config``.
    Raises ``ConfigError`` for an unmatched entry without a name, or an id listed twice.
    """
    result = dict(users)
    warnings: list[str] = []
    seen: dict[str, int] = {}
    for index, admin in enumerate(admins):
        key = f"admins[{index}]"
        admin_id = admin.id.strip()
        if admin_id in seen:
            raise ConfigError(
                f"{key}.id", f"{admin_id!r} is already listed as admins[{seen[admin_id]}]"
            )
        seen[admin_id] = index
        name = (admin.name or "").strip()
        known = result.get(admin_id)
        if known is not None:
            result[admin_id] = replace(known, roles=canonical_roles((*known.roles, Role.ADMIN)))
            if name and name != known.name:
                warnings.append(
                    f"{key}: {admin_id} is synced as {known.name!r}; the name {name!r} is not used"
                )
        elif admin_id in known_ids:
            continue
        elif name:
            result[admin_id] = User(
                id=admin_id,
                name=name,
                roles=(Role.ADMIN,),
                source=ADMIN_SOURCE,
                owners=frozenset({ADMIN_SOURCE}),
            )
        else:
            raise ConfigError(
                f"{key}.id",
                f"{admin_id!r} is not a synced user; give it a name to create it as an admin",
            )
    return result, warnings


def users_of_source(users: Mapping[str, User], source: str) -> dict[str, User]:
    """The users one source owns (after ``apply_admins``), which is what that source diffs."""
    return {user_id: user for user_id, user in users.items() if user.source == source}


def apply_admins_by_source(
    polled: Mapping[str, Mapping[str, User]],
    admins: Sequence[AdminLike],
    *,
    known_ids: Set[str] = frozenset(),
) -> tuple[dict[str, dict[str, User]], list[str]]:
    """``apply_admins`` over the sources polled this cycle, split back into what each diffs.

    ``polled`` maps a source name to its users; the result has the same sources plus
    ``config`` (the standalone admins, always present so removing one from the config deletes
    it). ``known_ids``: ids acknowledged for the real sources (not ``config``'s own).
    """
    merged = {user_id: user for users in polled.values() for user_id, user in users.items()}
    result, warnings = apply_admins(merged, admins, known_ids=known_ids)
    by_source = {source: users_of_source(result, source) for source in polled}
    by_source[ADMIN_SOURCE] = users_of_source(result, ADMIN_SOURCE)
    return by_source, warnings
