"""The outbound worker: drains the outbox to Chengjiyun, batched, paced, retried, dead-lettered.

Order within a drain is addUser → updateUser → classStatus (one notify) → deleteUser: every row of
a kind is acknowledged or dead-lettered before the next kind starts, so a class status never
names a teacher Chengjiyun has not been told about, and deletions go last.

Crash safety: a row leaves the outbox only in the transaction that records Chengjiyun's
acknowledgement (code 0) in the snapshot, so a SIGKILL at any moment loses nothing and re-sends
at most the batch that was in flight.

Idempotency under concurrency (daemon mode, where a poll can run while a batch is in flight): a
cycle replaces the pending rows of its source, so it may re-enqueue an operation whose request
is on the wire. When a row is claimed it is therefore checked against the snapshot first: an
add or update whose exact content is already acknowledged, or a delete of a user that is not
there, is dropped instead of sent.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiolimiter import AsyncLimiter

from syncd.clients.chengjiyun import ChengjiyunClient, PushOutcome, PushResult
from syncd.config import Config
from syncd.log import get_logger
from syncd.metrics import OPERATIONS, QUEUE_DEPTH
from syncd.store import NOTIFIED_DIGEST_KEY, Store, class_status_digest

__all__ = ["KIND_ORDER", "DrainReport", "OutboxWorker", "backoff_s", "worker_from_config"]

log = get_logger(__name__)

KIND_ORDER = ("addUser", "updateUser", "classStatus", "deleteUser")
_BATCHED = {"addUser", "updateUser", "deleteUser"}


def backoff_s(
    attempts: int, *, base_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, base·2^attempts)]."""
    ceiling = min(max_s, base_s * 2.0**attempts)
    return (rng or random).uniform(0, ceiling)


@dataclass
class _Row:
    seq: int
    kind: str
    record_id: str | None
    payload: Any
    record: str | None
    hash: str | None
    source: str | None
    attempts: int


@dataclass
class DrainReport:
    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KIND_ORDER, 0))
    requests: int = 0
    retried: int = 0
    dead: list[dict[str, Any]] = field(default_factory=list)
    remaining: int = 0


class OutboxWorker:
    def __init__(
        self,
        store: Store,
        client: ChengjiyunClient,
        *,
        batch_size: int,
        requests_per_second: float,
        max_attempts: int,
        retry_base_s: float = 1.0,
        retry_max_s: float = 60.0,
        progress: Callable[[int, int], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._client = client
        self._batch_size = batch_size
        self._rate = requests_per_second
        self._max_attempts = max_attempts
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self._progress = progress
        self._rng = rng or random.Random()
        self._limiter: AsyncLimiter | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def wait_for_wake(self, stop: asyncio.Event, timeout_s: float) -> None:
        """Sleep until :meth:`wake`, ``stop`` or the timeout, whichever comes first."""
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        self._wake.clear()

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Daemon mode: drain whenever woken (and hourly), until ``stop`` is set."""
        while not stop.is_set():
            await self.drain(stop=stop)
            await self.wait_for_wake(stop, timeout_s=3600.0)

    async def drain(self, *, stop: asyncio.Event | None = None) -> DrainReport:
        """Send until the outbox is empty (or holds only dead letters' leftovers) or ``stop`` is set."""
        if self._limiter is None:
            # One token every 1/rate seconds and no burst: the pace the admin configured.
            self._limiter = AsyncLimiter(1, 1.0 / self._rate)
        report = DrainReport()
        total = await self._count()
        done = 0
        while stop is None or not stop.is_set():
            claim = await self._claim()
            if claim is None:
                break
            if isinstance(claim, float):
                await self._sleep(claim, stop)
                continue
            finished = await self._send(claim, report)
            done += finished
            total = max(total, done)
            if self._progress is not None:
                self._progress(done, total)
        report.remaining = await self._count()
        await self._update_gauges()
        if report.requests:
            log.info(
                "outbox drained",
                requests=report.requests,
                sent=report.sent,
                retried=report.retried,
                dead=len(report.dead),
                remaining=report.remaining,
            )
        return report

    async def _sleep(self, delay_s: float, stop: asyncio.Event | None) -> None:
        if stop is None:
            await asyncio.sleep(delay_s)
            return
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay_s)
        except TimeoutError:
            pass

    async def _count(self) -> int:
        row = await self._store.fetchone("SELECT COUNT(*) FROM outbox")
        return int(row[0]) if row else 0

    async def _update_gauges(self) -> None:
        depth = await self._store.queue_depth()
        for kind in KIND_ORDER:
            QUEUE_DEPTH.labels(kind=kind).set(depth.get(kind, 0))

    async def _claim(self) -> list[_Row] | float | None:
        """The next batch to send; seconds to wait if the active kind is backing off; None if empty."""
        now = time.time()
        async with self._store.write() as db:
            for kind in KIND_ORDER:
                rows = await db.execute_fetchall(
                    """SELECT seq, kind, record_id, payload, record, hash, source, attempts, next_attempt_at
                       FROM outbox WHERE kind = ? ORDER BY next_attempt_at, seq LIMIT ?""",
                    (kind, self._batch_size if kind in _BATCHED else 1),
                )
                if not rows:
                    continue
                due = [row for row in rows if row[8] <= now]
                if not due:
                    return max(0.0, rows[0][8] - now)
                batch = [
                    _Row(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7]) for r in due
                ]
                batch = await self._drop_already_acknowledged(db, batch)
                if batch:
                    return batch
                return 0.0  # everything claimed was stale; look again
        return None

    async def _drop_already_acknowledged(self, db: Any, batch: list[_Row]) -> list[_Row]:
        if batch[0].kind == "classStatus":
            return batch
        ids = [row.record_id for row in batch]
        marks = ",".join("?" * len(ids))
        acked = dict(
            await db.execute_fetchall(f"SELECT id, hash FROM users WHERE id IN ({marks})", ids)  # noqa: S608
        )
        keep, stale = [], []
        for row in batch:
            already = (
                acked.get(row.record_id) == row.hash
                if row.kind != "deleteUser"
                else row.record_id not in acked
            )
            (stale if already else keep).append(row)
        if stale:
            await db.executemany("DELETE FROM outbox WHERE seq = ?", [(row.seq,) for row in stale])
            log.debug("dropped operations the snapshot already reflects", count=len(stale))
        return keep

    async def _request(self, rows: list[_Row]) -> PushResult:
        assert self._limiter is not None
        await self._limiter.acquire()
        kind = rows[0].kind
        payloads = [row.payload for row in rows]
        if kind == "addUser":
            return await self._client.add_users(payloads)
        if kind == "updateUser":
            return await self._client.update_users(payloads)
        if kind == "deleteUser":
            return await self._client.delete_users(payloads)
        return await self._client.notify_class_status()

    async def _send(self, rows: list[_Row], report: DrainReport) -> int:
        """Send one batch (splitting it on a permanent error); return how many rows finished."""
        digest = await self._store.class_status_digest() if rows[0].kind == "classStatus" else None
        result = await self._request(rows)
        report.requests += 1
        kind = rows[0].kind
        if result.outcome is PushOutcome.OK:
            await self._acknowledge(rows, digest)
            report.sent[kind] += len(rows)
            OPERATIONS.labels(kind=kind, result="sent").inc(len(rows))
            log.debug("batch acknowledged", kind=kind, size=len(rows))
            return len(rows)
        if result.outcome is PushOutcome.PERMANENT and len(rows) > 1:
            # Isolate the bad record: each half goes on its own, the good ones still get through.
            middle = len(rows) // 2
            return await self._send(rows[:middle], report) + await self._send(rows[middle:], report)
        if result.outcome is PushOutcome.TRANSIENT and rows[0].attempts + 1 < self._max_attempts:
            await self._schedule_retry(rows, result)
            report.retried += len(rows)
            OPERATIONS.labels(kind=kind, result="retried").inc(len(rows))
            return 0
        await self._dead_letter(rows, result, report)
        return len(rows)

    async def _acknowledge(self, rows: list[_Row], digest: str | None) -> None:
        now = time.time()
        async with self._store.write() as db:
            await db.executemany("DELETE FROM outbox WHERE seq = ?", [(row.seq,) for row in rows])
            kind = rows[0].kind
            if kind in ("addUser", "updateUser"):
                await db.executemany(
                    """INSERT INTO users (id, source, record, hash, missing_cycles, acked_at) VALUES (?, ?, ?, ?, 0, ?)
                       ON CONFLICT(id) DO UPDATE SET record = excluded.record, hash = excluded.hash,
                           missing_cycles = 0, acked_at = excluded.acked_at""",
                    [(row.record_id, row.source, row.record, row.hash, now) for row in rows],
                )
            elif kind == "deleteUser":
                for table in ("users", "held_deletions"):
                    await db.executemany(
                        f"DELETE FROM {table} WHERE id = ?",  # noqa: S608
                        [(row.record_id,) for row in rows],
                    )
            else:
                await db.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (NOTIFIED_DIGEST_KEY, digest or class_status_digest(())),
                )

    async def _schedule_retry(self, rows: list[_Row], result: PushResult) -> None:
        attempts = rows[0].attempts + 1
        delay = backoff_s(
            attempts, base_s=self._retry_base_s, max_s=self._retry_max_s, rng=self._rng
        )
        if result.retry_after_s is not None:
            delay = max(delay, result.retry_after_s)
        log.debug(
            "transient failure; will retry",
            kind=rows[0].kind,
            size=len(rows),
            retry_in_s=round(delay, 2),
            reason=result.message,
        )
        async with self._store.write() as db:
            await db.executemany(
                "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE seq = ?",
                [(attempts, time.time() + delay, result.message, row.seq) for row in rows],
            )

    async def _dead_letter(self, rows: list[_Row], result: PushResult, report: DrainReport) -> None:
        now = time.time()
        attempts = rows[0].attempts + 1
        reason = result.message
        if result.outcome is PushOutcome.TRANSIENT:
            reason = f"gave up after {attempts} attempts: {result.message}"
        async with self._store.write() as db:
            await db.executemany(
                """INSERT INTO dead_letters (seq, kind, record_id, payload, record, hash, source, attempts, code, reason, failed_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [
                    (
                        row.seq,
                        row.kind,
                        row.record_id,
                        json.dumps(row.payload, ensure_ascii=False),
                        row.record,
                        row.hash,
                        row.source,
                        attempts,
                        result.code,
                        reason,
                        now,
                    )
                    for row in rows
                ],
            )
            await db.executemany("DELETE FROM outbox WHERE seq = ?", [(row.seq,) for row in rows])
        for row in rows:
            entry = {
                "kind": row.kind,
                "record_id": row.record_id,
                "code": result.code,
                "reason": reason,
            }
            report.dead.append(entry)
            log.warning("operation dead-lettered", **entry)
        OPERATIONS.labels(kind=rows[0].kind, result="dead").inc(len(rows))


def worker_from_config(
    config: Config,
    store: Store,
    client: ChengjiyunClient,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> OutboxWorker:
    section = config.chengjiyun
    return OutboxWorker(
        store,
        client,
        batch_size=section.batch_size,
        requests_per_second=section.requests_per_second,
        max_attempts=section.max_attempts,
        retry_base_s=section.retry_base_s,
        retry_max_s=section.retry_max_s,
        progress=progress,
    )
