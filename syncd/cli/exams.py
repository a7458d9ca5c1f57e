"""The exam commands: ``import-exam``, ``exams`` and ``delete-exam``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TextIO

from syncd.cli.exit import ExitCode
from syncd.config import Config
from syncd.core.exams import MAX_PROBLEMS, Exam, validate_exam
from syncd.core.model import ROLE_STUDENT
from syncd.engine.exam_files import ExamFileError, read_sheets
from syncd.store import Store

__all__ = ["delete_exam_command", "import_exam_command", "list_exams_command"]


def _summary(exam: Exam) -> str:
    subjects = {subject for scores in exam.totals.values() for subject in scores}
    return (
        f"exam {exam.exam_id} {exam.title!r}: {len(exam.totals)} students, "
        f"{len(subjects)} subjects, "
        f"question scores for {', '.join(exam.question_scores) or 'no subject'}"
    )


async def import_exam_command(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    """Exit 0 imported (or valid with --dry-run), 1 problems found, 2 a file cannot be read."""
    try:
        sheets = read_sheets([Path(p) for p in args.paths])
    except ExamFileError as err:
        out.write(f"cannot read the exam files: {err}\n")
        return ExitCode.USAGE
    async with await Store.open(
        config.store.path, backup=config.store.backup, readonly=args.dry_run
    ) as store:
        students = {user["id"] for user in await store.snapshot.served_users(ROLE_STUDENT)}
        exam, problems = validate_exam(sheets, students)
        if problems:
            first = f" (first {MAX_PROBLEMS})" if len(problems) >= MAX_PROBLEMS else ""
            out.write(f"{len(problems)} problem(s){first}; nothing was imported:\n")
            out.write("".join(f"  {problem}\n" for problem in problems))
            return ExitCode.FAILED
        if args.dry_run:
            out.write(f"valid (dry run, nothing written): {_summary(exam)}\n")
            return ExitCode.OK
        await store.exams.save(exam)
    out.write(
        f"imported {_summary(exam)}\nChengjiyun picks it up the next time it polls queryExam.\n"
    )
    return ExitCode.OK


async def list_exams_command(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    async with await Store.open(
        config.store.path, backup=config.store.backup, readonly=True
    ) as store:
        exams = await store.exams.listing()
        if not exams:
            out.write("no exams imported (see `syncd import-exam`)\n")
        for exam in exams:
            courses = ", ".join(await store.exams.courses(exam["exam_id"])) or "-"
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(exam["imported_at"]))
            out.write(
                f"{exam['exam_id']}  {exam['title']}  grade {exam['grade']}  "
                f"year {exam['year']}  {exam['students']} students  "
                f"question scores: {courses}  imported {when}\n"
            )
    return ExitCode.OK


async def delete_exam_command(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    async with await Store.open(config.store.path, backup=config.store.backup) as store:
        deleted = await store.exams.delete(args.exam_id)
    if not deleted:
        out.write(f"no exam {args.exam_id!r} (see `syncd exams`)\n")
        return ExitCode.FAILED
    out.write(f"deleted exam {args.exam_id}\n")
    return ExitCode.OK
