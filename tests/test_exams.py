"""Exam import (xlsx and csv), validation messages, and the five endpoints' exact shapes."""

from __future__ import annotations

import csv
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from conftest import REPO
from sandbox_helpers import run_syncd
from store_helpers import acknowledge
from syncd.cli.exams import import_exam_command
from syncd.config import parse_config
from syncd.core.model import User
from syncd.core.signing import signed_query
from syncd.engine.exam_files import load_exam
from syncd.exceptions import ApiError
from syncd.server.app import create_app
from syncd.server.exams import EXAM_ENDPOINTS
from syncd.store import Store

EXAMPLES = REPO / "config" / "examples" / "exam"
STUDENTS = [User(f"cc-{n}", f"Pupil {n}", ("学生",), "classcharts") for n in (1001, 1002, 1003)]
KNOWN = {u.id for u in STUDENTS}
KEY, ORG = "exam-key", "school-exam"

EXPECTED = {
    "queryExam": [
        {"examId": "2026-mid-g8", "title": "2026学年第一学期期中考试", "grade": 8, "year": 2025}
    ],
    "queryExamDetail": [
        {"account": "cc-1001", "scores": {"语文": 112, "数学": 118, "英语": 121.5}},
        {"account": "cc-1002", "scores": {"语文": 98, "数学": 136, "英语": 99}},
        {"account": "cc-1003", "scores": {"语文": 105, "数学": 91}},
    ],
    "queryQuestionList": {"examId": "2026-mid-g8", "courses": ["数学"]},
    "queryQuestionStructure": [
        {
            "number": "1",
            "subjective": "客观题",
            "score": 5,
            "scroll": "一卷",
            "selection": None,
            "type": "选择题",
            "knowledge": "有理数",
            "ability": "理解",
        },
        {
            "number": "2",
            "subjective": "客观题",
            "score": 5,
            "scroll": "一卷",
            "selection": None,
            "type": "选择题",
            "knowledge": "整式",
            "ability": "掌握",
        },
        {
            "number": "3.a",
            "subjective": "主观题",
            "score": 6,
            "scroll": "二卷",
            "selection": "A1",
            "type": "解答题",
            "knowledge": "一元一次方程",
            "ability": "应用",
        },
        {
            "number": "3.b",
            "subjective": "主观题",
            "score": 6,
            "scroll": "二卷",
            "selection": "A1",
            "type": "解答题",
            "knowledge": "一元一次方程",
            "ability": "应用",
        },
    ],
    "queryQuestionScore": [
        {"account": "cc-1001", "scores": {"1": 5, "2": 5, "3.a": 4.5, "3.b": 6}},
        {"account": "cc-1002", "scores": {"1": 5, "2": 0, "3.a": None, "3.b": 3}},
        {"account": "cc-1003", "scores": {"1": 0, "2": 5, "3.a": 2, "3.b": None}},
    ],
}
PARAMS = {
    "queryExamDetail": {"examId": "2026-mid-g8"},
    "queryQuestionList": {"examId": "2026-mid-g8"},
    "queryQuestionStructure": {"examId": "2026-mid-g8", "course": "数学"},
    "queryQuestionScore": {"examId": "2026-mid-g8", "course": "数学"},
}


def config_for(tmp_path: Path) -> Any:
    return parse_config(
        {
            "store": {"path": str(tmp_path / "syncd.db")},
            "chengjiyun": {"platform": "p", "key": KEY, "org_id": ORG},
            "server": {"listen": "127.0.0.1:0"},
        }
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "syncd.db")
    await acknowledge(opened, STUDENTS)
    yield opened
    await opened.close()


async def run_import(tmp_path: Path, *paths: Path, dry_run: bool = False) -> tuple[int, str]:
    import io

    out = io.StringIO()
    code = await import_exam_command(
        config_for(tmp_path), SimpleNamespace(paths=[str(p) for p in paths], dry_run=dry_run), out
    )
    return code, out.getvalue()


@pytest.mark.parametrize("source", [EXAMPLES / "exam.xlsx", EXAMPLES / "csv"], ids=["xlsx", "csv"])
async def test_example_imports_and_every_endpoint_answers_exactly(
    tmp_path: Path, store: Store, source: Path
) -> None:
    code, output = await run_import(tmp_path, source)
    assert code == 0, output
    assert "imported exam 2026-mid-g8" in output
    for name, expected in EXPECTED.items():
        assert await EXAM_ENDPOINTS[name](store, PARAMS.get(name, {})) == expected, name


async def test_endpoints_through_the_signed_server(tmp_path: Path, store: Store) -> None:
    assert (await run_import(tmp_path, EXAMPLES / "exam.xlsx"))[0] == 0
    runner = web.AppRunner(create_app(config_for(tmp_path), store))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            for name, expected in EXPECTED.items():
                query = signed_query(
                    {"orgId": ORG, "timestamp": int(time.time()), **PARAMS.get(name, {})}, KEY
                )
                async with session.get(f"http://127.0.0.1:{port}/{name}?{query}") as response:
                    assert await response.json() == {
                        "code": 0,
                        "msg": "success",
                        "data": expected,
                    }, name
            query = signed_query(
                {"orgId": ORG, "timestamp": int(time.time()), "examId": "nope"}, KEY
            )
            async with session.get(f"http://127.0.0.1:{port}/queryExamDetail?{query}") as response:
                assert await response.json() == {"code": 20001, "msg": "没有匹配的数据"}
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("params", "name", "code"),
    [
        ({}, "queryExamDetail", 30002),
        ({"examId": "x"}, "queryQuestionList", 20001),
        ({"examId": "2026-mid-g8", "course": "物理"}, "queryQuestionScore", 20001),
        ({"examId": "2026-mid-g8"}, "queryQuestionStructure", 30002),
    ],
)
async def test_unknown_exam_or_course(
    tmp_path: Path, store: Store, params: dict[str, str], name: str, code: int
) -> None:
    await run_import(tmp_path, EXAMPLES / "exam.xlsx")
    with pytest.raises(ApiError) as caught:
        await EXAM_ENDPOINTS[name](store, params)
    assert caught.value.code == code


def copy_csv(tmp_path: Path, edits: dict[str, list[list[str]]] | None = None) -> Path:
    folder = tmp_path / "exam"
    folder.mkdir()
    for source in (EXAMPLES / "csv").glob("*.csv"):
        rows = list(csv.reader(source.read_text(encoding="utf-8-sig").splitlines()))
        rows = (edits or {}).get(source.stem, rows)
        with (folder / source.name).open("w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows(rows)
    return folder


SCORES_HEADER = ["账号", "1", "2", "3.a", "3.b"]
STRUCTURE = [
    ["题号", "类型", "满分", "卷别"],
    ["1", "客观题", "5", "一卷"],
    ["2", "客观题", "5", "一卷"],
    ["3.a", "主观题", "6", "二卷"],
    ["3.b", "主观题", "6", "二卷"],
]


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        (
            {"总分": [["账号", "语文"], ["cc-9999", "100"]]},
            "总分.csv, row 2, column A: student account 'cc-9999' is not a known student",
        ),
        (
            {"总分": [["账号", "语文"], ["cc-1001", "ninety"]]},
            "总分.csv, row 2, column B: score 'ninety' is not a number",
        ),
        (
            {"小题分-数学": [SCORES_HEADER, ["cc-1001", "5", "5", "7", "1"]]},
            "小题分-数学.csv, row 2, column D: score 7 is above question 3.a's full mark 6",
        ),
        (
            {"小题结构-数学": [*STRUCTURE, ["2", "客观题", "5", "一卷"]]},
            "小题结构-数学.csv, row 6, column A: question 2 already appears on row 3",
        ),
        (
            {"小题分-数学": [[*SCORES_HEADER, "4"], ["cc-1001", "5", "5", "1", "1", "2"]]},
            "小题分-数学.csv, row 1, column F: question 4 has no row in the structure sheet",
        ),
        (
            {"考试信息": [["项目", "值"], ["考试ID", "x"], ["标题", "t"], ["年级", "13"]]},
            "考试信息.csv, row 4, column B: grade 13 is outside 1–12",
        ),
    ],
)
async def test_each_validation_error_names_file_row_and_column(
    tmp_path: Path, store: Store, edits: dict[str, Any], message: str
) -> None:
    folder = copy_csv(tmp_path, edits)
    code, output = await run_import(tmp_path, folder)
    assert code == 1
    assert message in output, output
    assert "nothing was imported" in output
    assert await EXAM_ENDPOINTS["queryExam"](store, {}) == []


async def test_xlsx_problems_name_the_sheet(tmp_path: Path, store: Store) -> None:
    from openpyxl import load_workbook

    workbook = load_workbook(EXAMPLES / "exam.xlsx")
    workbook["小题分-数学"]["C3"] = "x"
    path = tmp_path / "bad.xlsx"
    workbook.save(path)
    exam, problems = load_exam([path], KNOWN)
    assert [str(p) for p in problems] == [
        "bad.xlsx, sheet 小题分-数学, row 3, column C: score 'x' is not a number"
    ]


async def test_reimport_replaces_and_dry_run_writes_nothing(tmp_path: Path, store: Store) -> None:
    folder = copy_csv(tmp_path)
    code, output = await run_import(tmp_path, folder, dry_run=True)
    assert code == 0 and "dry run" in output
    assert await EXAM_ENDPOINTS["queryExam"](store, {}) == []
    assert (await run_import(tmp_path, folder))[0] == 0
    (folder / "小题分-数学.csv").unlink()
    (folder / "小题结构-数学.csv").unlink()
    assert (await run_import(tmp_path, folder))[0] == 0
    assert await EXAM_ENDPOINTS["queryQuestionList"](store, {"examId": "2026-mid-g8"}) == {
        "examId": "2026-mid-g8",
        "courses": [],
    }
    assert len(await EXAM_ENDPOINTS["queryExam"](store, {})) == 1


async def test_unreadable_files_exit_2(tmp_path: Path, store: Store) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert (await run_import(tmp_path, tmp_path / "notes.txt"))[0] == 2
    (tmp_path / "broken.xlsx").write_bytes(b"not a zip")
    code, output = await run_import(tmp_path, tmp_path / "broken.xlsx")
    assert code == 2 and "cannot be opened as an .xlsx workbook" in output
    assert (await run_import(tmp_path, tmp_path / "missing.csv"))[0] == 2


async def test_cli_import_list_delete(tmp_path: Path, store: Store) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text(
        f'[store]\npath = "{tmp_path / "syncd.db"}"\n[chengjiyun]\nplatform = "p"\nkey = "{KEY}"\norg_id = "{ORG}"\n'
    )
    imported = await run_syncd(config, "import-exam", str(EXAMPLES / "exam.xlsx"))
    assert imported.returncode == 0, imported.stdout + imported.stderr
    listed = await run_syncd(config, "exams")
    assert (
        "2026-mid-g8" in listed.stdout
        and "3 students" in listed.stdout
        and "question scores: 数学" in listed.stdout
    )
    assert (await run_syncd(config, "delete-exam", "2026-mid-g8")).returncode == 0
    missing = await run_syncd(config, "delete-exam", "2026-mid-g8")
    assert missing.returncode == 1 and "no exam" in missing.stdout
