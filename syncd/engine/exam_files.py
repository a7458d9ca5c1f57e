"""Reading exam files: .xlsx workbooks (python-calamine) and UTF-8 CSV files, into sheets."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from syncd.core.exams import Exam, Problem, Sheet, validate_exam
from syncd.exceptions import SyncdError

__all__ = ["ExamFileError", "load_exam", "read_sheets"]


class ExamFileError(SyncdError):
    """A file cannot be read at all (missing, not a workbook, not UTF-8)."""


def read_sheets(paths: Sequence[Path]) -> list[Sheet]:
    """Sheets from .xlsx workbooks and/or .csv files (a folder means every .csv in it)."""
    sheets: list[Sheet] = []
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(path.glob("*.csv")))
        else:
            files.append(path)
    for path in files:
        if not path.exists():
            raise ExamFileError(f"{path} does not exist")
        if path.suffix.lower() == ".xlsx":
            sheets.extend(_read_workbook(path))
        elif path.suffix.lower() == ".csv":
            try:
                text = path.read_text(encoding="utf-8-sig")
            except UnicodeDecodeError as err:
                raise ExamFileError(f'{path} is not UTF-8 text; save it as "CSV UTF-8"') from err
            sheets.append(
                Sheet(path.name, path.stem, [list(row) for row in csv.reader(text.splitlines())])
            )
        else:
            raise ExamFileError(f"{path}: only .xlsx and .csv files can be imported")
    return sheets


def _read_workbook(path: Path) -> list[Sheet]:
    # calamine (Rust) reads a 2,000-student workbook about ten times faster than openpyxl.
    from python_calamine import CalamineError, CalamineWorkbook

    try:
        workbook = CalamineWorkbook.from_path(str(path))
        return [
            Sheet(
                path.name,
                name,
                [
                    list(row)
                    for row in workbook.get_sheet_by_name(name).to_python(skip_empty_area=False)
                ],
            )
            for name in workbook.sheet_names
        ]
    except (CalamineError, OSError, ValueError) as err:
        raise ExamFileError(f"{path} cannot be opened as an .xlsx workbook: {err}") from err


def load_exam(paths: Sequence[Path], students: set[str]) -> tuple[Exam, list[Problem]]:
    return validate_exam(read_sheets(paths), students)
