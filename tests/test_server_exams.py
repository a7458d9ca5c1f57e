"""Exam answers are built once per imported exam and follow re-imports and deletions."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import web
from test_exams import EXAMPLES, EXPECTED, KEY, ORG, PARAMS, config_for, run_import, store

from syncd.cli.exams import delete_exam_command
from syncd.core.signing import signed_query
from syncd.server.app import PULL_KEY, create_app
from syncd.store import Store

__all__ = ["store"]  # the fixture, shared with test_exams


async def test_exam_answers_are_cached_per_import(tmp_path: Path, store: Store) -> None:
    assert (await run_import(tmp_path, EXAMPLES / "exam.xlsx"))[0] == 0
    app = create_app(config_for(tmp_path), store)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    stamp = [int(time.time())]

    async def ask(session: aiohttp.ClientSession, name: str) -> tuple[Any, bytes]:
        stamp[0] -= 1  # a fresh sign each time
        query = signed_query({"orgId": ORG, "timestamp": stamp[0], **PARAMS.get(name, {})}, KEY)
        url = f"http://127.0.0.1:{site.port}/{name}?{query}"
        async with session.get(url, headers={"Accept-Encoding": "identity"}) as response:
            raw = await response.read()
            return await response.json(), raw

    try:
        async with aiohttp.ClientSession() as session:
            for name, expected in EXPECTED.items():
                first, first_raw = await ask(session, name)
                _, second_raw = await ask(session, name)
                assert first == {"code": 0, "msg": "success", "data": expected}, name
                assert first_raw == second_raw, name
            assert app[PULL_KEY].school(ORG).exam_answers.builds == len(EXPECTED)

            out: Any = SimpleNamespace(write=lambda text: None)
            args = SimpleNamespace(exam_id="2026-mid-g8")
            assert await delete_exam_command(config_for(tmp_path), args, out) == 0
            body, _ = await ask(session, "queryExamDetail")
            assert body == {"code": 20001, "msg": "没有匹配的数据"}
            body, _ = await ask(session, "queryExam")
            assert body == {"code": 0, "msg": "success", "data": []}

            assert (await run_import(tmp_path, EXAMPLES / "exam.xlsx"))[0] == 0
            body, _ = await ask(session, "queryExamDetail")
            assert body["data"] == EXPECTED["queryExamDetail"]
    finally:
        await runner.cleanup()
