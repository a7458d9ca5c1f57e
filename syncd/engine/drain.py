"""The outbound worker: drains the outbox to Chengjiyun, batched, paced, retried, dead-lettered.

Order within a drain is addUser → updateUser → classStatus (one notify) → deleteUser: every row of
a kind is acknowledged or dead-lettered before the next kind starts, so a class status never
names a teacher Chengjiyun has not been told about, and deletions go last.

What each answer does (docs/protocols.md has the codes):

* acknowledged: the snapshot advances and the rows leave the outbox, in one transaction, so a
  SIGKILL at any moment re-sends at most the batch in flight;
* the whole account refused (wrong key, platform, orgId, clock, IP): the drain stops after that
  one request, nothing is dead-lettered, everything stays queued, and the report names the
  likely cause;
* transient (unreachable, timeout, 5xx, 429, busy codes): the batch backs off (capped at
  ``retry_max_s``, ``Retry-After`` honoured up to that) and is never dead-lettered;
* one record refused: the batch is split to isolate it; only that record is dead-lettered;
* updateUser of a user Chengjiyun no longer holds: sent again as addUser of the whole record.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable

from aiolimiter import AsyncLimiter

from syncd.clients.chengjiyun import ChengjiyunClient, PushOutcome, PushResult
from syncd.config import Config
from syncd.core.kinds import KIND_ORDER, OperationKind
from syncd.core.model import User
from syncd.core.report import DrainReport
from syncd.log import get_logger
from syncd.metrics import OPERATIONS, QUEUE_DEPTH
from syncd.store import Claim, QueuedOperation, Store

__all__ = ["DrainReport", "DrainStop", "OutboxWorker", "backoff_s", "worker_from_config"]

log = get_logger(__name__)


def backoff_s(
    attempts: int, *, base_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, base·2^attempts)]."""
    ceiling = min(max_s, base_s * 2.0**attempts)
    return (rng or random).uniform(0, ceiling)


class DrainStop:
    """Why a drain ended before the outbox was empty (values shown to the admin)."""

    REFUSED = "Chengjiyun refused the account"
    TIMEOUT = "drain_timeout_s reached"
    STOPPED = "stop requested"


class OutboxWorker:
    def __init__(
        self,
        store: Store,
        client: ChengjiyunClient,
        *,
        batch_size: int,
        requests_per_second: float,
        retry_base_s: float = 1.0,
        retry_max_s: float = 60.0,
        progress: Callable[[int, int], None] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_result: Callable[[PushResult], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._client = client
        self._batch_size = batch_size
        self._rate = requests_per_second
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self._progress = progress
        self._rng = rng or random.Random()
        self._clock = clock
        self._on_result = on_result
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

    async def drain(
        self, *, stop: asyncio.Event | None = None, timeout_s: float | None = None
    ) -> DrainReport:
        """Send until the outbox is empty, the account is refused, ``stop`` is set or
        ``timeout_s`` has passed; whatever is not acknowledged stays queued."""
        if self._limiter is None:
            # One token every 1/rate seconds and no burst: the pace the admin configured.
            self._limiter = AsyncLimiter(1, 1.0 / self._rate)
        deadline = None if timeout_s is None else self._clock() + timeout_s
        stop = stop or asyncio.Event()
        report = DrainReport()
        total, done = await self._store.outbox.count(), 0
        while report.stopped is None:
            left_s = None if deadline is None else deadline - self._clock()
            if stop.is_set():
                report.stopped = DrainStop.STOPPED
                break
            if left_s is not None and left_s <= 0:
                report.stopped = DrainStop.TIMEOUT
                break
            claim = await self._store.claim(self._batch_size)
            if claim.empty:
                break
            if claim.wait_s is not None and not claim.batch:
                wait_s = claim.wait_s if left_s is None else min(claim.wait_s, left_s)
                await self.wait_for_wake(stop, wait_s)
                continue
            done += await self._send(claim, report)
            total = max(total, done)
            if self._progress is not None:
                self._progress(done, total)
        report.remaining = await self._store.outbox.count()
        await self._update_gauges()
        if report.requests:
            log.info(
                "outbox drained" if not report.remaining else "outbox drain stopped",
                requests=report.requests,
                sent=report.sent,
                retried=report.retried,
                dead=len(report.dead),
                remaining=report.remaining,
                stopped=report.stopped,
            )
        return report

    async def _update_gauges(self) -> None:
        depth = await self._store.outbox.depth()
        for kind in KIND_ORDER:
            QUEUE_DEPTH.labels(kind=kind).set(depth.get(kind, 0))

    async def _request(self, rows: tuple[QueuedOperation, ...]) -> PushResult:
        assert self._limiter is not None
        await self._limiter.acquire()
        kind = rows[0].kind
        payloads = [row.payload for row in rows]
        if kind is OperationKind.ADD:
            return await self._client.add_users(payloads)
        if kind is OperationKind.UPDATE:
            return await self._client.update_users(payloads)
        if kind is OperationKind.DELETE:
            return await self._client.delete_users(payloads)
        return await self._client.notify_class_status()

    async def _send(self, claim: Claim, report: DrainReport) -> int:
        """Send one batch (splitting it on a record-level refusal); return how many finished."""
        rows = claim.batch
        kind = rows[0].kind
        result = await self._request(rows)
        report.requests += 1
        if self._on_result is not None:
            await self._on_result(result)
        outcome = result.outcome
        if outcome is PushOutcome.NOT_FOUND and kind is OperationKind.DELETE:
            outcome = PushOutcome.OK  # deleting an id Chengjiyun does not know is done
        if outcome is PushOutcome.OK:
            await self._store.acknowledge(claim, answer=result.message, code=result.code)
            report.sent[kind] += len(rows)
            OPERATIONS.labels(kind=kind, result="sent").inc(len(rows))
            return len(rows)
        if outcome is PushOutcome.ACCOUNT_REFUSED:
            report.stopped = DrainStop.REFUSED
            report.refused, report.refused_hint = result.message, result.hint
            log.error(
                "Chengjiyun refused the account; nothing was dead-lettered, everything stays queued",
                answer=result.message,
                hint=result.hint,
            )
            return 0
        if outcome is PushOutcome.TRANSIENT:
            await self._retry_later(rows, result, report)
            return 0
        if len(rows) > 1:
            # Isolate the bad record: each half goes on its own, the good ones still get through.
            middle = len(rows) // 2
            first = await self._send(Claim(batch=rows[:middle], digest=claim.digest), report)
            if report.stopped is not None:
                return first
            return first + await self._send(Claim(batch=rows[middle:], digest=claim.digest), report)
        if outcome is PushOutcome.NOT_FOUND and kind is OperationKind.UPDATE and rows[0].record:
            # Someone removed the user at Chengjiyun: heal by adding the whole record again.
            user = User.from_json(json.loads(rows[0].record))
            await self._store.outbox.resend_as_add(rows[0], user.pushed())
            report.healed += 1
            log.info("user unknown to Chengjiyun; sending it again as addUser", id=user.id)
            return 0
        await self._store.dead_letter(rows, code=result.code, reason=result.message)
        for row in rows:
            entry = {"kind": str(row.kind), "record_id": row.record_id, "code": result.code}
            report.dead.append({**entry, "reason": result.message})
            log.warning("operation dead-lettered", **entry, reason=result.message)
        OPERATIONS.labels(kind=kind, result="dead").inc(len(rows))
        return len(rows)

    async def _retry_later(
        self, rows: tuple[QueuedOperation, ...], result: PushResult, report: DrainReport
    ) -> None:
        delay_s = backoff_s(
            rows[0].attempts + 1,
            base_s=self._retry_base_s,
            max_s=self._retry_max_s,
            rng=self._rng,
        )
        if result.retry_after_s is not None:
            delay_s = max(delay_s, min(result.retry_after_s, self._retry_max_s))
        log.info(
            "Chengjiyun did not take the batch; retrying later",
            kind=str(rows[0].kind),
            size=len(rows),
            retry_in_s=round(delay_s, 2),
            reason=result.message,
        )
        await self._store.retry_later(
            rows, delay_s=delay_s, code=result.code, reason=result.message
        )
        report.retried += len(rows)
        report.last_transient = result.message
        OPERATIONS.labels(kind=rows[0].kind, result="retried").inc(len(rows))


def worker_from_config(
    config: Config,
    store: Store,
    client: ChengjiyunClient,
    *,
    progress: Callable[[int, int], None] | None = None,
    on_result: Callable[[PushResult], Awaitable[None]] | None = None,
) -> OutboxWorker:
    section = config.chengjiyun
    return OutboxWorker(
        store,
        client,
        batch_size=section.batch_size,
        requests_per_second=section.requests_per_second,
        retry_base_s=section.retry_base_s,
        retry_max_s=section.retry_max_s,
        progress=progress,
        on_result=on_result,
    )
