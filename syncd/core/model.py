"""Canonical records, in Chengjiyun's own shapes, shared by mapping, diff, store and server.

They are frozen and hashable so that diffing two snapshots is plain set and dict work.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "ADMIN_SOURCE",
    "PUSHED_USER_FIELDS",
    "ROLE_ADMIN",
    "ROLE_PARENT",
    "ROLE_STUDENT",
    "ROLE_TEACHER",
    "ROLES",
    "SOURCES",
    "ClassStatus",
    "Role",
    "User",
    "canonical_roles",
]


class Role(StrEnum):
    """Chengjiyun's four roles, declared in the order a ``roleList`` lists them."""

    ADMIN = "管理员"
    TEACHER = "教师"
    PARENT = "家长"
    STUDENT = "学生"


ROLE_ADMIN = Role.ADMIN
ROLE_TEACHER = Role.TEACHER
ROLE_PARENT = Role.PARENT
ROLE_STUDENT = Role.STUDENT
ROLES: tuple[Role, ...] = tuple(Role)

_ROLE_ORDER = {role.value: index for index, role in enumerate(Role)}


def canonical_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """Roles without repeats, ordered 管理员, 教师, 家长, 学生, so equal sets compare equal.

    A role Chengjiyun does not know (only from old stored data) sorts last rather than vanishing.
    """
    return _canonical(tuple(roles))


@functools.lru_cache(maxsize=256)
def _canonical(roles: tuple[str, ...]) -> tuple[str, ...]:
    # Every user is built through this (a 100,000-user cycle makes 200,000 of them), from a
    # handful of distinct role lists: cached, it costs a lookup instead of a set and a sort.
    unique = {str(role) for role in roles}
    return tuple(sorted(unique, key=lambda role: (_ROLE_ORDER.get(role, len(_ROLE_ORDER)), role)))


SOURCES = ("classcharts", "epaas")

# Owner of users that exist only because the config's [[admins]] names them.
ADMIN_SOURCE = "config"

# The user fields addUser/updateUser accept, in Chengjiyun's spelling.
PUSHED_USER_FIELDS = ("id", "name", "roleList", "schoolId", "gender", "grade", "class")


def _digest(data: dict[str, Any]) -> str:
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class User:
    """One Chengjiyun user. ``owners`` are the source accounts that reported it (not sent)."""

    id: str
    name: str
    roles: tuple[str, ...]
    source: str
    school_id: str | None = None
    gender: str | None = None
    grade: int | None = None
    class_no: int | None = None
    student_list: tuple[str, ...] = ()
    owners: frozenset[str] = field(default=frozenset(), compare=False)

    def __post_init__(self) -> None:
        # Canonical roles make a reordered roleList equal, so it is never sent as a change.
        roles = canonical_roles(self.roles)
        if roles != self.roles:
            object.__setattr__(self, "roles", roles)

    def pushed(self) -> dict[str, Any]:
        """The addUser object: only the fields that are known."""
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "roleList": list(self.roles),
        }
        if self.school_id is not None:
            data["schoolId"] = self.school_id
        if self.gender is not None:
            data["gender"] = self.gender
        if self.grade is not None:
            data["grade"] = self.grade
        if self.class_no is not None:
            data["class"] = self.class_no
        return data

    def served(self) -> dict[str, Any]:
        """The queryUsers object: the pushed fields, plus ``studentList`` for a parent."""
        data = self.pushed()
        if ROLE_PARENT in self.roles:
            data["studentList"] = list(self.student_list)
        return data

    def content_hash(self) -> str:
        return _digest(self.served())

    def to_json(self) -> dict[str, Any]:
        """Storage form: the served fields plus the internal ones."""
        return {**self.served(), "source": self.source, "owners": sorted(self.owners)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> User:
        return cls(
            id=data["id"],
            name=data["name"],
            roles=tuple(data["roleList"]),  # made canonical by __post_init__
            source=data["source"],
            school_id=data.get("schoolId"),
            gender=data.get("gender"),
            grade=data.get("grade"),
            class_no=data.get("class"),
            student_list=tuple(data.get("studentList", ())),
            owners=frozenset(data.get("owners", ())),
        )


@dataclass(frozen=True, slots=True)
class ClassStatus:
    """One administrative class as queryClassStatus serves it. ``key`` identifies the source class.

    Without a head teacher the ``headTeacher`` key is left out: Chengjiyun reads ``null`` as a
    teacher id.
    """

    key: str
    year: int
    grade: int
    class_no: int
    head_teacher: str | None
    subject: int = 0
    course_teachers: tuple[tuple[str, str], ...] = ()  # (subject name, teacher id), sorted

    def served(self) -> dict[str, Any]:
        data: dict[str, Any] = {"year": self.year, "grade": self.grade, "class": self.class_no}
        if self.head_teacher is not None:
            data["headTeacher"] = self.head_teacher
        data["subject"] = self.subject
        data["courseTeacherList"] = dict(self.course_teachers)
        return data

    def content_hash(self) -> str:
        return _digest(self.served())

    def to_json(self) -> dict[str, Any]:
        return {**self.served(), "key": self.key}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClassStatus:
        return cls(
            key=data["key"],
            year=data["year"],
            grade=data["grade"],
            class_no=data["class"],
            head_teacher=data.get("headTeacher"),
            subject=data.get("subject", 0),
            course_teachers=tuple(sorted(data.get("courseTeacherList", {}).items())),
        )
