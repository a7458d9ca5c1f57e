"""A generated school for the demo, the end-to-end tests and the benchmarks.

Deterministic (seeded), so a test can name "pupil 1001" and know who that is.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

from syncd.core.mapping import school_year_start
from syncd.sandbox.chengjiyun import FakeChengjiyun
from syncd.sandbox.classcharts import FakeClassCharts
from syncd.sandbox.epaas import FakeEpaas

__all__ = ["School", "generate_school", "populate", "shaped", "write_config"]

SURNAMES = [
    "王",
    "李",
    "张",
    "刘",
    "陈",
    "杨",
    "黄",
    "赵",
    "吴",
    "周",
    "Smith",
    "Jones",
    "Patel",
    "Khan",
    "Brown",
]
GIVEN = [
    "伟",
    "芳",
    "娜",
    "敏",
    "静",
    "磊",
    "洋",
    "艳",
    "勇",
    "军",
    "Amelia",
    "Oliver",
    "Isla",
    "Noah",
    "Ava",
    "Leo",
]
SUBJECTS = ["语文", "数学", "英语", "物理", "化学", "生物", "历史", "地理", "政治"]
CHINESE = ["一", "二", "三", "四", "五", "六", "七", "八", "九", "十", "十一", "十二"]
PARENT_PASSWORD = "sandbox-parent-password"
# A teacher of the 课程班 alone: still a 教师 user, in no class status.
COURSE_ONLY_TEACHER = ("art-only", "美术老师")
STUDENT_DOB = "01/09/2012"


@dataclass
class SchoolClass:
    id: int
    class_name: str
    grade_name: str
    stage: str
    department_type: int = 1
    teachers: dict[str, tuple[int, list[str]]] = field(default_factory=dict)


@dataclass
class School:
    pupils: dict[int, tuple[str, str]]  # id -> (first name, last name)
    parents: dict[int, tuple[str, str, list[int]]]  # id -> (name, email, pupil ids)
    student_logins: dict[str, int]  # code -> pupil id
    teachers: dict[str, str]  # userid -> name
    classes: list[SchoolClass]


def generate_school(pupils: int = 300, *, seed: int = 7, today: dt.date | None = None) -> School:
    """About one parent account per 1.3 pupils (siblings share), a teacher per ~15 pupils."""
    rng = random.Random(seed)
    today = today or dt.date.today()
    names = {1000 + n: (rng.choice(GIVEN), rng.choice(SURNAMES)) for n in range(1, pupils + 1)}
    parents: dict[int, tuple[str, str, list[int]]] = {}
    ids = list(names)
    index, parent_id = 0, 500
    while index < len(ids):
        family = ids[index : index + (2 if rng.random() < 0.3 else 1)]
        index += len(family)
        parent_id += 1
        surname = names[family[0]][1]
        parents[parent_id] = (
            f"{rng.choice(GIVEN)} {surname}",
            f"parent{parent_id}@sandbox.invalid",
            family,
        )
    student_logins = {f"STU{pid:05d}": pid for pid in ids[:: max(1, len(ids) // 5)][:5]}

    teacher_count = max(4, pupils // 15)
    teachers = {
        f"t{n:03d}": f"{rng.choice(SURNAMES)}{rng.choice(GIVEN)}老师"
        for n in range(1, teacher_count + 1)
    }
    start = school_year_start(today)
    classes: list[SchoolClass] = []
    class_id = 100
    per_grade = max(1, teacher_count // 8)
    for stage, years in (("初中", 3), ("高中", 3)):
        for offset in range(years):
            year = start - offset
            for number in range(1, per_grade + 1):
                class_id += 1
                label = CHINESE[number - 1] if number <= len(CHINESE) else str(number)
                name = f"{label}班" if stage == "初中" else f"高{CHINESE[offset]}({number})班"
                classes.append(SchoolClass(class_id, name, f"{year}级", stage))
    classes.append(
        SchoolClass(class_id + 1, "劳动", f"{start}级", "初中")
    )  # no number: skipped with a warning
    classes.append(
        SchoolClass(class_id + 2, "美术", f"{start}级", "初中", department_type=8)
    )  # 课程班: its teachers are users; no class status
    userids = list(teachers)
    for n, klass in enumerate(classes):
        head = userids[n % len(userids)]
        klass.teachers[head] = (3, [SUBJECTS[n % len(SUBJECTS)]])
        for k in range(1, 4):
            teacher = userids[(n + k * 3) % len(userids)]
            if teacher not in klass.teachers:
                klass.teachers[teacher] = (4, [SUBJECTS[(n + k) % len(SUBJECTS)]])
    return School(names, parents, student_logins, teachers, classes)


def shaped(school: School, accounts: int | None) -> School:
    """``school`` as generated (None), or its pupils shared out among ``accounts`` parents.

    The benchmarks use it for the other account shape: a few accounts that each see thousands
    of pupils, instead of a family per account.
    """
    if accounts is None:
        return school
    ids = list(school.pupils)
    per = math.ceil(len(ids) / accounts)
    parents = {
        501 + n: (
            f"Parent {n + 1}",
            f"parent{501 + n}@sandbox.invalid",
            ids[n * per : (n + 1) * per],
        )
        for n in range(accounts)
    }
    return replace(school, parents=parents)


def populate(school: School, classcharts: FakeClassCharts, epaas: FakeEpaas) -> None:
    for pupil_id, (first, last) in school.pupils.items():
        classcharts.add_pupil(pupil_id, first, last)
    for parent_id, (name, email, pupil_ids) in school.parents.items():
        classcharts.add_parent(parent_id, name, email, PARENT_PASSWORD, pupil_ids)
    for code, pupil_id in school.student_logins.items():
        classcharts.add_student_login(pupil_id, code, STUDENT_DOB)
    for userid, name in school.teachers.items():
        epaas.add_teacher(userid, name)
    for klass in school.classes:
        epaas.add_class(
            klass.id, klass.class_name, klass.grade_name, klass.stage, klass.department_type
        )
        for userid, (kind, subjects) in klass.teachers.items():
            epaas.assign(klass.id, userid, kind, subjects)
    course = next(k for k in school.classes if k.department_type != 1)
    epaas.add_teacher(*COURSE_ONLY_TEACHER)
    epaas.assign(course.id, COURSE_ONLY_TEACHER[0], 4, ["美术"])


def write_config(
    path: Path,
    *,
    school: School,
    database: Path,
    classcharts_url: str,
    epaas_url: str,
    chengjiyun: FakeChengjiyun,
    chengjiyun_url: str,
    listen: str = "127.0.0.1:0",
    extra: str = "",
    parents: int | None = None,
) -> Path:
    """A syncd.toml for the sandbox. Secrets are written literally: they are the fakes' own."""
    parent_blocks = "".join(
        f'[[classcharts.parents]]\nemail = "{email}"\npassword = "{PARENT_PASSWORD}"\n'
        for _, email, _ in list(school.parents.values())[:parents]
    )
    student_blocks = "".join(
        f'[[classcharts.students]]\ncode = "{code}"\ndob = "{STUDENT_DOB}"\n'
        for code in school.student_logins
    )
    path.write_text(
        f"""[store]
path = "{database}"

[chengjiyun]
base_url = "{chengjiyun_url}"
platform = "{chengjiyun.platform}"
key = "{chengjiyun.key}"
org_id = "{chengjiyun.org_id}"
requests_per_second = 200
batch_size = 100
retry_base_s = 0.05
retry_max_s = 0.5

[server]
listen = "{listen}"

[classcharts]
base_url = "{classcharts_url}"
{parent_blocks}{student_blocks}
[epaas]
base_url = "{epaas_url}"
suite_id = "sandbox-suite"
suite_secret = "sandbox-suite-secret"
suite_ticket = "sandbox-ticket"
auth_corpid = "sandbox-corp"
permanent_code = "sandbox-permanent"

{extra}""",
        encoding="utf-8",
    )
    return path
