"""The pull API on a real aiohttp server over 127.0.0.1, answering from a real SQLite store."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from store_helpers import acknowledge, record_poll
from syncd.config import Config, parse_config
from syncd.core.model import ClassStatus, User
from syncd.core.signing import sign
from syncd.server.app import create_app
from syncd.store import Store

KEY = "pull-api-test-key"
ORG = "school-42"

USERS = [
    User(
        "cc-1",
        "刘备",
        ("学生",),
        "classcharts",
        school_id="20190101",
        gender="男",
        grade=10,
        class_no=1,
    ),
    User("cc-2", "关羽", ("学生",), "classcharts", grade=11, class_no=2),
    User("cc-parent-9", "费曼", ("家长",), "classcharts", student_list=("cc-1", "cc-2")),
    User("ep-t1", "孔明", ("教师",), "epaas"),
]
STATUS = ClassStatus("ep-class-1", 2018, 10, 1, "ep-t1", 1, (("数学", "ep-t1"), ("语文", "ep-t1")))


def make_config(tmp_path: Path, **server: Any) -> Config:
    return parse_config(
        {
            "store": {"path": str(tmp_path / "syncd.db")},
            "chengjiyun": {"platform": "p", "key": KEY, "org_id": ORG},
            "server": {"listen": "127.0.0.1:0", **server},
            "epaas": {
                "suite_id": "s",
                "suite_secret": "s-secret",
                "suite_ticket": "t-ticket",
                "auth_corpid": "c",
                "permanent_code": "p-code",
            },
        }
    )


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[str, Store]]:
    config = make_config(tmp_path, base_path="/cjy")
    store = await Store.open(config.store.path)
    await acknowledge(store, USERS, [STATUS])
    runner = web.AppRunner(create_app(config, store))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", store
    await runner.cleanup()
    await store.close()


def signed(
    params: dict[str, Any], *, key: str = KEY, timestamp: float | None = None
) -> dict[str, str]:
    values = {
        "orgId": ORG,
        "timestamp": str(int(timestamp if timestamp is not None else time.time())),
        **params,
    }
    return {**{k: str(v) for k, v in values.items()}, "sign": sign(values, key)}


async def get(
    url: str, params: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, Any], str]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, params=params) as response,
    ):
        text = await response.text()
        return response.status, await response.json(content_type=None), text


async def test_query_users_all_and_by_role(api: tuple[str, Store]) -> None:
    base, _ = api
    _, body, _ = await get(f"{base}/cjy/queryUsers", signed({}))
    assert body["code"] == 0 and body["msg"] == "success"
    assert {u["id"] for u in body["data"]} == {u.id for u in USERS}
    student = next(u for u in body["data"] if u["id"] == "cc-1")
    assert student == {
        "id": "cc-1",
        "name": "刘备",
        "roleList": ["学生"],
        "schoolId": "20190101",
        "gender": "男",
        "grade": 10,
        "class": 1,
    }
    answers = {}
    for role, ids in (
        ("学生", {"cc-1", "cc-2"}),
        ("教师", {"ep-t1"}),
        ("家长", {"cc-parent-9"}),
        ("管理员", set()),
    ):
        _, answers[role], _ = await get(f"{base}/cjy/queryUsers", signed({"role": role}))
        assert answers[role]["code"] == 0, role
        assert {u["id"] for u in answers[role]["data"]} == ids, role
    assert answers["家长"]["data"][0]["studentList"] == ["cc-1", "cc-2"]


async def test_query_class_status(api: tuple[str, Store]) -> None:
    base, _ = api
    _, body, _ = await get(f"{base}/cjy/queryClassStatus", signed({}))
    assert body == {
        "code": 0,
        "msg": "success",
        "data": [
            {
                "year": 2018,
                "grade": 10,
                "class": 1,
                "headTeacher": "ep-t1",
                "subject": 1,
                "courseTeacherList": {"数学": "ep-t1", "语文": "ep-t1"},
            }
        ],
    }


@pytest.mark.parametrize(
    ("params", "code"),
    [
        pytest.param(lambda: signed({}, key="wrong-key"), 30006, id="wrong-sign"),
        pytest.param(lambda: signed({}, timestamp=time.time() - 7200), 30006, id="two-hours-old"),
        pytest.param(
            lambda: {k: v for k, v in signed({}).items() if k != "sign"}, 30002, id="missing-sign"
        ),
        pytest.param(
            lambda: {k: v for k, v in signed({}).items() if k != "timestamp"},
            30002,
            id="missing-timestamp",
        ),
        pytest.param(
            lambda: {k: v for k, v in signed({}).items() if k != "orgId"}, 30002, id="missing-orgId"
        ),
        pytest.param(lambda: {**signed({}), "orgId": "other"}, 30005, id="wrong-orgId"),
        pytest.param(
            lambda: {**signed({}), "timestamp": "soon"}, 30003, id="timestamp-not-a-number"
        ),
        pytest.param(
            lambda: {**signed({}), "timestamp": "9" * 4000}, 30003, id="timestamp-4000-digits"
        ),
        pytest.param(lambda: {**signed({}), "timestamp": "-5"}, 30003, id="timestamp-negative"),
        pytest.param(lambda: signed({"role": "校长"}), 30005, id="unknown-role"),
        pytest.param(lambda: signed({"padding": "x" * 5000}), 30004, id="huge-query"),
        pytest.param(
            lambda: {**signed({"role": "学生"}), "role": "教师"}, 30006, id="tampered-parameter"
        ),
    ],
)
async def test_refusals_are_json_with_the_right_code(
    api: tuple[str, Store], params: Any, code: int
) -> None:
    base, _ = api
    _, body, text = await get(f"{base}/cjy/queryUsers", params())
    assert body["code"] == code
    assert "data" not in body
    assert "Traceback" not in text and "<html" not in text


async def test_a_replayed_sign_is_refused(api: tuple[str, Store]) -> None:
    base, _ = api
    params = signed({"role": "学生"})
    _, first, _ = await get(f"{base}/cjy/queryUsers", params)
    _, second, _ = await get(f"{base}/cjy/queryUsers", params)
    assert first["code"] == 0
    assert second == {"code": 30006, "msg": "验证失败"}


async def test_unknown_path_and_wrong_method(api: tuple[str, Store]) -> None:
    base, _ = api
    status, body, text = await get(f"{base}/cjy/queryEverything", signed({}))
    assert (status, body["code"]) == (404, 30001)
    status, body, _ = await get(f"{base}/nowhere/at/all")
    assert (status, body["code"]) == (404, 30001)
    status, body, _ = await get(f"{base}/cjy/queryUsers", signed({}), method="POST")
    assert body["code"] == 30001 and status == 405
    assert "<html" not in text


async def test_utf8_values_are_signed_as_raw_text(api: tuple[str, Store]) -> None:
    base, _ = api
    values = {"orgId": ORG, "role": "学生", "timestamp": str(int(time.time()))}
    raw = "orgId=school-42&role=学生&timestamp=" + values["timestamp"] + "&key=" + KEY
    import hashlib

    manual = hashlib.md5(raw.encode()).hexdigest()
    _, body, _ = await get(f"{base}/cjy/queryUsers", {**values, "sign": manual})
    assert body["code"] == 0


async def test_metrics_parse_and_healthz(api: tuple[str, Store], tmp_path: Path) -> None:
    base, store = api
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        text = await response.text()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "syncd_cycles",
        "syncd_operations",
        "syncd_queue_depth",
        "syncd_held_deletions",
        "syncd_dead_letters",
        "syncd_cycle_duration_seconds",
        "syncd_chengjiyun_answers",
        "syncd_upstream_request_seconds",
    } <= names

    status, body, _ = await get(f"{base}/healthz")
    assert status == 200 and body["healthy"] is True
    assert body["sources"]["epaas"]["status"] == "waiting for first poll"
    assert body["dead_letters"] == {"count": 0, "status": "ok"}
    assert body["held_deletions"] == {"count": 0, "status": "ok"}

    await record_poll(store, "epaas", ok=True, error=None, now=time.time())
    status, body, _ = await get(f"{base}/healthz")
    assert status == 200 and body["sources"]["epaas"]["status"] == "ok"

    for _ in range(3):
        await record_poll(
            store,
            "epaas",
            ok=False,
            error="epaas get_corp_token: errcode 40001: invalid permanent_code",
        )
    status, body, text = await get(f"{base}/healthz")
    assert status == 503 and body["healthy"] is False
    assert body["sources"]["epaas"]["status"] == "failing"
    # States only: an upstream's error text can echo a secret, and /healthz needs no sign.
    assert "last_error" not in body["sources"]["epaas"]
    assert "40001" not in text and "permanent_code" not in text


async def test_a_stale_source_is_unhealthy(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with await Store.open(config.store.path) as store:
        await record_poll(store, "epaas", ok=True, error=None, now=time.time() - 4 * 3600)
        from syncd.server.app import health

        report = await health(config, store, now=time.time())
    assert report["healthy"] is False
    assert report["sources"]["epaas"]["status"] == "stale"
    assert report["sources"]["epaas"]["stale_after_s"] == 3 * 3600


async def test_a_future_stamped_sign_cannot_be_replayed_while_it_is_valid() -> None:
    from syncd.server.app import ReplayCache

    cache = ReplayCache(window_s=600)
    assert not cache.seen_before("queryUsers:abc", timestamp=1000 + 500, now=1000)
    # 700 s later the first sighting is old, but the request's own timestamp is still valid.
    assert cache.seen_before("queryUsers:abc", timestamp=1000 + 500, now=1700)
    assert not cache.seen_before("queryUsers:abc", timestamp=3000, now=2200)  # expired, then new
