"""Optional roster CSV: per-pupil overrides (学号, gender, grade, class) for ClassCharts pupils.

ClassCharts does not expose these, so a school may keep them in a spreadsheet. Every problem is
reported with the file, the row as a spreadsheet shows it (header = row 1) and the column.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from syncd.exceptions import ConfigError

__all__ = ["Roster", "RosterRow", "load_roster"]

_COLUMNS = {
    "pupil_id": "pupil_id",
    "学号": "school_id",
    "school_id": "school_id",
    "gender": "gender",
    "性别": "gender",
    "grade": "grade",
    "年级": "grade",
    "class": "class_no",
    "班级": "class_no",
}


@dataclass(frozen=True, slots=True)
class RosterRow:
    pupil_id: int
    school_id: str | None = None
    gender: str | None = None
    grade: int | None = None
    class_no: int | None = None


@dataclass(frozen=True)
class Roster:
    rows: dict[int, RosterRow]

    def overrides_for(self, pupil_id: int) -> RosterRow | None:
        return self.rows.get(pupil_id)


def _integer(text: str, where: str, low: int, high: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(
            "classcharts.roster", f"{where}: {text!r} is not a whole number"
        ) from None
    if value < low or (high is not None and value > high):
        bounds = f"{low}–{high}" if high is not None else f"at least {low}"
        raise ConfigError("classcharts.roster", f"{where}: {value} is not {bounds}")
    return value


def load_roster(path: Path) -> Roster:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError("classcharts.roster", f"roster file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            "classcharts.roster", f"roster file {path} cannot be read as UTF-8: {err}"
        ) from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if not header:
        raise ConfigError(
            "classcharts.roster", f"{path}: the file is empty; row 1 must name the columns"
        )
    fields: list[str] = []
    for number, name in enumerate(header, start=1):
        key = _COLUMNS.get(name.strip())
        if key is None:
            raise ConfigError(
                "classcharts.roster",
                f"{path} row 1 column {number}: unknown column {name!r}; use pupil_id, 学号, gender, grade, class",
            )
        fields.append(key)
    if "pupil_id" not in fields:
        raise ConfigError("classcharts.roster", f"{path} row 1: the pupil_id column is missing")
    rows: dict[int, RosterRow] = {}
    school_ids: dict[str, int] = {}
    for line, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        cells = {field: value.strip() for field, value in zip(fields, values, strict=False)}
        where = f"{path} row {line}"
        pupil_id = _integer(cells.get("pupil_id", ""), f"{where} column pupil_id", 1)
        if pupil_id in rows:
            raise ConfigError(
                "classcharts.roster", f"{where} column pupil_id: pupil {pupil_id} is listed twice"
            )
        school_id = cells.get("school_id") or None
        if school_id is not None:
            if school_id in school_ids:
                raise ConfigError(
                    "classcharts.roster",
                    f"{where} column 学号: {school_id} is already used on row {school_ids[school_id]}",
                )
            school_ids[school_id] = line
        gender = cells.get("gender")
        if gender not in (None, "", "男", "女"):
            raise ConfigError(
                "classcharts.roster", f"{where} column gender: {gender!r} must be 男, 女 or empty"
            )
        grade = cells.get("grade")
        class_no = cells.get("class_no")
        rows[pupil_id] = RosterRow(
            pupil_id=pupil_id,
            school_id=school_id,
            gender=gender if gender else None,
            grade=_integer(grade, f"{where} column grade", 1, 12) if grade else None,
            class_no=_integer(class_no, f"{where} column class", 1) if class_no else None,
        )
    return Roster(rows)
