"""Mapping is pure: tables of inputs and the records Chengjiyun must receive."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from syncd.core.mapping import (
    ClassChartsAccountPoll,
    PupilFacts,
    enrolment_year,
    grade_for,
    map_classcharts,
    map_epaas,
    parent_account_key,
    parse_class_number,
    school_year_start,
    student_account_key,
)
from syncd.core.roster import Roster, RosterRow


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("一班", 1),
        ("3班", 3),
        ("高一(3)班", 3),
        ("初二（5）班", 5),
        ("十二班", 12),
        ("二十一班", 21),
        ("十班", 10),
        ("二十班", 20),
        ("九十九班", 99),
        ("(10)班", 10),
        ("高三 12 班", 12),
        ("7", 7),
        ("2班", 2),
        ("初一（十一）班", 11),
        ("劳动", None),
        ("美术", None),
        ("", None),
        ("零班", None),
        ("班", None),
        ("高一", None),
    ],
)
def test_class_number(name: str, number: int | None) -> None:
    assert parse_class_number(name) == number


@pytest.mark.parametrize(
    ("grade_name", "year"),
    [
        ("2017级", 2017),
        ("2025 级", 2025),
        ("高中2019级", 2019),
        ("17级", None),
        ("", None),
        (None, None),
    ],
)
def test_enrolment_year(grade_name: str | None, year: int | None) -> None:
    assert enrolment_year(grade_name) == year


@pytest.mark.parametrize(
    ("today", "start"),
    [(dt.date(2026, 8, 31), 2025), (dt.date(2026, 9, 1), 2026), (dt.date(2027, 1, 15), 2026)],
)
def test_school_year_starts_on_1_september(today: dt.date, start: int) -> None:
    assert school_year_start(today) == start


@pytest.mark.parametrize(
    ("stage", "year", "today", "grade"),
    [
        (
            "初中",
            2025,
            dt.date(2026, 11, 23),
            8,
        ),  # November 2026: a 2025级 初中 class is in grade 8
        ("初中", 2025, dt.date(2026, 8, 31), 7),
        ("初中", 2026, dt.date(2026, 9, 1), 7),
        ("初中", 2023, dt.date(2026, 11, 1), None),  # graduated
        ("初中", 2027, dt.date(2026, 11, 1), None),  # not yet enrolled
        ("高中", 2026, dt.date(2026, 11, 1), 10),
        ("高中", 2024, dt.date(2026, 11, 1), 12),
        ("高中", 2023, dt.date(2026, 11, 1), None),
        ("小学", 2021, dt.date(2026, 11, 1), 6),
        ("小学", 2026, dt.date(2026, 11, 1), 1),
        ("大学", 2026, dt.date(2026, 11, 1), None),
    ],
)
def test_grade(stage: str, year: int, today: dt.date, grade: int | None) -> None:
    assert grade_for(stage, year, today) == grade


@dataclass(frozen=True)
class Teacher:
    userid: str
    name: str
    type: int
    subject: tuple[str, ...]


@dataclass(frozen=True)
class Klass:
    id: int
    class_name: str
    grade_name: str | None
    org_attribute_name: str | None
    teachers: tuple[Teacher, ...]


@dataclass(frozen=True)
class TypedKlass(Klass):
    department_type: int | None = 1


TODAY = dt.date(2026, 11, 23)


def test_epaas_teachers_and_class_statuses() -> None:
    zhang = Teacher("t1", "张三", 3, ("语文",))
    li = Teacher("t2", "李四", 4, ("数学", "物理"))
    mapped = map_epaas(
        [
            Klass(1, "一班", "2025级", "初中", (zhang, li)),
            Klass(2, "高一(3)班", "2026级", "高中", (li,)),
            Klass(3, "劳动", "2025级", "初中", (zhang,)),
            Klass(4, "二班", "2020级", "初中", (li,)),
            Klass(5, "三班", None, "初中", ()),
        ],
        id_prefix="ep-",
        today=TODAY,
        class_subjects={"2": 2},
    )
    assert set(mapped.users) == {"ep-t1", "ep-t2"}
    assert mapped.users["ep-t1"].pushed() == {"id": "ep-t1", "name": "张三", "roleList": ["教师"]}
    assert mapped.class_statuses["ep-class-1"].served() == {
        "year": 2025,
        "grade": 8,
        "class": 1,
        "headTeacher": "ep-t1",
        "subject": 0,
        "courseTeacherList": {"语文": "ep-t1", "数学": "ep-t2", "物理": "ep-t2"},
    }
    assert mapped.class_statuses["ep-class-2"].served()["subject"] == 2
    assert "headTeacher" not in mapped.class_statuses["ep-class-2"].served()
    assert mapped.class_statuses["ep-class-2"].head_teacher is None
    assert set(mapped.class_statuses) == {"ep-class-1", "ep-class-2"}
    warnings = "\n".join(mapped.warnings)
    assert "epaas class 2 '高一(3)班': no head teacher (type 3)" in warnings
    assert "epaas class 3 '劳动': the class name has no class number" in warnings
    assert "epaas class 4 '二班'" in warnings and "outside its stage" in warnings
    assert "epaas class 5 '三班'" in warnings and "no enrolment year" in warnings


def test_several_head_teachers_and_shared_subjects_are_resolved_with_a_warning() -> None:
    mapped = map_epaas(
        [
            Klass(
                1,
                "一班",
                "2025级",
                "初中",
                (Teacher("t9", "A", 3, ("语文",)), Teacher("t2", "B", 3, ("语文",))),
            )
        ],
        id_prefix="ep-",
        today=TODAY,
    )
    status = mapped.class_statuses["ep-class-1"]
    assert status.head_teacher == "ep-t2"
    assert dict(status.course_teachers) == {"语文": "ep-t2"}
    assert any("several head teachers" in w for w in mapped.warnings)
    assert any("语文 is taught by several teachers" in w for w in mapped.warnings)


def test_classcharts_parents_pupils_and_owners() -> None:
    parent = ClassChartsAccountPoll(
        "parent:mary@x.org",
        "parent",
        10,
        "Mary Lee",
        (PupilFacts(1, "Ann Lee"), PupilFacts(2, "Bob Lee")),
    )
    student = ClassChartsAccountPoll(
        "student:abc", "student", 2, "Bob Lee", (PupilFacts(2, "Bob Lee"),)
    )
    roster = Roster({1: RosterRow(1, school_id="20190101", gender="女", grade=7, class_no=3)})
    mapped = map_classcharts([parent, student], id_prefix="cc-", roster=roster)
    assert set(mapped.users) == {"cc-1", "cc-2", "cc-parent-10"}
    assert mapped.users["cc-1"].pushed() == {
        "id": "cc-1",
        "name": "Ann Lee",
        "roleList": ["学生"],
        "schoolId": "20190101",
        "gender": "女",
        "grade": 7,
        "class": 3,
    }
    assert mapped.users["cc-parent-10"].served()["studentList"] == ["cc-1", "cc-2"]
    assert "studentList" not in mapped.users["cc-parent-10"].pushed()
    assert mapped.users["cc-2"].owners == {"parent:mary@x.org", "student:abc"}
    assert mapped.users["cc-1"].owners == {"parent:mary@x.org"}


def test_empty_names_are_skipped_with_a_warning() -> None:
    mapped = map_classcharts(
        [ClassChartsAccountPoll("parent:a", "parent", 1, " ", (PupilFacts(5, ""),))],
        id_prefix="cc-",
    )
    assert mapped.users == {}
    assert len(mapped.warnings) == 2


def test_account_keys_hold_no_secret() -> None:
    assert parent_account_key(" Mary@X.org ") == "parent:mary@x.org"
    key = student_account_key("abcd1234", "pepper")
    assert key.startswith("student:") and "ABCD1234" not in key.upper().replace("STUDENT:", "")
    assert (
        key == student_account_key("ABCD1234", "pepper") != student_account_key("ABCD1234", "other")
    )


def test_teachers_of_course_classes_are_teachers_but_shape_no_class_status() -> None:
    head = Teacher("t1", "张三", 3, ("语文",))
    course_only = Teacher("t3", "王五", 4, ("化学",))
    mapped = map_epaas(
        [
            TypedKlass(1, "一班", "2025级", "初中", (head,), department_type=1),
            TypedKlass(7, "化学(3)班", "2025级", "初中", (course_only, head), department_type=8),
            TypedKlass(8, "选修", None, None, (Teacher("t4", "赵六", 3, ()),), department_type=8),
        ],
        id_prefix="ep-",
        today=TODAY,
    )
    assert set(mapped.users) == {"ep-t1", "ep-t3", "ep-t4"}
    assert all(u.roles == ("教师",) for u in mapped.users.values())
    assert set(mapped.class_statuses) == {"ep-class-1"}
    status = mapped.class_statuses["ep-class-1"]
    assert status.head_teacher == "ep-t1" and dict(status.course_teachers) == {"语文": "ep-t1"}
    assert not any("class 7" in w or "class 8" in w for w in mapped.warnings)


def test_a_class_without_department_type_counts_as_administrative() -> None:
    untyped = Klass(1, "一班", "2025级", "初中", (Teacher("t1", "张三", 3, ()),))
    unknown = TypedKlass(2, "二班", "2025级", "初中", (), department_type=None)
    mapped = map_epaas([untyped, unknown], id_prefix="ep-", today=TODAY)
    assert set(mapped.class_statuses) == {"ep-class-1", "ep-class-2"}


def test_the_warning_for_a_nameless_teacher_is_given_once() -> None:
    nameless = Teacher("t5", " ", 4, ())
    mapped = map_epaas(
        [Klass(n, f"{n}班", "2025级", "初中", (nameless,)) for n in (1, 2)],
        id_prefix="ep-",
        today=TODAY,
    )
    assert mapped.users == {}
    assert [w for w in mapped.warnings if "t5" in w] == ["epaas teacher t5: empty name; skipped"]
