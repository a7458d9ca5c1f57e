"""Optional roster CSV: per-pupil overrides (学号, gender, grade, class) for ClassCharts pupils.

ClassCharts does not expose these, so a school may keep them in a spreadsheet. A grade is given
directly (``grade``) or as 入学年份 + stage (``year`` + ``stage``), computed by the same rule as a
class status's grade so pupils move up every 1 September together with their classes. Every
problem is reported with the file, the row as a spreadsheet shows it (header = row 1) and the
column. ``parse_roster`` is pure; ``load_roster`` only reads the file.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from syncd.core.mapping import STAGE_BASE, grade_for
from syncd.exceptions import ConfigError

__all__ = ["Roster", "RosterRow", "load_roster", "parse_roster"]

_KEY = "classcharts.roster"

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
    "year": "year",
    "入学年份": "year",
    "stage": "stage",
    "学段": "stage",
}
_COLUMN_LIST = "pupil_id, 学号, gender, grade, class, year, stage"


@dataclass(frozen=True, slots=True)
class RosterRow:
    pupil_id: int
    school_id: str | None = None
    gender: str | None = None
    grade: int | None = None
    class_no: int | None = None


@dataclass(frozen=True)
class Roster:
    """``warnings``: rows whose computed grade falls outside their stage (kept, grade unknown)."""

    rows: dict[int, RosterRow]
    warnings: tuple[str, ...] = ()

    def overrides_for(self, pupil_id: int) -> RosterRow | None:
        return self.rows.get(pupil_id)


def _integer(text: str, where: str, low: int, high: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(_KEY, f"{where}: {text!r} is not a whole number") from None
    if value < low or (high is not None and value > high):
        bounds = f"{low}–{high}" if high is not None else f"at least {low}"
        raise ConfigError(_KEY, f"{where}: {value} is not {bounds}")
    return value


def load_roster(path: Path, *, today: dt.date | None = None) -> Roster:
    """Read and parse ``path``; ``today`` (default: the current date) places year + stage rows."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(_KEY, f"roster file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(_KEY, f"roster file {path} cannot be read as UTF-8: {err}") from None
    return parse_roster(text, source_name=str(path), today=today or dt.date.today())


def parse_roster(text: str, *, source_name: str, today: dt.date) -> Roster:
    """The roster in ``text`` (named ``source_name`` in every error), grades as of ``today``."""
    reader = csv.reader(text.removeprefix("\ufeff").splitlines())
    fields = _header(next(reader, None), source_name)
    rows: dict[int, RosterRow] = {}
    school_ids: dict[str, int] = {}
    warnings: list[str] = []
    for line, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        cells = {name: value.strip() for name, value in zip(fields, values, strict=False)}
        where = f"{source_name} row {line}"
        row, warning = _row(cells, where, today)
        if row.pupil_id in rows:
            raise ConfigError(
                _KEY, f"{where} column pupil_id: pupil {row.pupil_id} is listed twice"
            )
        if row.school_id is not None:
            if row.school_id in school_ids:
                raise ConfigError(
                    _KEY,
                    f"{where} column 学号: {row.school_id} is already used on row {school_ids[row.school_id]}",
                )
            school_ids[row.school_id] = line
        if warning:
            warnings.append(warning)
        rows[row.pupil_id] = row
    return Roster(rows, tuple(warnings))


def _header(header: list[str] | None, source_name: str) -> list[str]:
    if not header:
        raise ConfigError(_KEY, f"{source_name}: the file is empty; row 1 must name the columns")
    fields: list[str] = []
    for number, name in enumerate(header, start=1):
        key = _COLUMNS.get(name.strip())
        if key is None:
            raise ConfigError(
                _KEY,
                f"{source_name} row 1 column {number}: unknown column {name!r}; use {_COLUMN_LIST}",
            )
        if key in fields:
            raise ConfigError(
                _KEY, f"{source_name} row 1 column {number}: column {name!r} is given twice"
            )
        fields.append(key)
    if "pupil_id" not in fields:
        raise ConfigError(_KEY, f"{source_name} row 1: the pupil_id column is missing")
    if "grade" in fields and ("year" in fields or "stage" in fields):
        raise ConfigError(_KEY, f"{source_name} row 1: use either grade or year + stage, not both")
    if ("year" in fields) != ("stage" in fields):
        missing = "stage" if "year" in fields else "year"
        raise ConfigError(_KEY, f"{source_name} row 1: year and stage go together; add {missing}")
    return fields


def _row(cells: dict[str, str], where: str, today: dt.date) -> tuple[RosterRow, str | None]:
    pupil_id = _integer(cells.get("pupil_id", ""), f"{where} column pupil_id", 1)
    gender = cells.get("gender")
    if gender not in (None, "", "男", "女"):
        raise ConfigError(_KEY, f"{where} column gender: {gender!r} must be 男, 女 or empty")
    grade_text = cells.get("grade")
    grade = _integer(grade_text, f"{where} column grade", 1, 12) if grade_text else None
    warning = None
    if cells.get("year") or cells.get("stage"):
        grade, warning = _grade_from_year(cells, where, today)
    class_text = cells.get("class_no")
    row = RosterRow(
        pupil_id=pupil_id,
        school_id=cells.get("school_id") or None,
        gender=gender if gender else None,
        grade=grade,
        class_no=_integer(class_text, f"{where} column class", 1) if class_text else None,
    )
    return row, warning


def _grade_from_year(
    cells: dict[str, str], where: str, today: dt.date
) -> tuple[int | None, str | None]:
    """The grade of a pupil enrolled in ``year`` at ``stage``, as a class status would have it.

    A pupil outside the stage this school year (graduated, not yet enrolled) keeps no grade and
    gets a warning: the file stays usable across the September roll-over.
    """
    year_text, stage = cells.get("year", ""), cells.get("stage", "")
    if not year_text:
        raise ConfigError(_KEY, f"{where} column year: empty, but stage is {stage!r}")
    year = _integer(year_text, f"{where} column year", 1900, 2999)
    if not stage:
        raise ConfigError(_KEY, f"{where} column stage: empty, but year is {year}")
    if stage not in STAGE_BASE:
        raise ConfigError(_KEY, f"{where} column stage: {stage!r} must be 小学, 初中 or 高中")
    grade = grade_for(stage, year, today)
    if grade is None:
        return None, (
            f"{where}: a {year}级 {stage} pupil is outside its stage this school year "
            "(graduated or not yet enrolled); grade left unknown"
        )
    return grade, None
