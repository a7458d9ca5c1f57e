"""Canonical records, in Chengjiyun's own shapes (seed 003), shared by mapping, diff, store and server.

They are frozen and hashable so that diffing two snapshots is plain set and dict work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PUSHED_USER_FIELDS",
    "ROLE_ADMIN",
    "ROLE_PARENT",
    "ROLE_STUDENT",
    "ROLE_TEACHER",
    "ROLES",
    "SOURCES",
    "ClassStatus",
    "User",
]

ROLE_STUDENT = "学生"
ROLE_TEACHER = "教师"
ROLE_ADMIN = "管理员"
ROLE_PARENT = "家长"
ROLES = (ROLE_STUDENT, ROLE_TEACHER, ROLE_ADMIN, ROLE_PARENT)

SOURCES = ("classcharts", "epaas")

# The user fields addUser/updateUser accept (seed 003), in Chengjiyun's spelling.
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

    def pushed(self) -> dict[str, Any]:
        """The addUser object: only the fields that are known."""
        data: dict[str, Any] = {"id": self.id, "name": self.name, "roleList": list(self.roles)}
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
            roles=tuple(data["roleList"]),
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
    """One administrative class as queryClassStatus serves it. ``key`` identifies the source class."""

    key: str
    year: int
    grade: int
    class_no: int
    head_teacher: str | None
    subject: int = 0
    course_teachers: tuple[tuple[str, str], ...] = ()  # (subject name, teacher id), sorted

    def served(self) -> dict[str, Any]:
        return {
            "year": self.year,
            "grade": self.grade,
            "class": self.class_no,
            "headTeacher": self.head_teacher,
            "subject": self.subject,
            "courseTeacherList": dict(self.course_teachers),
        }

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
