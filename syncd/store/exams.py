"""Imported exams: the tables ``exams``, ``exam_totals``, ``exam_questions`` and
``exam_question_scores``. An import is one transaction; importing an exam id again replaces it."""

from __future__ import annotations

import json
import time
from typing import Any

from syncd.core.exams import Exam
from syncd.store.database import Database

__all__ = ["Exams"]


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class Exams:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def save(self, exam: Exam) -> None:
        """Replace the exam (if present) with this one, in one transaction."""
        async with self._db.write() as db:
            await db.execute("DELETE FROM exams WHERE exam_id = ?", (exam.exam_id,))
            await db.execute(
                "INSERT INTO exams (exam_id, title, grade, year, imported_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (exam.exam_id, exam.title, exam.grade, exam.year, time.time()),
            )
            await db.executemany(
                "INSERT INTO exam_totals (exam_id, account, scores) VALUES (?, ?, ?)",
                [(exam.exam_id, account, _dumps(s)) for account, s in exam.totals.items()],
            )
            await db.executemany(
                """INSERT INTO exam_questions (exam_id, course, position, number, subjective,
                       score, scroll, selection, type, knowledge, ability)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
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
                "INSERT INTO exam_question_scores (exam_id, course, account, scores) "
                "VALUES (?, ?, ?, ?)",
                [
                    (exam.exam_id, course, account, _dumps(scores))
                    for course, accounts in exam.question_scores.items()
                    for account, scores in accounts.items()
                ],
            )

    async def fingerprint(self) -> tuple[int, float, float]:
        """Moves whenever an exam is imported, replaced or deleted (by any process): the count
        of exams and the sum and maximum of their import times."""
        row = await self._db.fetchone(
            "SELECT COUNT(*) AS n, COALESCE(SUM(imported_at), 0) AS total,"
            " COALESCE(MAX(imported_at), 0) AS latest FROM exams"
        )
        if row is None:
            return (0, 0.0, 0.0)
        return (int(row["n"]), float(row["total"]), float(row["latest"]))

    async def delete(self, exam_id: str) -> bool:
        async with self._db.write() as db:
            cursor = await db.execute("DELETE FROM exams WHERE exam_id = ?", (exam_id,))
            return bool(cursor.rowcount)

    async def exists(self, exam_id: str) -> bool:
        row = await self._db.fetchone("SELECT 1 FROM exams WHERE exam_id = ?", (exam_id,))
        return row is not None

    async def listing(self) -> list[dict[str, Any]]:
        """Every exam with its student count, oldest import first."""
        rows = await self._db.fetchall(
            """SELECT e.exam_id, e.title, e.grade, e.year, e.imported_at,
                      (SELECT COUNT(*) FROM exam_totals t WHERE t.exam_id = e.exam_id) AS students
               FROM exams e ORDER BY e.imported_at, e.exam_id"""
        )
        return [dict(row) for row in rows]

    async def totals(self, exam_id: str) -> list[dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT account, scores FROM exam_totals WHERE exam_id = ? ORDER BY account",
            (exam_id,),
        )
        return [{"account": r["account"], "scores": json.loads(r["scores"])} for r in rows]

    async def courses(self, exam_id: str) -> list[str]:
        rows = await self._db.fetchall(
            "SELECT DISTINCT course FROM exam_question_scores WHERE exam_id = ? ORDER BY course",
            (exam_id,),
        )
        return [r["course"] for r in rows]

    async def questions(self, exam_id: str, course: str) -> list[dict[str, Any]]:
        rows = await self._db.fetchall(
            """SELECT number, subjective, score, scroll, selection, type, knowledge, ability
               FROM exam_questions WHERE exam_id = ? AND course = ? ORDER BY position""",
            (exam_id, course),
        )
        return [dict(r) for r in rows]

    async def question_scores(self, exam_id: str, course: str) -> list[dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT account, scores FROM exam_question_scores WHERE exam_id = ? AND course = ? "
            "ORDER BY account",
            (exam_id, course),
        )
        return [{"account": r["account"], "scores": json.loads(r["scores"])} for r in rows]
