"""The five exam endpoints Chengjiyun polls (there is no notify): answers from the imported exams.

The server checks the sign and wraps ``data``; these functions only look the answer up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from syncd.core.exams import integral
from syncd.exceptions import ApiError
from syncd.store import Store

__all__ = ["EXAM_ENDPOINTS"]

NO_MATCH = ApiError(20001, "没有匹配的数据")


def _required(params: Mapping[str, str], *names: str) -> list[str]:
    missing = [name for name in names if not params.get(name)]
    if missing:
        raise ApiError(30002, f"参数解析错误: missing {', '.join(missing)}")
    return [params[name] for name in names]


async def _exam_id(store: Store, params: Mapping[str, str]) -> str:
    (exam_id,) = _required(params, "examId")
    if not await store.exams.exists(exam_id):
        raise ApiError(NO_MATCH.code, NO_MATCH.msg)
    return exam_id


async def _course(store: Store, params: Mapping[str, str]) -> tuple[str, str]:
    exam_id = await _exam_id(store, params)
    (course,) = _required(params, "course")
    if course not in await store.exams.courses(exam_id):
        raise ApiError(NO_MATCH.code, NO_MATCH.msg)
    return exam_id, course


async def _query_exam(store: Store, params: Mapping[str, str]) -> Any:
    return [
        {"examId": e["exam_id"], "title": e["title"], "grade": e["grade"], "year": e["year"]}
        for e in await store.exams.listing()
    ]


async def _query_exam_detail(store: Store, params: Mapping[str, str]) -> Any:
    return await store.exams.totals(await _exam_id(store, params))


async def _query_question_list(store: Store, params: Mapping[str, str]) -> Any:
    exam_id = await _exam_id(store, params)
    return {"examId": exam_id, "courses": await store.exams.courses(exam_id)}


async def _query_question_structure(store: Store, params: Mapping[str, str]) -> Any:
    exam_id, course = await _course(store, params)
    return [
        {**q, "score": integral(q["score"])} for q in await store.exams.questions(exam_id, course)
    ]


async def _query_question_score(store: Store, params: Mapping[str, str]) -> Any:
    exam_id, course = await _course(store, params)
    return await store.exams.question_scores(exam_id, course)


EXAM_ENDPOINTS: dict[str, Callable[[Store, Mapping[str, str]], Awaitable[Any]]] = {
    "queryExam": _query_exam,
    "queryExamDetail": _query_exam_detail,
    "queryQuestionList": _query_question_list,
    "queryQuestionStructure": _query_question_structure,
    "queryQuestionScore": _query_question_score,
}
