"""Roster CSV overrides: valid files load; every problem names the file, row and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.core.roster import load_roster
from syncd.exceptions import ConfigError


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
