"""The outbox worker over a real SQLite file and the fake Chengjiyun on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conftest import subprocess_env
from store_helpers import user_diff
from syncd.clients.chengjiyun import ChengjiyunClient
from syncd.config import SafetyConfig
from syncd.core.diff import SourceDiff, diff_source
from syncd.core.model import ClassStatus, User
from syncd.engine.drain import DrainStop, OutboxWorker, backoff_s
from syncd.sandbox.base import RecordedRequest
from syncd.sandbox.chengjiyun import FakeChengjiyun
from syncd.store import IN_FLIGHT_WAIT_S, Claim, Store
from syncd.store.database import Database, GroupCommit


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
        acknowledged=await store.snapshot.acknowledged("classcharts"),
        complete=True,
        failed_owners=frozenset(),
        approved_ids=frozenset(),
        safety=SafetyConfig(delete_after_cycles=1, max_delete_fraction=1.0),
        desired_class_statuses=statuses,
        stored_class_statuses=await store.snapshot.stored_class_statuses(),
    )
    return await store.commit_cycle(diff, desired, may_delete_orphans=True)


def worker(
    store: Store, fake: FakeChengjiyun, *, key: str | None = None, **kwargs: object
) -> tuple[OutboxWorker, ChengjiyunClient]:
    client = ChengjiyunClient(
        base_url=fake.base_url, platform=fake.platform, key=key or fake.key, org_id=fake.org_id
    )
    options = {
        "batch_size": 100,
        "requests_per_second": 500,
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
    w, client = worker(store, fake, batch_size=10)
    report = await w.drain()
    await client.close()
    assert report.retried > 0 and not report.dead
    assert set(fake.users) == set(pupils(120)) and max(fake.add_count.values()) == 1


async def test_retry_after_is_honoured(store: Store, fake: FakeChengjiyun) -> None:
    fake.faults.add("status", value=429)  # the fake says Retry-After: 1
    await enqueue(store, pupils(1))
    w, client = worker(store, fake, retry_max_s=5.0)
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


async def test_transient_failures_never_dead_letter(store: Store, fake: FakeChengjiyun) -> None:
    fake.faults.add("busy", times=None)
    await enqueue(store, pupils(2))
    w, client = worker(store, fake)
    report = await w.drain(timeout_s=0.5)
    await client.close()
    assert report.dead == [] and report.remaining == 2 and report.stopped == DrainStop.TIMEOUT
    assert report.last_transient is not None and "10002" in report.last_transient
    assert await store.outbox.dead_letter_count() == 0 and await store.served_users() == []
    fake.faults.clear()
    w, client = worker(store, fake)
    assert (await w.drain()).sent["addUser"] == 2
    await client.close()


async def test_a_long_retry_after_is_capped_at_retry_max_s(
    store: Store, fake: FakeChengjiyun
) -> None:
    fake.faults.add("status", value=429)  # the fake says Retry-After: 1
    await enqueue(store, pupils(1))
    w, client = worker(store, fake, retry_max_s=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await w.drain()
    await client.close()
    assert report.sent["addUser"] == 1 and loop.time() - started < 0.9


async def test_a_refused_account_stops_the_drain_and_keeps_everything(
    store: Store, fake: FakeChengjiyun
) -> None:
    await enqueue(store, pupils(250))
    w, client = worker(store, fake, key="wrong-key", batch_size=100)
    report = await w.drain()
    await client.close()
    assert report.requests == 1 and report.stopped == DrainStop.REFUSED
    assert report.refused_hint is not None and "[chengjiyun] key" in report.refused_hint
    assert report.dead == [] and report.remaining == 250
    assert await store.outbox.dead_letter_count() == 0


async def test_an_update_of_a_user_removed_at_chengjiyun_is_healed_by_an_add(
    store: Store, fake: FakeChengjiyun
) -> None:
    await enqueue(store, pupils(3))
    w, client = worker(store, fake)
    await w.drain()
    del fake.users["cc-1"]  # someone deleted it in Chengjiyun directly
    await enqueue(store, pupils(3, renamed=1))
    report = await w.drain()
    await client.close()
    assert report.healed == 1 and report.dead == []
    assert [p.endpoint for p in fake.pushes[-2:]] == ["updateUser", "addUser"]
    assert fake.users["cc-1"]["name"] == "Renamed"


async def test_an_add_in_doubt_is_deleted_when_its_user_leaves(
    store: Store, fake: FakeChengjiyun
) -> None:
    await enqueue(store, pupils(2))
    claim = await store.claim(100)  # sent ... and the answer never came (crash, timeout)
    assert {row.record_id for row in claim.batch} == {"cc-0", "cc-1"}
    fake.users["cc-1"] = {"id": "cc-1", "name": "Pupil 1", "roleList": ["学生"]}  # it arrived
    queued = await enqueue(store, {"cc-0": pupils(2)["cc-0"]})  # cc-1 left meanwhile
    assert queued["addUser"] == 1 and queued["deleteUser"] == 1
    w, client = worker(store, fake)
    await w.drain()
    await client.close()
    assert set(fake.users) == {"cc-0"}
    assert await enqueue(store, {"cc-0": pupils(2)["cc-0"]}) == {
        "addUser": 0,
        "updateUser": 0,
        "deleteUser": 0,
        "classStatus": 0,
    }


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
    older = user_diff(pupils(3))
    stale_delete = SourceDiff(
        source="classcharts", deletes=(User("cc-99", "X", ("学生",), "classcharts"),)
    )
    await store.commit_cycle(older, pupils(3), may_delete_orphans=False)
    await store.commit_cycle(stale_delete, pupils(3), may_delete_orphans=False)
    assert await store.queue_depth() != {}
    before = len(fake.pushes)
    report = await w.drain()
    await client.close()
    assert len(fake.pushes) == before and report.requests == 0
    assert await store.queue_depth() == {}


@pytest.mark.parametrize("attempts", [0, 1, 3, 10])
def test_backoff_is_full_jitter_under_the_cap(attempts: int) -> None:
    rng = random.Random(attempts)
    values = [backoff_s(attempts, base_s=1.0, max_s=60.0, rng=rng) for _ in range(200)]
    assert all(0 <= v <= min(60.0, 2.0**attempts) for v in values)
    assert max(values) > 0.5 * min(60.0, 2.0**attempts)


# --- several requests in flight ------------------------------------------------------------------


def wide_worker(
    store: Store, fake: FakeChengjiyun, *, max_in_flight: int, key: str | None = None, **kwargs: Any
) -> tuple[OutboxWorker, ChengjiyunClient]:
    client = ChengjiyunClient(
        connections=max_in_flight,
        base_url=fake.base_url,
        platform=fake.platform,
        key=key or fake.key,
        org_id=fake.org_id,
    )
    options: dict[str, Any] = {
        "batch_size": 1,
        "requests_per_second": 500,
        "retry_base_s": 0.01,
        "retry_max_s": 0.05,
        "rng": random.Random(1),
        "max_in_flight": max_in_flight,
    }
    options.update(kwargs)
    return OutboxWorker(store, client, **options), client


class ArrivalTimes(list[RecordedRequest]):
    """The fake's request log, noting when each request arrived (before any injected delay)."""

    def __init__(self) -> None:
        super().__init__()
        self.at: list[float] = []

    def append(self, request: RecordedRequest) -> None:
        self.at.append(time.time())
        super().append(request)

    def arrivals(self, suffix: str) -> list[float]:
        return [
            at for request, at in zip(self, self.at, strict=True) if request.path.endswith(suffix)
        ]


async def test_requests_overlap_under_latency(store: Store, fake: FakeChengjiyun) -> None:
    # Latency well above the per-request bookkeeping (two SQLite commits), so a loaded CI
    # machine still shows the overlap clearly.
    fake.faults.add("delay", times=None, value=0.2)
    await enqueue(store, pupils(40))
    w, client = wide_worker(store, fake, max_in_flight=8)
    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await w.drain()
    elapsed_s = loop.time() - started
    await client.close()
    single_flight_s = 40 * 0.2  # one request at a time cannot do better
    assert report.requests == 40 and report.remaining == 0
    assert elapsed_s < single_flight_s / 4, elapsed_s
    assert set(fake.users) == set(pupils(40)) and max(fake.add_count.values()) == 1
    assert {u["id"] for u in await store.served_users()} == set(pupils(40))


async def test_one_in_flight_sends_one_at_a_time(store: Store, fake: FakeChengjiyun) -> None:
    fake.requests = arrivals = ArrivalTimes()
    fake.faults.add("delay", times=None, value=0.05)
    await enqueue(store, pupils(6))
    w, client = wide_worker(store, fake, max_in_flight=1)
    await w.drain()
    await client.close()
    answered = [push.at for push in fake.accepted("addUser")]
    started = arrivals.arrivals("addUser")
    assert len(answered) == len(started) == 6
    assert all(start >= answer for start, answer in zip(started[1:], answered, strict=False))


async def test_phases_keep_their_order_with_requests_in_flight(
    store: Store, fake: FakeChengjiyun
) -> None:
    await enqueue(store, pupils(20))
    w, client = wide_worker(store, fake, max_in_flight=8)
    await w.drain()
    desired = {**pupils(30), **{f"cc-{i}": pupils(20, renamed=i)[f"cc-{i}"] for i in range(10)}}
    for i in range(10, 15):
        del desired[f"cc-{i}"]
    status = ClassStatus("ep-class-1", 2025, 8, 1, None)
    queued = await enqueue(store, desired, {"ep-class-1": status})
    assert queued == {"addUser": 10, "updateUser": 10, "deleteUser": 5, "classStatus": 1}
    fake.requests = arrivals = ArrivalTimes()
    fake.faults.add("delay", times=None, value=0.05)
    before = len(fake.pushes)
    report = await w.drain()
    await client.close()
    assert report.requests == 26 and report.remaining == 0 and report.dead == []
    pushes = fake.pushes[before:]
    answered = {
        endpoint: [p.at for p in pushes if p.endpoint == endpoint]
        for endpoint in ("addUser", "updateUser", "update/classStatus", "deleteUser")
    }
    # Each phase's first request arrives after the previous phase's last one was answered.
    order = [("addUser", "updateUser"), ("updateUser", "update/classStatus")]
    order.append(("update/classStatus", "deleteUser"))
    for earlier, later in order:
        assert min(arrivals.arrivals(later)) >= max(answered[earlier]), (earlier, later)
    assert fake.class_status_notifies == 1
    assert set(fake.users) == set(desired) and fake.users["cc-3"]["name"] == "Renamed"
    # Several requests of one phase were on the wire at once.
    adds = sorted(arrivals.arrivals("addUser"))
    assert adds[-1] - adds[0] < 0.05 * len(adds) / 2


async def test_a_refusal_with_requests_in_flight_dead_letters_nothing(
    store: Store, fake: FakeChengjiyun
) -> None:
    fake.faults.add("delay", times=None, value=0.1)
    await enqueue(store, pupils(60))
    w, client = wide_worker(store, fake, max_in_flight=8)
    task = asyncio.create_task(w.drain())
    while len(fake.accepted("addUser")) < 4:  # noqa: ASYNC110 - polling a fake
        await asyncio.sleep(0.005)
    fake.faults.add("code", value=30006, times=None)  # the key was revoked meanwhile
    report = await task
    await client.close()
    refused = [push for push in fake.pushes if push.code == 30006]
    assert report.stopped == DrainStop.REFUSED and report.dead == []
    assert report.refused_hint is not None and "[chengjiyun] key" in report.refused_hint
    # However many were in flight (load decides), they finish; nothing more is claimed.
    assert 1 <= len(refused) <= 8
    assert await store.outbox.dead_letter_count() == 0
    acknowledged = len(fake.accepted("addUser"))
    assert report.sent["addUser"] == acknowledged and report.remaining == 60 - acknowledged
    assert len(await store.served_users()) == acknowledged


async def test_a_wrong_key_costs_one_request_whatever_the_window(
    store: Store, fake: FakeChengjiyun
) -> None:
    await enqueue(store, pupils(30))
    w, client = wide_worker(store, fake, max_in_flight=8, key="wrong-key")
    report = await w.drain()
    await client.close()
    assert report.requests == 1 and report.stopped == DrainStop.REFUSED
    assert report.remaining == 30 and await store.outbox.dead_letter_count() == 0


async def test_stop_lets_the_requests_in_flight_finish(store: Store, fake: FakeChengjiyun) -> None:
    fake.faults.add("delay", times=None, value=0.2)
    await enqueue(store, pupils(40))
    w, client = wide_worker(store, fake, max_in_flight=8)
    stop = asyncio.Event()
    task = asyncio.create_task(w.drain(stop=stop))
    while len(fake.accepted("addUser")) < 1:  # noqa: ASYNC110 - polling a fake
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)  # the window is open: several requests are on the wire
    stop.set()
    report = await task
    await client.close()
    acknowledged = len(fake.accepted("addUser"))
    assert report.stopped == DrainStop.STOPPED and 1 < acknowledged < 40
    assert report.requests == acknowledged == report.sent["addUser"]
    assert len(await store.served_users()) == acknowledged
    assert report.remaining == 40 - acknowledged


async def test_transient_failures_and_splitting_with_requests_in_flight(
    store: Store, fake: FakeChengjiyun
) -> None:
    fake.faults.transient_fraction = 0.3
    fake.reject_ids["cc-17"] = "数据重复"
    await enqueue(store, pupils(80))
    w, client = wide_worker(store, fake, max_in_flight=8, batch_size=4)
    report = await w.drain()
    await client.close()
    assert report.retried > 0 and [d["record_id"] for d in report.dead] == ["cc-17"]
    assert set(fake.users) == set(pupils(80)) - {"cc-17"} and max(fake.add_count.values()) == 1
    assert report.remaining == 0


async def test_an_update_is_healed_with_requests_in_flight(
    store: Store, fake: FakeChengjiyun
) -> None:
    await enqueue(store, pupils(12))
    w, client = wide_worker(store, fake, max_in_flight=4)
    await w.drain()
    fake.drop_user("cc-5")
    await enqueue(store, renamed_all(12))
    report = await w.drain()
    await client.close()
    assert report.healed == 1 and report.dead == [] and report.remaining == 0
    assert all(user["name"] == "Renamed" for user in fake.users.values()) and len(fake.users) == 12


def renamed_all(n: int) -> dict[str, User]:
    return {f"cc-{i}": User(f"cc-{i}", "Renamed", ("学生",), "classcharts") for i in range(n)}


async def test_claim_skips_rows_in_flight_and_holds_their_phase(store: Store) -> None:
    await enqueue(store, pupils(3))
    first = await store.claim(2)
    assert [row.record_id for row in first.batch] == ["cc-0", "cc-1"]
    second = await store.claim(2, in_flight=first.batch)
    assert [row.record_id for row in second.batch] == ["cc-2"]
    held = await store.claim(2, in_flight=first.batch + second.batch)
    assert held.batch == () and held.wait_s == IN_FLIGHT_WAIT_S and not held.empty


async def test_the_notify_is_never_in_flight_twice(store: Store) -> None:
    status = ClassStatus("ep-class-1", 2025, 8, 1, None)
    await enqueue(store, {}, {"ep-class-1": status})
    notify = await store.claim(10)
    assert [row.kind for row in notify.batch] == ["classStatus"]
    again = await store.claim(10, in_flight=notify.batch)
    assert again.batch == () and again.wait_s == IN_FLIGHT_WAIT_S


async def test_a_requeued_copy_of_a_row_in_flight_waits_for_its_answer(store: Store) -> None:
    await enqueue(store, pupils(3))
    first = await store.claim(2)
    await enqueue(store, pupils(3))  # a cycle re-queues everything while the request is out
    later = await store.claim(2, in_flight=first.batch)
    assert [row.record_id for row in later.batch] == ["cc-2"]
    held = await store.claim(2, in_flight=first.batch + later.batch)
    assert held.batch == () and held.wait_s == IN_FLIGHT_WAIT_S


async def test_the_deadline_ends_the_drain_once_the_requests_in_flight_are_answered(
    store: Store, fake: FakeChengjiyun
) -> None:
    fake.faults.add("delay", times=None, value=0.3)
    await enqueue(store, pupils(40))
    w, client = wide_worker(store, fake, max_in_flight=4)
    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await w.drain(timeout_s=0.5)  # the window is full when the deadline passes
    elapsed_s = loop.time() - started
    await client.close()
    acknowledged = len(fake.accepted("addUser"))
    assert report.stopped == DrainStop.TIMEOUT and elapsed_s < 1.2, elapsed_s
    assert report.requests == acknowledged == report.sent["addUser"] == len(fake.pushes)
    assert 1 < acknowledged <= 1 + 4 + 4 and report.remaining == 40 - acknowledged
    assert len(await store.served_users()) == acknowledged


async def test_a_cancelled_drain_with_requests_in_flight_resends_only_those(
    tmp_path: Path, fake: FakeChengjiyun
) -> None:
    path = tmp_path / "crash.db"
    store = await Store.open(path)
    await enqueue(store, pupils(40))
    fake.faults.add("delay", path="/vendor-api/addUser", times=None, value=0.2)
    w, client = wide_worker(store, fake, max_in_flight=8, batch_size=2)
    task = asyncio.create_task(w.drain())
    while len(fake.accepted("addUser")) < 3:  # noqa: ASYNC110 - polling a fake
        await asyncio.sleep(0.01)
    task.cancel()  # as a SIGKILL would, with the window open
    with pytest.raises(asyncio.CancelledError):
        await task
    await client.close()
    await store.close()
    fake.faults.clear()
    await asyncio.sleep(0.3)  # requests the fake was still delaying arrive now

    reopened = await Store.open(path)
    w, client = wide_worker(reopened, fake, max_in_flight=8, batch_size=2)
    await w.drain()
    await client.close()
    twice = [user_id for user_id, count in fake.add_count.items() if count > 1]
    assert set(fake.users) == set(pupils(40)) and max(fake.add_count.values()) <= 2
    assert len(twice) <= 8 * 2, "at most the requests in flight are sent again"
    assert {u["id"] for u in await reopened.served_users()} == set(pupils(40))
    assert await reopened.queue_depth() == {}
    await reopened.close()


async def test_claims_fill_the_window_in_one_go_and_hold_the_phase(store: Store) -> None:
    status = ClassStatus("ep-class-1", 2025, 8, 1, None)
    await enqueue(store, pupils(5), {"ep-class-1": status})
    claims = await store.claims(2, 5)
    assert [[row.record_id for row in claim.batch] for claim in claims] == [
        ["cc-0", "cc-1"],
        ["cc-2", "cc-3"],
        ["cc-4"],
        [],
    ]
    assert claims[-1].wait_s == IN_FLIGHT_WAIT_S, "the adds in flight hold the notify back"
    in_flight = [row for claim in claims for row in claim.batch]
    assert await store.claims(2, 5, in_flight=in_flight) == [Claim(wait_s=IN_FLIGHT_WAIT_S)]
    for claim in claims[:-1]:
        await store.acknowledge(claim)
    notify = await store.claims(2, 5)
    assert [row.kind for row in notify[0].batch] == ["classStatus"] and notify[1].wait_s
    await store.acknowledge(notify[0])
    assert await store.claims(2, 5) == [Claim()]


async def test_claims_of_large_batches_take_several_queries(store: Store) -> None:
    await enqueue(store, pupils(1200))
    claims = await store.claims(500, 4)  # 999 rows at most per query: one batch of 500 each
    assert [len(claim.batch) for claim in claims] == [500, 500, 200, 0]
    assert claims[-1].wait_s == IN_FLIGHT_WAIT_S
    assert len({row.seq for claim in claims for row in claim.batch}) == 1200


async def test_acknowledgements_arriving_together_are_all_recorded(store: Store) -> None:
    await enqueue(store, pupils(20))
    claims = await store.claims(1, 20)
    assert len(claims) == 20
    await asyncio.gather(*(store.acknowledge(claim) for claim in claims))
    assert await store.queue_depth() == {}
    assert {u["id"] for u in await store.served_users()} == set(pupils(20))


async def test_a_group_commit_commits_everything_once_and_survives_a_failed_group(
    tmp_path: Path,
) -> None:
    database = await Database.open(tmp_path / "group.db")
    async with database.write() as db:
        await db.execute("CREATE TABLE items (n INTEGER PRIMARY KEY)")
    groups: list[list[int]] = []

    async def apply(db: Any, items: list[int]) -> None:
        groups.append(items)
        await db.executemany("INSERT INTO items (n) VALUES (?)", [(n,) for n in items])
        if 13 in items and len(groups) == 1:
            raise RuntimeError("the disk went away")  # the first group fails, and only it

    commit = GroupCommit(database, apply)
    results = await asyncio.gather(*(commit.submit(n) for n in range(30)), return_exceptions=True)
    failed = [n for n, result in enumerate(results) if isinstance(result, RuntimeError)]
    committed = {row[0] for row in await database.fetchall("SELECT n FROM items")}
    assert len(failed) == 1 and committed == set(range(30)) - set(failed)
    assert all(result is None for n, result in enumerate(results) if n not in failed)
    assert len(groups) < 30, "callers that arrived together shared a transaction"
    await commit.submit(99)  # and it still takes new work
    assert await database.scalar("SELECT COUNT(*) FROM items WHERE n = 99") == 1
    await database.close()


async def test_a_cancelled_caller_of_a_group_commit_blocks_nobody(tmp_path: Path) -> None:
    database = await Database.open(tmp_path / "group.db")
    async with database.write() as db:
        await db.execute("CREATE TABLE items (n INTEGER PRIMARY KEY)")

    async def apply(db: Any, items: list[int]) -> None:
        await db.executemany("INSERT INTO items (n) VALUES (?)", [(n,) for n in items])

    commit = GroupCommit(database, apply)
    tasks = [asyncio.create_task(commit.submit(n)) for n in range(10)]
    await asyncio.sleep(0)  # all queued: task 0 leads, the others wait
    tasks[0].cancel()  # the leader, whose group has begun: it is committed all the same
    tasks[5].cancel()  # a caller still waiting: left out
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert isinstance(results[5], asyncio.CancelledError)
    committed = {row[0] for row in await database.fetchall("SELECT n FROM items")}
    assert committed == set(range(10)) - {5}
    await asyncio.wait_for(commit.submit(99), timeout=10)
    await database.close()


# A drain in a process of its own, so the test can SIGKILL it: argv is the database, the fake's
# URL, platform, key and orgId.
DRAIN_SCRIPT = """
import asyncio, sys
from pathlib import Path
from syncd.clients.chengjiyun import ChengjiyunClient
from syncd.engine.drain import OutboxWorker
from syncd.store import Store

async def main(path, url, platform, key, org_id):
    async with await Store.open(Path(path)) as store:
        async with ChengjiyunClient(
            connections=8, base_url=url, platform=platform, key=key, org_id=org_id
        ) as client:
            worker = OutboxWorker(
                store, client, batch_size=1, requests_per_second=500, max_in_flight=8
            )
            await worker.drain()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_sigkilled_drain_resends_at_most_its_window_and_loses_nothing(
    tmp_path: Path, fake: FakeChengjiyun
) -> None:
    path = tmp_path / "killed.db"
    async with await Store.open(path) as store:
        await enqueue(store, pupils(300))
    # Answers that come in bunches, so acknowledgements are being group-committed at the kill.
    fake.faults.add("delay", path="/vendor-api/addUser", times=None, value=0.03)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        DRAIN_SCRIPT,
        str(path),
        fake.base_url,
        fake.platform,
        fake.key,
        fake.org_id,
        env=subprocess_env(),
    )
    while len(fake.accepted("addUser")) < 40 and process.returncode is None:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    await process.wait()
    assert process.returncode == -signal.SIGKILL, "killed mid-drain"
    fake.faults.clear()
    await asyncio.sleep(0.2)  # requests the fake was still delaying are applied now

    async with await Store.open(path) as reopened:
        acknowledged = len(await reopened.served_users())
        assert 0 < acknowledged < 300
        w, client = wide_worker(reopened, fake, max_in_flight=8)
        report = await w.drain()
        await client.close()
        assert report.remaining == 0 and report.dead == []
        assert {u["id"] for u in await reopened.served_users()} == set(pupils(300))
        assert await reopened.queue_depth() == {}
    twice = [user_id for user_id, count in fake.add_count.items() if count > 1]
    assert set(fake.users) == set(pupils(300)) and max(fake.add_count.values()) <= 2
    assert len(twice) <= 8, "at most the window (8 requests of one user) is sent again"
