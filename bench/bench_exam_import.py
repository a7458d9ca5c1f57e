"""Import of one exam of 2,000 students × 9 subjects × 40 questions, from .xlsx and from CSV,
then the time to answer queryQuestionScore for one subject (through the handler and over HTTP).

Targets (issue 5): import under 10 s on a 2-core machine; queryQuestionScore under 200 ms.
Run: .venv/bin/python bench/bench_exam_import.py
"""

from __future__ import annotations

import asyncio
import csv
import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import aiohttp
from aiohttp import web
from openpyxl import Workbook

from syncd.cli.exams import import_exam_command
from syncd.config import parse_config
from syncd.core.model import User
from syncd.core.signing import signed_query
from syncd.log import configure_logging
from syncd.server.app import create_app
from syncd.server.exams import EXAM_ENDPOINTS
from syncd.store import Store

STUDENTS, QUESTIONS = 2000, 40
SUBJECTS = ["语文", "数学", "英语", "物理", "化学", "生物", "政治", "历史", "地理"]


def sheets() -> dict[str, list[list[object]]]:
    rng = random.Random(3)
    accounts = [f"cc-{100000 + n}" for n in range(STUDENTS)]
    numbers = [str(q) for q in range(1, QUESTIONS + 1)]
    data: dict[str, list[list[object]]] = {
        "考试信息": [
            ["项目", "值"],
            ["考试ID", "bench"],
            ["标题", "Benchmark exam"],
            ["年级", 11],
            ["入学年份", 2025],
        ],
        "总分": [["账号", *SUBJECTS]]
        + [[a, *(rng.randint(40, 150) for _ in SUBJECTS)] for a in accounts],
    }
    for subject in SUBJECTS:
        data[f"小题结构-{subject}"] = [
            ["题号", "类型", "满分", "卷别", "选做组", "题型", "知识点", "能力"]
        ] + [
            [
                n,
                "客观题" if int(n) <= 20 else "主观题",
                5,
                "一卷" if int(n) <= 20 else "二卷",
                None,
                "选择题",
                "知识点",
                "理解",
            ]
            for n in numbers
        ]
        data[f"小题分-{subject}"] = [["账号", *numbers]] + [
            [a, *(rng.choice([0, 1, 2, 3, 4, 5, 2.5, None]) for _ in numbers)] for a in accounts
        ]
    return data


def write_inputs(directory: Path) -> tuple[Path, Path]:
    data = sheets()
    workbook = Workbook(write_only=True)
    for name, rows in data.items():
        sheet = workbook.create_sheet(name)
        for row in rows:
            sheet.append(row)
    xlsx = directory / "bench.xlsx"
    workbook.save(xlsx)
    folder = directory / "csv"
    folder.mkdir()
    for name, rows in data.items():
        with (folder / f"{name}.csv").open("w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows([["" if v is None else v for v in row] for row in rows])
    return xlsx, folder


async def main() -> None:
    configure_logging(level="WARNING", stream=sys.stderr)
    with tempfile.TemporaryDirectory() as directory:
        base = Path(directory)
        xlsx, folder = write_inputs(base)
        for label, source in (("xlsx", xlsx), ("csv", folder)):
            db = base / f"{label}.db"
            config = parse_config(
                {
                    "store": {"path": str(db)},
                    "chengjiyun": {"platform": "p", "key": "bench-key", "org_id": "o"},
                }
            )
            async with await Store.open(db) as store:
                await store.record_acknowledged(
                    User(f"cc-{100000 + n}", "P", ("学生",), "classcharts") for n in range(STUDENTS)
                )
            started = time.perf_counter()
            import io

            out = io.StringIO()
            code = await import_exam_command(
                config, SimpleNamespace(paths=[str(source)], dry_run=False), out
            )
            elapsed = time.perf_counter() - started
            assert code == 0, out.getvalue()
            print(
                f"import from {label}: {elapsed:.2f} s for {STUDENTS} students × {len(SUBJECTS)} subjects × {QUESTIONS} questions (target < 10 s)"
            )

        async with await Store.open(base / "xlsx.db") as store:
            params = {"examId": "bench", "course": "数学"}
            timings = []
            for _ in range(5):
                started = time.perf_counter()
                rows = await EXAM_ENDPOINTS["queryQuestionScore"](store, params)
                timings.append(time.perf_counter() - started)
            print(
                f"queryQuestionScore handler: best {min(timings) * 1000:.0f} ms for {len(rows)} students (target < 200 ms)"
            )
            runner = web.AppRunner(create_app(config, store))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            http_timings = []
            async with aiohttp.ClientSession() as session:
                for n in range(5):
                    query = signed_query(
                        {"orgId": "o", "timestamp": int(time.time()) + n, **params}, "bench-key"
                    )
                    started = time.perf_counter()
                    async with session.get(
                        f"http://127.0.0.1:{port}/queryQuestionScore?{query}"
                    ) as response:
                        body = await response.read()
                    http_timings.append(time.perf_counter() - started)
            await runner.cleanup()
            print(
                f"queryQuestionScore over HTTP: best {min(http_timings) * 1000:.0f} ms, {len(body) / 1024:.0f} KiB (target < 200 ms)"
            )


if __name__ == "__main__":
    asyncio.run(main())
