"""Exams: import results from spreadsheets, serve Chengjiyun's five exam endpoints (seed 003).

Neither ClassCharts nor epaas has exam results, so a school exports them from its marking system
as an .xlsx workbook or as UTF-8 CSV files (layouts in docs/exams.md). Everything is validated
before anything is written, every problem named with file, sheet, row and column, and an import
is one transaction: all of it or nothing; importing an exam id again replaces it.
Chengjiyun finds new exams by polling queryExam; there is no notify.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from syncd.config import Config
from syncd.core.model import ROLE_STUDENT
from syncd.exceptions import ApiError
from syncd.store import Store

__all__ = [
    "EXAM_ENDPOINTS",
    "Exam",
    "ExamFileError",
    "Problem",
    "delete_exam_command",
    "import_exam_command",
    "list_exams_command",
    "load_exam",
    "read_sheets",
    "validate_exam",
]

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


class ExamFileError(Exception):
    """A file cannot be read at all (missing, not a workbook, not UTF-8)."""


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


# --- reading ---------------------------------------------------------------------------------


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
            except UnicodeDecodeError:
                raise ExamFileError(f'{path} is not UTF-8 text; save it as "CSV UTF-8"') from None
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
        raise ExamFileError(f"{path} cannot be opened as an .xlsx workbook: {err}") from None


# --- validation ------------------------------------------------------------------------------


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


def _integral(value: float) -> float | int:
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


def _read_structure(sheet: Sheet, problems: _Problems) -> list[Question]:
    header = _header(sheet)
    columns = {
        STRUCTURE_HEADERS.get(name): index
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
        return []
    questions: list[Question] = []
    numbers: dict[str, int] = {}
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
            continue
        if number in numbers:
            problems.add(
                sheet,
                line,
                columns["number"],
                f"question {number} already appears on row {numbers[number]}",
            )
            continue
        numbers[number] = line
        if cells["subjective"] not in ("主观题", "客观题"):
            problems.add(
                sheet,
                line,
                columns["subjective"],
                f"{cells['subjective']!r} must be 主观题 or 客观题",
            )
        if cells["scroll"] not in ("一卷", "二卷"):
            problems.add(
                sheet, line, columns["scroll"], f"{cells['scroll']!r} must be 一卷 or 二卷"
            )
        full = _number(cells["score"])
        if full is None or full <= 0:
            problems.add(
                sheet,
                line,
                columns["score"],
                f"full mark {cells['score']!r} is not a positive number",
            )
            full = 0.0
        questions.append(
            Question(
                number,
                cells["subjective"],
                full,
                cells["scroll"],
                *(cells.get(key) or None for key in ("selection", "type", "knowledge", "ability")),
            )
        )
    return questions


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
            continue
        if account in result:
            problems.add(sheet, line, 0, f"student account {account} appears twice")
            continue
        scores: dict[str, Any] = {}
        for index, name in enumerate(columns, start=1):
            text = _cell_text(row[index]) if index < len(row) else ""
            if not text:
                if full_marks is None:
                    continue  # no total for that subject: the student did not sit it
                scores[name] = None  # a missing answer
                continue
            value = _number(text)
            if value is None:
                problems.add(sheet, line, index, f"score {text!r} is not a number")
                continue
            if value < 0:
                problems.add(sheet, line, index, f"score {text} is negative")
                continue
            if full_marks is not None and name in full_marks and value > full_marks[name]:
                problems.add(
                    sheet,
                    line,
                    index,
                    f"score {text} is above question {name}'s full mark {_integral(full_marks[name])}",
                )
                continue
            scores[name] = _integral(value)
        result[account] = scores
    return result


def load_exam(paths: Sequence[Path], students: set[str]) -> tuple[Exam, list[Problem]]:
    return validate_exam(read_sheets(paths), students)


# --- storing ---------------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


async def save_exam(store: Store, exam: Exam) -> None:
    """Replace the exam (if present) with this one, in one transaction."""
    async with store.write() as db:
        await db.execute("DELETE FROM exams WHERE exam_id = ?", (exam.exam_id,))
        await db.execute(
            "INSERT INTO exams (exam_id, title, grade, year, imported_at) VALUES (?, ?, ?, ?, ?)",
            (exam.exam_id, exam.title, exam.grade, exam.year, time.time()),
        )
        await db.executemany(
            "INSERT INTO exam_totals (exam_id, account, scores) VALUES (?, ?, ?)",
            [(exam.exam_id, account, _dumps(scores)) for account, scores in exam.totals.items()],
        )
        await db.executemany(
            """INSERT INTO exam_questions (exam_id, course, position, number, subjective, score, scroll,
                   selection, type, knowledge, ability) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                (
                    exam.exam_id,
                    course,
                    position,
                    q.number,
                    q.subjective,
                    q.score,
                    q.scroll,
                    q.selection,
                    q.type,
                    q.knowledge,
                    q.ability,
                )
                for course, questions in exam.questions.items()
                for position, q in enumerate(questions)
            ],
        )
        await db.executemany(
            "INSERT INTO exam_question_scores (exam_id, course, account, scores) VALUES (?, ?, ?, ?)",
            [
                (exam.exam_id, course, account, _dumps(scores))
                for course, accounts in exam.question_scores.items()
                for account, scores in accounts.items()
            ],
        )


# --- serving (seed 003 shapes; the server checks the sign and wraps `data`) ------------------


def _required(params: Mapping[str, str], *names: str) -> list[str]:
    missing = [name for name in names if not params.get(name)]
    if missing:
        raise ApiError(30002, f"参数解析错误: missing {', '.join(missing)}")
    return [params[name] for name in names]


async def _exam_row(store: Store, exam_id: str) -> Any:
    row = await store.fetchone("SELECT exam_id FROM exams WHERE exam_id = ?", (exam_id,))
    if row is None:
        raise ApiError(20001, "没有匹配的数据")
    return row


async def _query_exam(store: Store, params: Mapping[str, str]) -> Any:
    rows = await store.fetchall(
        "SELECT exam_id, title, grade, year FROM exams ORDER BY imported_at, exam_id"
    )
    return [
        {"examId": r["exam_id"], "title": r["title"], "grade": r["grade"], "year": r["year"]}
        for r in rows
    ]


async def _query_exam_detail(store: Store, params: Mapping[str, str]) -> Any:
    (exam_id,) = _required(params, "examId")
    await _exam_row(store, exam_id)
    rows = await store.fetchall(
        "SELECT account, scores FROM exam_totals WHERE exam_id = ? ORDER BY account", (exam_id,)
    )
    return [{"account": r["account"], "scores": json.loads(r["scores"])} for r in rows]


async def _courses(store: Store, exam_id: str) -> list[str]:
    rows = await store.fetchall(
        "SELECT DISTINCT course FROM exam_question_scores WHERE exam_id = ? ORDER BY course",
        (exam_id,),
    )
    return [r["course"] for r in rows]


async def _query_question_list(store: Store, params: Mapping[str, str]) -> Any:
    (exam_id,) = _required(params, "examId")
    await _exam_row(store, exam_id)
    return {"examId": exam_id, "courses": await _courses(store, exam_id)}


async def _course(store: Store, params: Mapping[str, str]) -> tuple[str, str]:
    exam_id, course = _required(params, "examId", "course")
    await _exam_row(store, exam_id)
    if course not in await _courses(store, exam_id):
        raise ApiError(20001, "没有匹配的数据")
    return exam_id, course


async def _query_question_structure(store: Store, params: Mapping[str, str]) -> Any:
    exam_id, course = await _course(store, params)
    rows = await store.fetchall(
        """SELECT number, subjective, score, scroll, selection, type, knowledge, ability
           FROM exam_questions WHERE exam_id = ? AND course = ? ORDER BY position""",
        (exam_id, course),
    )
    return [{**dict(r), "score": _integral(r["score"])} for r in rows]


async def _query_question_score(store: Store, params: Mapping[str, str]) -> Any:
    exam_id, course = await _course(store, params)
    rows = await store.fetchall(
        "SELECT account, scores FROM exam_question_scores WHERE exam_id = ? AND course = ? ORDER BY account",
        (exam_id, course),
    )
    return [{"account": r["account"], "scores": json.loads(r["scores"])} for r in rows]


EXAM_ENDPOINTS = {
    "queryExam": _query_exam,
    "queryExamDetail": _query_exam_detail,
    "queryQuestionList": _query_question_list,
    "queryQuestionStructure": _query_question_structure,
    "queryQuestionScore": _query_question_score,
}


# --- commands --------------------------------------------------------------------------------


async def import_exam_command(config: Config, args: Any, out: TextIO) -> int:
    """Exit 0 imported (or valid with --dry-run), 1 problems found, 2 a file cannot be read."""
    paths = [Path(p) for p in args.paths]
    try:
        sheets = read_sheets(paths)
    except ExamFileError as err:
        out.write(f"cannot read the exam files: {err}\n")
        return 2
    async with await Store.open(config.store.path, readonly=args.dry_run) as store:
        exam, problems = validate_exam(sheets, await store.user_ids(ROLE_STUDENT))
        if problems:
            out.write(
                f"{len(problems)} problem(s){' (first ' + str(MAX_PROBLEMS) + ')' if len(problems) >= MAX_PROBLEMS else ''}; nothing was imported:\n"
            )
            for problem in problems:
                out.write(f"  {problem}\n")
            return 1
        summary = (
            f"exam {exam.exam_id} {exam.title!r}: {len(exam.totals)} students, "
            f"{len({s for scores in exam.totals.values() for s in scores})} subjects, "
            f"question scores for {', '.join(exam.question_scores) or 'no subject'}"
        )
        if args.dry_run:
            out.write(f"valid (dry run, nothing written): {summary}\n")
            return 0
        await save_exam(store, exam)
    out.write(f"imported {summary}\nChengjiyun picks it up the next time it polls queryExam.\n")
    return 0


async def list_exams_command(config: Config, args: Any, out: TextIO) -> int:
    async with await Store.open(config.store.path, readonly=True) as store:
        exams = await store.fetchall(
            """SELECT e.exam_id, e.title, e.grade, e.year, e.imported_at,
                      (SELECT COUNT(*) FROM exam_totals t WHERE t.exam_id = e.exam_id) AS students
               FROM exams e ORDER BY e.imported_at"""
        )
        if not exams:
            out.write("no exams imported (see `syncd import-exam`)\n")
        for exam in exams:
            courses = await _courses(store, exam["exam_id"])
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(exam["imported_at"]))
            out.write(
                f"{exam['exam_id']}  {exam['title']}  grade {exam['grade']}  year {exam['year']}  "
                f"{exam['students']} students  question scores: {', '.join(courses) or '-'}  imported {when}\n"
            )
    return 0


async def delete_exam_command(config: Config, args: Any, out: TextIO) -> int:
    async with await Store.open(config.store.path) as store, store.write() as db:
        cursor = await db.execute("DELETE FROM exams WHERE exam_id = ?", (args.exam_id,))
        deleted = cursor.rowcount
    if not deleted:
        out.write(f"no exam {args.exam_id!r} (see `syncd exams`)\n")
        return 1
    out.write(f"deleted exam {args.exam_id}\n")
    return 0
