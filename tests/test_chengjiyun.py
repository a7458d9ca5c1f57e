"""The Chengjiyun client against its fake on 127.0.0.1: pushes, classification, SSO."""

from __future__ import annotations

import asyncio
import email.utils
import io
import logging
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from conftest import subprocess_env, syncd_command
from syncd.clients.chengjiyun import ChengjiyunClient, PushOutcome, classify
from syncd.log import configure_logging
from syncd.sandbox.chengjiyun import FakeChengjiyun

KEY = "cjy-test-key-123"


@pytest.fixture
async def fake() -> AsyncIterator[FakeChengjiyun]:
    server = FakeChengjiyun(key=KEY)
    await server.start()
    yield server
    await server.stop()


def client_for(fake: FakeChengjiyun, **kwargs: object) -> ChengjiyunClient:
    return ChengjiyunClient(
        base_url=fake.base_url, platform=fake.platform, key=KEY, org_id=fake.org_id, **kwargs
    )  # type: ignore[arg-type]


STUDENT = {"id": "cc-1", "name": "刘备", "roleList": ["学生"], "grade": 10, "class": 1}


async def test_each_push_changes_the_fake(fake: FakeChengjiyun) -> None:
    async with client_for(fake) as client:
        assert (
            await client.add_users([STUDENT, {"id": "ep-1", "name": "孔明", "roleList": ["教师"]}])
        ).ok
        assert fake.users["cc-1"] == STUDENT
        assert (await client.update_users([{"id": "cc-1", "class": 2}])).ok
        assert fake.users["cc-1"]["class"] == 2
        assert (await client.notify_class_status()).ok
        assert fake.class_status_notifies == 1
        assert (await client.delete_users(["ep-1"])).ok
        assert set(fake.users) == {"cc-1"}
    add = fake.requests_to("/addUser")[0]
    assert add.query["platform"] == fake.platform and set(add.query) == {
        "platform",
        "orgId",
        "timestamp",
        "sign",
    }
    assert set(fake.requests_to("/deleteUser")[0].query) == {"orgId", "timestamp", "sign"}


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "outcome", "code"),
    [
        (200, b'{"code": 0, "msg": "success"}', None, PushOutcome.OK, 0),
        (200, b'{"code": 10002, "msg": "busy"}', None, PushOutcome.TRANSIENT, 10002),
        (200, b'{"code": 10005, "msg": "net"}', None, PushOutcome.TRANSIENT, 10005),
        (200, b'{"code": 10001, "msg": "unknown"}', None, PushOutcome.PERMANENT, 10001),
        (200, b'{"code": 20002, "msg": "bad"}', None, PushOutcome.PERMANENT, 20002),
        (200, b'{"code": 10003, "msg": "no answer"}', None, PushOutcome.TRANSIENT, 10003),
        (200, b'{"code": 10004, "msg": "timeout"}', None, PushOutcome.TRANSIENT, 10004),
        (200, b'{"code": 30006, "msg": "sign"}', None, PushOutcome.ACCOUNT_REFUSED, 30006),
        (200, b'{"code": 30005, "msg": "org"}', None, PushOutcome.ACCOUNT_REFUSED, 30005),
        (200, b'{"code": 10006, "msg": "ip"}', None, PushOutcome.ACCOUNT_REFUSED, 10006),
        (200, b'{"code": 30002, "msg": "parse"}', None, PushOutcome.PERMANENT, 30002),
        (401, b"", None, PushOutcome.ACCOUNT_REFUSED, None),
        (403, b"", None, PushOutcome.ACCOUNT_REFUSED, None),
        (200, b"[" * 100_000 + b"]" * 100_000, None, PushOutcome.PERMANENT, None),
        (200, b'{"code": 40001, "msg": "no user"}', None, PushOutcome.PERMANENT, 40001),
        (200, b"<html>oops", None, PushOutcome.PERMANENT, None),
        (200, b'{"msg": "no code"}', None, PushOutcome.PERMANENT, None),
        (503, b"", None, PushOutcome.TRANSIENT, None),
        (429, b"", "7", PushOutcome.TRANSIENT, None),
        (404, b"", None, PushOutcome.PERMANENT, None),
    ],
)
def test_classification(
    status: int, body: bytes, retry_after: str | None, outcome: PushOutcome, code: int | None
) -> None:
    result = classify(status, body, retry_after)
    assert (result.outcome, result.code) == (outcome, code)
    if retry_after:
        assert result.retry_after_s == 7.0
    assert (result.hint is not None) is (outcome is PushOutcome.ACCOUNT_REFUSED)


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (30006, "check [chengjiyun] key and the server clock"),
        (30005, "check [chengjiyun] org_id / platform"),
        (10006, "check the server's IP is allowed"),
    ],
)
def test_account_refusals_name_the_likely_cause(code: int, hint: str) -> None:
    result = classify(200, f'{{"code": {code}, "msg": "x"}}'.encode())
    assert result.outcome is PushOutcome.ACCOUNT_REFUSED and result.hint == hint
    for status in (401, 403):
        assert "check" in (classify(status, b"").hint or "")


def test_unreadable_answers_say_why() -> None:
    assert "nested too deep" in classify(200, b"[" * 100_000 + b"]" * 100_000).message
    assert "not JSON" in classify(200, b"<html>oops").message
    assert "not Chengjiyun JSON" in classify(200, b"[1, 2]").message


def test_40001_depends_on_the_endpoint() -> None:
    body = '{"code": 40001, "msg": "用户账号不存在"}'.encode()
    assert classify(200, body, endpoint="updateUser").outcome is PushOutcome.NOT_FOUND
    assert classify(200, body, endpoint="deleteUser").outcome is PushOutcome.OK
    assert classify(200, body, endpoint="addUser").outcome is PushOutcome.PERMANENT


def test_retry_after_as_seconds_or_http_date() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert classify(429, b"", date, now_s=now).retry_after_s == 30.0
    assert classify(503, b"", "12", now_s=now).retry_after_s == 12.0
    assert (
        classify(429, b"", email.utils.formatdate(now - 5, usegmt=True), now_s=now).retry_after_s
        == 0.0
    )
    assert classify(429, b"", "soon").retry_after_s is None
    busy = classify(200, b'{"code": 10002, "msg": "busy"}', "3")
    assert busy.outcome is PushOutcome.TRANSIENT and busy.retry_after_s == 3.0


async def test_failures_against_the_fake(fake: FakeChengjiyun) -> None:
    async with client_for(fake, timeout_s=0.3) as client:
        fake.faults.add("busy")
        busy = await client.add_users([STUDENT])
        assert (
            busy.outcome is PushOutcome.TRANSIENT
            and busy.code == 10002
            and "cc-1" not in fake.users
        )
        fake.faults.add("status", value=503)
        assert (await client.add_users([STUDENT])).outcome is PushOutcome.TRANSIENT
        fake.faults.add("status", value=429)
        limited = await client.add_users([STUDENT])
        assert limited.outcome is PushOutcome.TRANSIENT and limited.retry_after_s == 1.0
        fake.faults.add("malformed")
        assert (await client.add_users([STUDENT])).outcome is PushOutcome.PERMANENT
        fake.faults.add("delay", value=1.0)
        slow = await client.add_users([STUDENT])
        assert slow.outcome is PushOutcome.TRANSIENT and "no answer within" in slow.message
        fake.reject_ids["cc-1"] = "学号重复"
        rejected = await client.add_users([STUDENT])
        assert (
            rejected.outcome is PushOutcome.PERMANENT
            and rejected.code == 20002
            and "cc-1" in rejected.message
        )
        missing = await client.update_users([{"id": "nobody", "name": "x"}])
        assert missing.outcome is PushOutcome.NOT_FOUND and missing.code == 40001


async def test_an_account_wide_refusal_applies_nothing(fake: FakeChengjiyun) -> None:
    fake.faults.add("code", value=30006, times=None)
    async with client_for(fake) as client:
        for result in (
            await client.add_users([STUDENT]),
            await client.update_users([{"id": "cc-1", "class": 3}]),
            await client.delete_users(["cc-1"]),
            await client.notify_class_status(),
        ):
            assert result.outcome is PushOutcome.ACCOUNT_REFUSED and result.code == 30006
            assert result.hint == "check [chengjiyun] key and the server clock"
    assert fake.users == {} and fake.class_status_notifies == 0


async def test_an_answer_lost_after_the_push_was_applied(fake: FakeChengjiyun) -> None:
    fake.faults.add("apply_then_delay", path="/addUser", value=1.0)
    async with client_for(fake, timeout_s=0.3) as client:
        lost = await client.add_users([STUDENT])
        assert lost.outcome is PushOutcome.TRANSIENT and "no answer within 0.3 s" in lost.message
        assert fake.users == {"cc-1": STUDENT}, "the fake applied it all the same"
        assert (await client.add_users([STUDENT])).ok, "re-sending an add is an upsert"
    assert fake.users == {"cc-1": STUDENT} and fake.add_count["cc-1"] == 2


async def test_rate_limit_with_retry_after(fake: FakeChengjiyun) -> None:
    async with client_for(fake) as client:
        fake.faults.add("rate_limited", value="17")
        limited = await client.add_users([STUDENT])
        assert limited.outcome is PushOutcome.TRANSIENT and limited.retry_after_s == 17.0
        fake.faults.add("rate_limited", value=email.utils.formatdate(time.time() + 60, usegmt=True))
        dated = await client.add_users([STUDENT])
        assert dated.retry_after_s is not None and 50 < dated.retry_after_s <= 60
    assert fake.users == {}


async def test_drift_update_of_a_dropped_user_and_delete_of_an_unknown_one(
    fake: FakeChengjiyun,
) -> None:
    async with client_for(fake) as client:
        assert (await client.add_users([STUDENT])).ok
        fake.drop_user("cc-1")
        assert fake.users == {}
        gone = await client.update_users([{"id": "cc-1", "class": 2}])
        assert gone.outcome is PushOutcome.NOT_FOUND
        assert (await client.delete_users(["cc-1", "never-there"])).ok
        assert (await client.add_users([STUDENT])).ok
    assert fake.users == {"cc-1": STUDENT}


async def test_an_oversized_answer_is_refused(fake: FakeChengjiyun) -> None:
    async with client_for(fake, max_response_bytes=4096) as client:
        fake.faults.add("huge", value=10 * 1024 * 1024)
        result = await client.notify_class_status()
    assert result.outcome is PushOutcome.PERMANENT and "4096 bytes" in result.message


async def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with ChengjiyunClient(
        base_url=f"http://127.0.0.1:{port}", platform="p", key=KEY, org_id="o"
    ) as client:
        result = await client.notify_class_status()
    assert result.outcome is PushOutcome.TRANSIENT and "connection failed" in result.message


async def test_timestamp_is_taken_when_sent(fake: FakeChengjiyun) -> None:
    now = [1_000_000.0]
    async with client_for(fake, clock=lambda: now[0]) as client:
        stale = await client.notify_class_status()  # the fake's clock is the real one: far away
        assert stale.code == 30006
        import time

        now[0] = time.time()
        assert (await client.notify_class_status()).ok
    assert fake.requests_to("/update/classStatus")[-1].query["timestamp"] == str(int(now[0]))


async def test_wrong_key_and_org_are_refused(fake: FakeChengjiyun) -> None:
    async with ChengjiyunClient(
        base_url=fake.base_url, platform=fake.platform, key="wrong", org_id=fake.org_id
    ) as client:
        assert (await client.add_users([STUDENT])).code == 30006
    async with ChengjiyunClient(
        base_url=fake.base_url, platform=fake.platform, key=KEY, org_id="other"
    ) as client:
        assert (await client.add_users([STUDENT])).code == 30005
    async with ChengjiyunClient(
        base_url=fake.base_url, platform="other", key=KEY, org_id=fake.org_id
    ) as client:
        assert (await client.add_users([STUDENT])).code == 30005


@pytest.mark.parametrize(
    ("mobile", "stage"), [(False, None), (True, None), (False, "高中"), (True, "初中")]
)
async def test_sso_links_verify_at_the_portal(
    fake: FakeChengjiyun, mobile: bool, stage: str | None
) -> None:
    url = client_for(fake).sso_url("zhiwei_01", mobile=mobile, stage=stage)
    assert ("/mobile-portal/" in url) is mobile
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        body = await response.json()
    assert body["code"] == 0 and body["data"] == {"account": "zhiwei_01", "type": stage}


async def test_the_key_never_reaches_a_result_or_a_log_line(fake: FakeChengjiyun) -> None:
    stream = io.StringIO()
    configure_logging(secrets=[KEY], json_output=True, stream=stream, level="DEBUG")
    try:
        async with client_for(fake, timeout_s=0.2) as client:
            fake.faults.add("delay", value=0.5)
            results = [await client.add_users([STUDENT]), await client.add_users([{"bad": True}])]
            logging.getLogger("aiohttp.client").debug("url with key %s", KEY)
    finally:
        logging.getLogger().handlers.clear()
    assert all(KEY not in r.message for r in results)
    assert KEY not in stream.getvalue()


async def test_sso_url_command_through_the_cli(fake: FakeChengjiyun, tmp_path: Path) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text(
        f'[chengjiyun]\nbase_url = "{fake.base_url}"\nplatform = "{fake.platform}"\nkey = "{KEY}"\norg_id = "{fake.org_id}"\n',
        encoding="utf-8",
    )
    result = await asyncio.to_thread(
        subprocess.run,
        syncd_command("--config", str(config), "sso-url", "zhiwei_01", "--stage", "高中"),
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert url.startswith(f"{fake.base_url}/portal/{fake.platform}?") and KEY not in url
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert (await response.json())["code"] == 0
