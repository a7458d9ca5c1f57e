"""Replay cache by time with a bounded capacity, and answers built once per snapshot change."""

from __future__ import annotations

import asyncio
import gzip
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from test_server import STATUS, USERS, make_config, signed
from test_server_helpers import served

from store_helpers import acknowledge
from syncd.core.model import User
from syncd.server.app import SERVED_KEY, create_app
from syncd.server.replay import Admission, ReplayCache
from syncd.store import Store


def test_a_full_cache_refuses_new_signs_and_keeps_the_valid_ones() -> None:
    cache = ReplayCache(window_s=600, max_entries=3)
    for n in range(3):
        assert cache.admit(f"sign-{n}", timestamp=1000, now=1000) is Admission.FRESH
    assert cache.admit("sign-new", timestamp=1000, now=1001) is Admission.FULL
    assert cache.admit("sign-0", timestamp=1000, now=1599) is Admission.REPLAY
    assert len(cache) == 3
    # Once their timestamps leave the window the room comes back.
    assert cache.admit("sign-new", timestamp=1601, now=1601) is Admission.FRESH
    assert len(cache) == 1


def test_signs_expire_by_their_own_timestamp() -> None:
    cache = ReplayCache(window_s=600, max_entries=10)
    assert cache.admit("old", timestamp=400, now=1000) is Admission.FRESH  # valid until 1000
    assert cache.admit("future", timestamp=1500, now=1000) is Admission.FRESH  # until 2100
    assert cache.admit("x", timestamp=1001, now=1001) is Admission.FRESH
    assert len(cache) == 2  # "old" is gone
    assert cache.admit("future", timestamp=1500, now=2100) is Admission.REPLAY
    assert cache.admit("future", timestamp=1500, now=2101) is Admission.FRESH


async def _app(tmp_path: Path, **kwargs: Any) -> tuple[str, web.AppRunner, Store]:
    config = make_config(tmp_path, base_path="/cjy")
    store = await Store.open(config.store.path)
    await acknowledge(store, USERS, [STATUS])
    runner = web.AppRunner(create_app(config, store, **kwargs))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return f"http://127.0.0.1:{site.port}", runner, store


async def test_a_replay_flood_past_capacity_never_admits_a_sign_twice(tmp_path: Path) -> None:
    base, runner, store = await _app(tmp_path, replay_capacity=5)
    now = int(time.time())
    try:
        async with aiohttp.ClientSession() as session:

            async def code(params: dict[str, str]) -> int:
                async with session.get(f"{base}/cjy/queryUsers", params=params) as response:
                    return int((await response.json())["code"])

            first = signed({}, timestamp=now)
            assert await code(first) == 0
            flood = [signed({}, timestamp=now - n) for n in range(1, 40)]
            codes = [await code(params) for params in flood]
            assert codes[:4] == [0, 0, 0, 0]
            assert set(codes[4:]) == {10002}  # busy, not an eviction
            assert await code(first) == 30006  # the early sign is still refused as a replay
            assert await code(flood[0]) == 30006
            assert await code(flood[10]) == 10002  # never admitted, so not a replay either
    finally:
        await runner.cleanup()
        await store.close()


async def _get(session: aiohttp.ClientSession, url: str, params: dict[str, str], **kw: Any) -> Any:
    async with session.get(url, params=params, **kw) as response:
        return response.status, dict(response.headers), await response.read()


async def test_answers_are_built_once_per_snapshot_change(tmp_path: Path) -> None:
    async with served(tmp_path) as api, aiohttp.ClientSession() as session:
        url = f"{api.base}/cjy/queryUsers"
        now = int(time.time())
        _, _, first = await _get(session, url, signed({}, timestamp=now))
        _, _, second = await _get(session, url, signed({}, timestamp=now - 1))
        assert first == second
        assert api.answers.builds == 1

        await acknowledge(api.store, [User("ep-t2", "郭嘉", ("教师",), "epaas")])
        results = await asyncio.gather(
            *(_get(session, url, signed({}, timestamp=now - 2 - n)) for n in range(20))
        )
        assert api.answers.builds == 2  # one shared build for the twenty
        bodies = {body for _, _, body in results}
        assert len(bodies) == 1 and b"ep-t2" in bodies.pop()

        _, _, teachers = await _get(session, url, signed({"role": "教师"}, timestamp=now))
        assert b"ep-t2" in teachers and b"cc-1" not in teachers
        _, _, statuses = await _get(session, f"{api.base}/cjy/queryClassStatus", signed({}))
        assert b"headTeacher" in statuses
        assert api.answers.builds == 4


async def test_gzip_is_served_when_asked_for(tmp_path: Path) -> None:
    async with served(tmp_path) as api, aiohttp.ClientSession(auto_decompress=False) as session:
        url = f"{api.base}/cjy/queryUsers"
        now = int(time.time())
        _, plain_headers, plain = await _get(
            session, url, signed({}, timestamp=now), headers={"Accept-Encoding": "identity"}
        )
        _, headers, packed = await _get(
            session, url, signed({}, timestamp=now - 1), headers={"Accept-Encoding": "gzip"}
        )
        _, refused_headers, _ = await _get(
            session, url, signed({}, timestamp=now - 2), headers={"Accept-Encoding": "gzip;q=0"}
        )
    assert headers["Content-Encoding"] == "gzip" and "Content-Encoding" not in plain_headers
    assert "Content-Encoding" not in refused_headers
    assert gzip.decompress(packed) == plain
    assert int(headers["Content-Length"]) == len(packed)


async def test_a_large_answer_is_streamed_whole(tmp_path: Path) -> None:
    """Over one chunk: written in drained pieces, with the right Content-Length."""
    async with served(tmp_path) as api:
        await acknowledge(
            api.store,
            [
                User(f"cc-big-{n}", f"学生{n}", ("学生",), "classcharts", grade=10, class_no=1)
                for n in range(3000)
            ],
        )
        stamp = int(time.time())  # the HEAD below must not reuse this sign, however slow
        async with aiohttp.ClientSession() as session:
            status, headers, body = await _get(
                session,
                f"{api.base}/cjy/queryUsers",
                signed({}, timestamp=stamp),
                headers={"Accept-Encoding": "identity"},
            )
        assert status == 200 and int(headers["Content-Length"]) == len(body) > 64 * 1024
        assert body.count(b'"roleList"') == 3000 + len(USERS)
        async with (
            aiohttp.ClientSession() as session,
            session.head(
                f"{api.base}/cjy/queryUsers",
                params=signed({}, timestamp=stamp - 1),
                headers={"Accept-Encoding": "identity"},
            ) as response,
        ):
            assert response.status == 200 and await response.read() == b""
            assert int(response.headers["Content-Length"]) == len(body)
        assert SERVED_KEY in api.runner.app


async def test_answers_shape_users_as_the_store_serves_them(tmp_path: Path) -> None:
    from syncd.core.model import ROLES
    from syncd.server.answers import shape_users

    async with served(tmp_path) as api:
        records = await api.store.snapshot.user_records()
        for role in (None, *ROLES):
            assert shape_users(records, role) == await api.store.served_users(role), role
