"""The outbox worker over a real SQLite file and the fake Chengjiyun on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from syncd.clients.chengjiyun import ChengjiyunClient
from syncd.config import SafetyConfig
from syncd.core.diff import diff_source
from syncd.core.model import ClassStatus, User
from syncd.engine.drain import OutboxWorker, backoff_s
from syncd.sandbox.chengjiyun import FakeChengjiyun
from syncd.store import Store


@pytest.fixture
async def fake() -> AsyncIterator[FakeChengjiyun]:
    server = FakeChengjiyun()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "syncd.db")
    yield opened
    await opened.close()


def pupils(n: int, *, renamed: int | None = None) -> dict[str, User]:
    return {
        f"cc-{i}": User(
            f"cc-{i}", "Renamed" if i == renamed else f"Pupil {i}", ("学生",), "classcharts"
        )
        for i in range(n)
    }


async def enqueue(
    store: Store, desired: dict[str, User], statuses: dict[str, ClassStatus] | None = None
) -> dict[str, int]:
    diff = diff_source(
        source="classcharts",
        desired=desired,
        acknowledged=await store.acknowledged("classcharts"),
        complete=True,
        failed_owners=frozenset(),
        approved_ids=frozenset(),
        safety=SafetyConfig(delete_after_cycles=1, max_delete_fraction=1.0),
        desired_class_statuses=statuses,
        stored_class_statuses=await store.stored_class_statuses(),
    )
    return await store.apply_diff(diff, desired)


def worker(
    store: Store, fake: FakeChengjiyun, **kwargs: object
) -> tuple[OutboxWorker, ChengjiyunClient]:
    client = ChengjiyunClient(
        base_url=fake.base_url, platform=fake.platform, key=fake.key, org_id=fake.org_id
    )
    options = {
        "batch_size": 100,
        "requests_per_second": 500,
        "max_attempts": 5,
        "retry_base_s": 0.01,
        "retry_max_s": 0.05,
        "rng": random.Random(1),
    }
    options.update(kwargs)
    return OutboxWorker(store, client, **options), client  # type: ignore[arg-type]


async def test_batches_and_order(store: Store, fake: FakeChengjiyun) -> None:
    await enqueue(store, pupils(250))
    w, client = worker(store, fake)
    report = await w.drain()
    assert [len(p.body) for p in fake.pushes] == [100, 100, 50]
    assert report.sent["addUser"] == 250 and report.requests == 3 and report.remaining == 0

    desired = pupils(250, renamed=3)
    del desired["cc-7"]
    status = ClassStatus("ep-class-1", 2025, 8, 1, None)
    queued = await enqueue(store, desired, {"ep-class-1": status})
    assert queued == {"addUser": 0, "updateUser": 1, "deleteUser": 1, "classStatus": 1}
    before = len(fake.pushes)
    await w.drain()
    await client.close()
    assert [p.endpoint for p in fake.pushes[before:]] == [
        "updateUser",
        "update/classStatus",
        "deleteUser",
    ]
    assert len(fake.users) == 249 and fake.users["cc-3"]["name"] == "Renamed"


async def test_rerunning_the_same_diff_enqueues_nothing_twice(
    store: Store, fake: FakeChengjiyun
) -> None:
    assert (await enqueue(store, pupils(5)))["addUser"] == 5
    assert (await enqueue(store, pupils(5)))["addUser"] == 5  # replaces, does not add
    assert (await store.queue_depth()) == {"addUser": 5}
    w, client = worker(store, fake)
    await w.drain()
    assert (await enqueue(store, pupils(5))) == {
        "addUser": 0,
        "updateUser": 0,
        "deleteUser": 0,
        "classStatus": 0,
    }
    await client.close()


async def test_transient_failures_retry_to_an_exact_state(
    store: Store, fake: FakeChengjiyun
) -> None:
    fake.faults.transient_fraction = 0.3
    await enqueue(store, pupils(120))
    w, client = worker(store, fake, batch_size=10, max_attempts=20)
    report = await w.drain()
    await client.close()
    assert report.retried > 0 and not report.dead
    assert set(fake.users) == set(pupils(120)) and max(fake.add_count.values()) == 1


async def test_retry_after_is_honoured(store: Store, fake: FakeChengjiyun) -> None:
    fake.faults.add("status", value=429)  # the fake says Retry-After: 1
    await enqueue(store, pupils(1))
    w, client = worker(store, fake)
    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await w.drain()
    await client.close()
    assert report.sent["addUser"] == 1 and report.retried == 1
    assert loop.time() - started >= 0.9


async def test_a_bad_record_is_isolated_by_splitting(store: Store, fake: FakeChengjiyun) -> None:
    fake.reject_ids["cc-6"] = "数据重复"
    await enqueue(store, pupils(10))
    w, client = worker(store, fake, batch_size=10)
    report = await w.drain()
    await client.close()
    assert set(fake.users) == set(pupils(10)) - {"cc-6"}
    assert report.dead == [
        {
            "kind": "addUser",
            "record_id": "cc-6",
            "code": 20002,
            "reason": "code 20002: 数据无效: cc-6: 数据重复",
        }
    ]
    assert (
        report.requests == 1 + 2 + 2 + 2
    )  # whole, halves, quarters, the single bad one and its neighbour
    assert [d["record_id"] for d in await store.dead_letters()] == ["cc-6"]
    assert "cc-6" not in {u["id"] for u in await store.served_users()}
    assert (await enqueue(store, pupils(10)))["addUser"] == 0, (
        "an identical dead operation is not re-sent every cycle"
    )


async def test_gives_up_after_max_attempts(store: Store, fake: FakeChengjiyun) -> None:
    fake.faults.add("busy", times=None)
    await enqueue(store, pupils(2))
    w, client = worker(store, fake, max_attempts=3)
    report = await w.drain()
    await client.close()
    assert len(report.dead) == 2 and "gave up after 3 attempts" in report.dead[0]["reason"]
    assert await store.served_users() == []
    assert len(fake.pushes) == 3


async def test_snapshot_advances_only_on_acknowledgement(
    store: Store, fake: FakeChengjiyun
) -> None:
    await enqueue(store, pupils(3))
    assert await store.served_users() == []
    fake.faults.add("delay", value=0.5)
    w, client = worker(store, fake)
    task = asyncio.create_task(w.drain())
    await asyncio.sleep(0.2)
    assert await store.served_users() == []
    await task
    await client.close()
    assert len(await store.served_users()) == 3


async def test_a_cancelled_drain_loses_nothing(tmp_path: Path, fake: FakeChengjiyun) -> None:
    path = tmp_path / "crash.db"
    store = await Store.open(path)
    await enqueue(store, pupils(30))
    fake.faults.add("delay", path="/vendor-api/addUser", times=None, value=0.2)
    w, client = worker(store, fake, batch_size=5)
    task = asyncio.create_task(w.drain())
    while len(fake.accepted("addUser")) < 2:  # noqa: ASYNC110 - polling a fake
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await client.close()
    await store.close()
    fake.faults.clear()

    reopened = await Store.open(path)
    w, client = worker(reopened, fake, batch_size=5)
    await w.drain()
    await client.close()
    assert set(fake.users) == set(pupils(30))
    assert {u["id"] for u in await reopened.served_users()} == set(pupils(30))
    assert await reopened.queue_depth() == {}
    await reopened.close()


async def test_claim_skips_what_the_snapshot_already_reflects(
    store: Store, fake: FakeChengjiyun
) -> None:
    await enqueue(store, pupils(3))
    w, client = worker(store, fake)
    await w.drain()
    # An older diff arriving after the acknowledgement (daemon race): its rows must not be sent.
    async with store.write() as db:
        await db.execute(
            "INSERT INTO outbox (kind, record_id, payload, record, hash, source, created_at) "
            "SELECT 'addUser', id, record, record, hash, source, 0 FROM users"
        )
        await db.execute(
            "INSERT INTO outbox (kind, record_id, payload, source, created_at) VALUES ('deleteUser', 'cc-99', '\"cc-99\"', 'classcharts', 0)"
        )
    before = len(fake.pushes)
    report = await w.drain()
    await client.close()
    assert len(fake.pushes) == before and report.requests == 0
    assert await store.queue_depth() == {}


async def test_run_forever_wakes_and_stops(store: Store, fake: FakeChengjiyun) -> None:
    w, client = worker(store, fake)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run_forever(stop))
    await enqueue(store, pupils(4))
    w.wake()
    for _ in range(100):
        if len(fake.users) == 4:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 5)
    await client.close()
    assert len(fake.users) == 4


@pytest.mark.parametrize("attempts", [0, 1, 3, 10])
def test_backoff_is_full_jitter_under_the_cap(attempts: int) -> None:
    rng = random.Random(attempts)
    values = [backoff_s(attempts, base_s=1.0, max_s=60.0, rng=rng) for _ in range(200)]
    assert all(0 <= v <= min(60.0, 2.0**attempts) for v in values)
    assert max(values) > 0.5 * min(60.0, 2.0**attempts)
