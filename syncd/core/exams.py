"""Exam results: the layouts a school's marking system exports, validated into one ``Exam``.

Neither ClassCharts nor epaas has exam results, so a school exports them as an .xlsx workbook or
as UTF-8 CSV files (layouts in docs/exams.md). Everything is validated before anything is
written, every problem named with file, sheet, row and column. Pure: the files are read by
``syncd.engine.exam_files`` and the result stored by ``syncd.store.exams``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_PROBLEMS", "Exam", "Problem", "Question", "Sheet", "integral", "validate_exam"]

INFO_SHEET, TOTAL_SHEET = "考试信息", "总分"
STRUCTURE_PREFIX, SCORES_PREFIX = "小题结构-", "小题分-"
MAX_PROBLEMS = 50

INFO_KEYS = {
    "考试ID": "exam_id",
    "examId": "exam_id",
    "标题": "title",
    "title": "title",
    "年级": "grade",
    "grade": "grade",
    "入学年份": "year",
    "year": "year",
}
ACCOUNT_HEADERS = {"账号", "account"}
STRUCTURE_HEADERS = {
    "题号": "number",
    "number": "number",
    "类型": "subjective",
    "subjective": "subjective",
    "满分": "score",
    "score": "score",
    "卷别": "scroll",
    "scroll": "scroll",
    "选做组": "selection",
    "selection": "selection",
    "题型": "type",
    "type": "type",
    "知识点": "knowledge",
    "knowledge": "knowledge",
    "能力": "ability",
    "ability": "ability",
}
REQUIRED_STRUCTURE = ("number", "subjective", "score", "scroll")


@dataclass(frozen=True)
class Sheet:
    file: str
    name: str
    rows: list[list[Any]]


@dataclass(frozen=True)
class Problem:
    file: str
    sheet: str
    row: int
    column: str
    message: str

    def __str__(self) -> str:
        place = f"{self.file}, sheet {self.sheet}" if not self.file.endswith(".csv") else self.file
        return f"{place}, row {self.row}, column {self.column}: {self.message}"


@dataclass
class Question:
    number: str
    subjective: str
    score: float
    scroll: str
    selection: str | None = None
    type: str | None = None
    knowledge: str | None = None
    ability: str | None = None


@dataclass
class Exam:
    exam_id: str = ""
    title: str = ""
    grade: int | None = None
    year: int | None = None
    totals: dict[str, dict[str, float]] = field(default_factory=dict)
    questions: dict[str, list[Question]] = field(default_factory=dict)
    question_scores: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)


# --- validation ---------------------------------------------------------------------------------


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


class _Problems(list[Problem]):
    def add(self, sheet: Sheet, row: int, column: int | str, message: str) -> None:
        if len(self) < MAX_PROBLEMS:
            letter = column if isinstance(column, str) else _column_letter(column)
            self.append(Problem(sheet.file, sheet.name, row, letter, message))


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def integral(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def validate_exam(sheets: Sequence[Sheet], students: set[str]) -> tuple[Exam, list[Problem]]:
    """Parse and check everything; the exam is usable only when the problem list is empty."""
    problems = _Problems()
    exam = Exam()
    by_name = {sheet.name: sheet for sheet in sheets}
    info, totals = by_name.get(INFO_SHEET), by_name.get(TOTAL_SHEET)
    if info is None or totals is None:
        missing = [
            name for name, sheet in ((INFO_SHEET, info), (TOTAL_SHEET, totals)) if sheet is None
        ]
        first = sheets[0] if sheets else Sheet("(no files)", "-", [])
        problems.append(
            Problem(
                first.file,
                "-",
                0,
                "-",
                f"missing sheet(s) {', '.join(missing)} (see docs/exams.md)",
            )
        )
        return exam, problems
    _read_info(info, exam, problems)
    exam.totals = _read_scores(totals, students, problems, lambda header: header)
    for sheet in sheets:
        if sheet.name.startswith(STRUCTURE_PREFIX):
            course = sheet.name.removeprefix(STRUCTURE_PREFIX)
            exam.questions[course] = _read_structure(sheet, problems)
    for sheet in sheets:
        if sheet.name.startswith(SCORES_PREFIX):
            course = sheet.name.removeprefix(SCORES_PREFIX)
            structure = exam.questions.get(course)
            if structure is None:
                problems.add(
                    sheet, 1, "A", f"no sheet {STRUCTURE_PREFIX}{course} describes these questions"
                )
                continue
            full_marks = {q.number: q.score for q in structure}
            exam.question_scores[course] = _read_scores(sheet, students, problems, None, full_marks)
    return exam, list(problems)


def _read_info(sheet: Sheet, exam: Exam, problems: _Problems) -> None:
    seen: set[str] = set()
    for line, row in enumerate(sheet.rows, start=1):
        key_text = _cell_text(row[0] if row else None)
        value = _cell_text(row[1] if len(row) > 1 else None)
        if not key_text:
            continue
        key = INFO_KEYS.get(key_text)
        if key is None:
            if line > 1:  # row 1 may be a header such as 项目,值
                problems.add(
                    sheet, line, 0, f"unknown item {key_text!r}; use 考试ID, 标题, 年级, 入学年份"
                )
            continue
        seen.add(key)
        if key in ("exam_id", "title"):
            if not value:
                problems.add(sheet, line, 1, f"{key_text} is empty")
            setattr(exam, key, value)
        elif value:
            number = _number(value)
            if number is None or not number.is_integer():
                problems.add(sheet, line, 1, f"{key_text} {value!r} is not a whole number")
            elif key == "grade" and not 1 <= number <= 12:
                problems.add(sheet, line, 1, f"grade {int(number)} is outside 1–12")
            else:
                setattr(exam, key, int(number))
    for key, label in (("exam_id", "考试ID"), ("title", "标题")):
        if key not in seen:
            problems.add(sheet, len(sheet.rows) + 1, "A", f"the {label} row is missing")


def _header(sheet: Sheet) -> list[str]:
    return [_cell_text(cell) for cell in sheet.rows[0]] if sheet.rows else []


def _structure_columns(sheet: Sheet, problems: _Problems) -> dict[str, int] | None:
    """Column index of each known structure header; None when a required one is missing."""
    header = _header(sheet)
    columns = {
        STRUCTURE_HEADERS[name]: index
        for index, name in enumerate(header)
        if STRUCTURE_HEADERS.get(name)
    }
    for index, name in enumerate(header):
        if name and name not in STRUCTURE_HEADERS:
            problems.add(sheet, 1, index, f"unknown column {name!r}")
    missing = [name for name in REQUIRED_STRUCTURE if name not in columns]
    if missing:
        problems.add(
            sheet, 1, "A", f"missing column(s) {', '.join(missing)} (题号, 类型, 满分, 卷别)"
        )
        return None
    return columns


def _read_structure(sheet: Sheet, problems: _Problems) -> list[Question]:
    columns = _structure_columns(sheet, problems)
    if columns is None:
        return []
    questions: list[Question] = []
    numbers: dict[str, int] = {}  # question number -> the row it is on
    for line, row in enumerate(sheet.rows[1:], start=2):
        cells = {
            key: _cell_text(row[index]) if index < len(row) else ""
            for key, index in columns.items()
        }
        if not any(cells.values()):
            continue
        number = cells["number"]
        if not number:
            problems.add(sheet, line, columns["number"], "question number is empty")
        elif number in numbers:
            problems.add(
                sheet,
                line,
                columns["number"],
                f"question {number} already appears on row {numbers[number]}",
            )
        else:
            numbers[number] = line
            questions.append(_question(sheet, line, cells, columns, problems))
    return questions


def _question(
    sheet: Sheet,
    line: int,
    cells: Mapping[str, str],
    columns: Mapping[str, int],
    problems: _Problems,
) -> Question:
    """One structure row as a question, each bad cell reported (a bad full mark counts as 0)."""
    if cells["subjective"] not in ("主观题", "客观题"):
        problems.add(
            sheet, line, columns["subjective"], f"{cells['subjective']!r} must be 主观题 or 客观题"
        )
    if cells["scroll"] not in ("一卷", "二卷"):
        problems.add(sheet, line, columns["scroll"], f"{cells['scroll']!r} must be 一卷 or 二卷")
    full = _number(cells["score"])
    if full is None or full <= 0:
        problems.add(
            sheet, line, columns["score"], f"full mark {cells['score']!r} is not a positive number"
        )
        full = 0.0
    return Question(
        cells["number"],
        cells["subjective"],
        full,
        cells["scroll"],
        *(cells.get(key) or None for key in ("selection", "type", "knowledge", "ability")),
    )


def _read_scores(
    sheet: Sheet,
    students: set[str],
    problems: _Problems,
    subject_of: Any,
    full_marks: Mapping[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """Rows of (account, one score per column). Totals need every cell; question scores may be empty."""
    header = _header(sheet)
    if not header or header[0] not in ACCOUNT_HEADERS:
        problems.add(sheet, 1, 0, "the first column must be 账号 (the student account id)")
        return {}
    columns = header[1:]
    _check_score_columns(sheet, columns, full_marks, problems)
    result: dict[str, dict[str, Any]] = {}
    for line, row in enumerate(sheet.rows[1:], start=2):
        account = _cell_text(row[0] if row else None)
        if not account and not any(_cell_text(c) for c in row):
            continue
        if account not in students:
            problems.add(
                sheet,
                line,
                0,
                f"student account {account!r} is not a known student (not in the snapshot)",
            )
        elif account in result:
            problems.add(sheet, line, 0, f"student account {account} appears twice")
        else:
            result[account] = _scores_of_row(sheet, line, row, columns, full_marks, problems)
    return result


def _check_score_columns(
    sheet: Sheet,
    columns: Sequence[str],
    full_marks: Mapping[str, float] | None,
    problems: _Problems,
) -> None:
    seen_columns: dict[str, int] = {}
    for index, name in enumerate(columns, start=1):
        if not name:
            problems.add(sheet, 1, index, "column header is empty")
        elif name in seen_columns:
            problems.add(
                sheet, 1, index, f"{name} is also column {_column_letter(seen_columns[name])}"
            )
        elif full_marks is not None and name not in full_marks:
            problems.add(sheet, 1, index, f"question {name} has no row in the structure sheet")
        seen_columns.setdefault(name, index)


def _scores_of_row(
    sheet: Sheet,
    line: int,
    row: Sequence[Any],
    columns: Sequence[str],
    full_marks: Mapping[str, float] | None,
    problems: _Problems,
) -> dict[str, Any]:
    """One student's scores; a bad cell is reported and left out."""
    scores: dict[str, Any] = {}
    for index, name in enumerate(columns, start=1):
        text = _cell_text(row[index]) if index < len(row) else ""
        if not text:
            if full_marks is not None:
                scores[name] = None  # a missing answer; without full marks: subject not sat
            continue
        value = _number(text)
        full = full_marks.get(name) if full_marks is not None else None
        if value is None:
            problems.add(sheet, line, index, f"score {text!r} is not a number")
        elif value < 0:
            problems.add(sheet, line, index, f"score {text} is negative")
        elif full is not None and value > full:
            problems.add(
                sheet,
                line,
                index,
                f"score {text} is above question {name}'s full mark {integral(full)}",
            )
        else:
            scores[name] = integral(value)
    return scores
