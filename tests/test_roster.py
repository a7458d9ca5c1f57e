"""Roster CSV overrides: valid files load; every problem names the file, row and column."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest

from syncd.core.mapping import map_epaas
from syncd.core.roster import Roster, load_roster, parse_roster
from syncd.exceptions import ConfigError


@dataclass(frozen=True)
class Klass:
    id: int
    class_name: str
    grade_name: str
    org_attribute_name: str
    teachers: tuple[()]


def write(tmp_path: Path, text: str, bom: bool = False) -> Path:
    path = tmp_path / "roster.csv"
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return path


def test_loads_with_bom_and_chinese_headers(tmp_path: Path) -> None:
    roster = load_roster(
        write(tmp_path, "pupil_id,学号,性别,年级,班级\n1001,20250001,男,7,3\n1002,,,,\n", bom=True)
    )
    row = roster.overrides_for(1001)
    assert row is not None and (row.school_id, row.gender, row.grade, row.class_no) == (
        "20250001",
        "男",
        7,
        3,
    )
    empty = roster.overrides_for(1002)
    assert empty is not None and empty.school_id is None and empty.grade is None
    assert roster.overrides_for(9) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pupil_id,house\n1,red\n", "row 1 column 2: unknown column 'house'"),
        ("学号\n1\n", "row 1: the pupil_id column is missing"),
        ("pupil_id\nabc\n", "row 2 column pupil_id: 'abc' is not a whole number"),
        ("pupil_id\n1\n1\n", "row 3 column pupil_id: pupil 1 is listed twice"),
        ("pupil_id,学号\n1,A1\n2,A1\n", "row 3 column 学号: A1 is already used on row 2"),
        ("pupil_id,gender\n1,M\n", "row 2 column gender: 'M' must be 男, 女 or empty"),
        ("pupil_id,grade\n1,13\n", "row 2 column grade: 13 is not 1–12"),
        ("pupil_id,class\n1,0\n", "row 2 column class: 0 is not at least 1"),
        ("", "the file is empty"),
    ],
)
def test_problems_name_row_and_column(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_roster(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_roster(tmp_path / "nope.csv")


def parse(text: str, today: dt.date = dt.date(2026, 11, 15)) -> Roster:
    return parse_roster(text, source_name="roster.csv", today=today)


@pytest.mark.parametrize(("today", "grade"), [(dt.date(2026, 11, 15), 8), (dt.date(2027, 9, 2), 9)])
def test_year_and_stage_give_the_grade_of_the_matching_class_status(
    today: dt.date, grade: int
) -> None:
    roster = parse("pupil_id,year,stage,class\n1001,2025,初中,3\n", today)
    row = roster.overrides_for(1001)
    assert row is not None and (row.grade, row.class_no) == (grade, 3)
    klass = Klass(1, "三班", "2025级", "初中", ())
    status = map_epaas([klass], id_prefix="ep-", today=today).class_statuses["ep-class-1"]
    assert status.grade == row.grade


def test_chinese_year_and_stage_headers_and_the_september_boundary() -> None:
    text = "pupil_id,入学年份,学段,班级\n1,2024,高中,2\n"
    assert parse(text, dt.date(2027, 8, 31)).rows[1].grade == 12
    graduated = parse(text, dt.date(2027, 9, 1))
    assert graduated.rows[1].grade is None and graduated.rows[1].class_no == 2
    assert graduated.warnings == (
        "roster.csv row 2: a 2024级 高中 pupil is outside its stage this school year "
        "(graduated or not yet enrolled); grade left unknown",
    )


def test_rows_may_leave_year_and_stage_empty() -> None:
    row = parse("pupil_id,year,stage\n1,,\n").rows[1]
    assert row.grade is None and not parse("pupil_id,year,stage\n1,,\n").warnings


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pupil_id,year\n1,2025\n", "row 1: year and stage go together; add stage"),
        ("pupil_id,stage\n1,初中\n", "row 1: year and stage go together; add year"),
        ("pupil_id,grade,year,stage\n1,7,2025,初中\n", "row 1: use either grade or year + stage"),
        (
            "pupil_id,year,stage\n1,2025,大学\n",
            "row 2 column stage: '大学' must be 小学, 初中 or 高中",
        ),
        ("pupil_id,year,stage\n1,2025,\n", "row 2 column stage: empty, but year is 2025"),
        ("pupil_id,year,stage\n1,,初中\n", "row 2 column year: empty, but stage is '初中'"),
        ("pupil_id,year,stage\n1,25,初中\n", "row 2 column year: 25 is not 1900–2999"),
        (
            "pupil_id,year,stage\n1,二〇二五,初中\n",
            "row 2 column year: '二〇二五' is not a whole number",
        ),
        ("pupil_id,grade,年级\n1,7,7\n", "row 1 column 3: column '年级' is given twice"),
    ],
)
def test_year_and_stage_problems_name_row_and_column(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert message in str(caught.value) and "roster.csv" in str(caught.value)
    assert caught.value.key == "classcharts.roster"


def test_parsing_is_pure_and_load_only_reads(tmp_path: Path) -> None:
    text = "pupil_id,year,stage\n1,2025,初中\n"
    path = write(tmp_path, text, bom=True)
    today = dt.date(2026, 11, 15)
    assert load_roster(path, today=today) == parse_roster(text, source_name=str(path), today=today)
    assert parse("\ufeff" + text).rows[1].grade == 8
