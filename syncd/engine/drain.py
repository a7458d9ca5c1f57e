"""The outbound worker: drains the outbox to Chengjiyun, batched, paced, retried, dead-lettered.

Order within a drain is addUser → updateUser → classStatus (one notify) → deleteUser: every row of
a kind is acknowledged or dead-lettered before the next kind starts, so a class status never
names a teacher Chengjiyun has not been told about, and deletions go last.

Up to ``max_in_flight`` requests are on the wire at once, so a distant Chengjiyun still gets the
configured ``requests_per_second``: one at a time, a 100 ms round trip caps the drain at 10
requests/s whatever the rate. The window counts the batches claimed and not yet answered,
those still waiting for their token from the bucket included, so the bucket, not the claiming,
sets the pace (``BURST_S`` says how it makes up for a late wake-up). The free slots are claimed
together, in one transaction, while the current kind has due rows not already in flight; a kind
with a request unanswered holds back the kinds after it. The window is one request until a
request of the drain is acknowledged (and again after a transient failure), so a wrong key or
an outage is met with one request at a time.

What each answer does (docs/protocols.md has the codes):

* acknowledged: the snapshot advances and the rows leave the outbox as the answer arrives (the
  acknowledgements that arrive while one is being committed share the next transaction), and the
  request holds its slot in the window until then, so a SIGKILL at any moment re-sends at most
  the requests in flight;
* the whole account refused (wrong key, platform, orgId, clock, IP): nothing more is claimed,
  the requests in flight are answered, nothing is dead-lettered, everything else stays queued,
  and the report names the likely cause;
* transient (unreachable, timeout, 5xx, 429, busy codes): the batch backs off (capped at
  ``retry_max_s``, ``Retry-After`` honoured up to that) and is never dead-lettered;
* one record refused: the batch is split to isolate it; only that record is dead-lettered;
* updateUser of a user Chengjiyun no longer holds: sent again as addUser of the whole record.
"""

from __future__ import annotations

import asyncio
import json
import math
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
from syncd.metrics import OPERATIONS, QUEUE_DEPTH, school_label
from syncd.store import Claim, QueuedOperation, Store

__all__ = ["DrainReport", "DrainStop", "OutboxWorker", "backoff_s", "worker_from_config"]

log = get_logger(__name__)

# The token bucket holds BURST_S worth of tokens, so requests the event loop starts late are made
# up and the long-run rate is the configured one. The making up is spaced, at most CATCH_UP times
# the rate, so it is never a burst on the wire, and answers that came in together (and were
# acknowledged in one transaction) do not all leave together again. Each drain starts with the
# bucket full, so the only excess is making up: over any one second at most rate x (1 +
# BURST_S) requests, plus one, and never more than the rate over a longer run.
BURST_S = 0.1
CATCH_UP = 2.0


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


class _Window:
    """How many requests may be in flight: one until a request of this drain is acknowledged,
    and again after a transient failure, so a wrong key or an outage costs one request at a
    time (as a single-flight drain would), not ``max_in_flight`` of them."""

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self.size = 1

    def open(self) -> None:
        self.size = self._max_size

    def close(self) -> None:
        self.size = 1


class OutboxWorker:
    def __init__(
        self,
        store: Store,
        client: ChengjiyunClient,
        *,
        batch_size: int,
        requests_per_second: float,
        max_in_flight: int = 1,
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
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self._max_in_flight = max_in_flight
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self._progress = progress
        self._rng = rng or random.Random()
        self._clock = clock
        self._paused_until = 0.0  # on self._clock: no claims before this, after a transient
        self._transient_streak = 0  # transient failures in a row, for the pause's length
        self._on_result = on_result
        self._limiter: AsyncLimiter | None = None
        self._spacing: AsyncLimiter | None = None
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
        ``timeout_s`` has passed; whatever is not acknowledged stays queued. The requests in
        flight then are answered (and their answers recorded) before it returns."""
        if self._limiter is None:
            # At least one token: aiolimiter cannot hand out more than the bucket holds.
            burst = max(1.0, self._rate * BURST_S)
            self._limiter = AsyncLimiter(burst, burst / self._rate)
            self._spacing = AsyncLimiter(1, 1.0 / (self._rate * CATCH_UP))
        # Fill the bucket but for one token: the drain starts at the configured pace, no burst
        # (after a drain that just ended, this waits until its tokens have leaked away).
        await self._limiter.acquire(self._limiter.max_rate - 1)
        deadline = None if timeout_s is None else self._clock() + timeout_s
        report = DrainReport()
        in_flight: dict[asyncio.Task[int], tuple[QueuedOperation, ...]] = {}
        try:
            await self._pipeline(in_flight, report, stop or asyncio.Event(), deadline)
        finally:
            # Only when cancelled or failing: abandoned requests leave their rows queued.
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
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

    async def _pipeline(
        self,
        in_flight: dict[asyncio.Task[int], tuple[QueuedOperation, ...]],
        report: DrainReport,
        stop: asyncio.Event,
        deadline: float | None,
    ) -> None:
        """Keep up to the window's size of requests in flight, paced by the token bucket.

        Batches are claimed for the free slots while the current kind has due rows that are not
        in flight; each request records its own answer as it arrives. The claim holds a kind's
        phase while any of its requests is unanswered, which keeps the order of kinds.
        """
        assert self._limiter is not None
        window = _Window(self._max_in_flight)
        total, done = await self._store.outbox.count(), 0
        while True:
            wait_s: float | None = None
            nothing_left = False
            paused_s = self._paused_until - self._clock()
            if paused_s > 0 and not self._stopping(report, stop, deadline):
                wait_s = paused_s  # Chengjiyun failed transiently: probe again only after this
            # Stopping is checked first, so a full window still notices stop and the deadline.
            free = window.size - len(in_flight)
            if wait_s is None and not self._stopping(report, stop, deadline) and free > 0:
                rows_in_flight = [row for rows in in_flight.values() for row in rows]
                # Every free slot in one transaction: one commit, however many answers came in.
                for claim in await self._store.claims(
                    self._batch_size, free, in_flight=rows_in_flight
                ):
                    if claim.batch:
                        task = asyncio.create_task(self._send(claim, report, window))
                        in_flight[task] = claim.batch
                    elif claim.empty:
                        nothing_left = True
                    else:
                        wait_s = claim.wait_s
            if not in_flight and (nothing_left or report.stopped is not None):
                return
            await self._wait(in_flight, report, stop, deadline, wait_s)
            for task in [task for task in in_flight if task.done()]:
                del in_flight[task]
                done += task.result()  # a failed request's error ends the drain, as before
                total = max(total, done)
                if self._progress is not None:
                    self._progress(done, total)

    def _stopping(self, report: DrainReport, stop: asyncio.Event, deadline: float | None) -> bool:
        """Whether to claim no more; records why the first time it says so."""
        if report.stopped is None and stop.is_set():
            report.stopped = DrainStop.STOPPED
        if report.stopped is None and deadline is not None and self._clock() >= deadline:
            report.stopped = DrainStop.TIMEOUT
        return report.stopped is not None

    async def _wait(
        self,
        in_flight: dict[asyncio.Task[int], tuple[QueuedOperation, ...]],
        report: DrainReport,
        stop: asyncio.Event,
        deadline: float | None,
        wait_s: float | None,
    ) -> None:
        """Until a request is answered or, while still claiming, until ``wait_s`` (a back-off)
        or the deadline passes, :meth:`wake` is called or ``stop`` is set."""
        if report.stopped is not None:
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            return
        timeout_s = None if wait_s is None or math.isinf(wait_s) else wait_s
        if deadline is not None:
            left_s = max(0.0, deadline - self._clock())
            timeout_s = left_s if timeout_s is None else min(timeout_s, left_s)
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(
                [*in_flight, *waiters], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
        self._wake.clear()

    async def _update_gauges(self) -> None:
        depth = await self._store.outbox.depth()
        for kind in KIND_ORDER:
            QUEUE_DEPTH.labels(org_id=school_label(), kind=kind).set(depth.get(kind, 0))

    async def _request(self, rows: tuple[QueuedOperation, ...]) -> PushResult:
        kind = rows[0].kind
        payloads = [row.payload for row in rows]
        if kind is OperationKind.ADD:
            return await self._client.add_users(payloads)
        if kind is OperationKind.UPDATE:
            return await self._client.update_users(payloads)
        if kind is OperationKind.DELETE:
            return await self._client.delete_users(payloads)
        return await self._client.notify_class_status()

    async def _send(self, claim: Claim, report: DrainReport, window: _Window) -> int:
        """Send one batch (splitting it on a record-level refusal); return how many finished.

        The token is taken here, not by the claiming loop, so a slow claim never delays a token
        that is due: a claimed batch waits for its token in the window. One whose token comes
        after the drain began stopping is not sent; its rows stay queued.
        """
        assert self._limiter is not None and self._spacing is not None
        await self._limiter.acquire()
        await self._spacing.acquire()
        if report.stopped is not None:
            return 0
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
            window.open()
            self._transient_streak = 0
            await self._store.acknowledge(claim, answer=result.message, code=result.code)
            report.sent[kind] += len(rows)
            OPERATIONS.labels(org_id=school_label(), kind=kind, result="sent").inc(len(rows))
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
            window.close()
            await self._retry_later(rows, result, report)
            return 0
        if len(rows) > 1:
            # Isolate the bad record: each half goes on its own, the good ones still get through.
            middle = len(rows) // 2
            # Either half is not sent once the drain is stopping (a refusal, stop, the deadline).
            first = Claim(batch=rows[:middle], digest=claim.digest)
            second = Claim(batch=rows[middle:], digest=claim.digest)
            done = await self._send(first, report, window)
            return done + await self._send(second, report, window)
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
        OPERATIONS.labels(org_id=school_label(), kind=kind, result="dead").inc(len(rows))
        return len(rows)

    async def _retry_later(
        self, rows: tuple[QueuedOperation, ...], result: PushResult, report: DrainReport
    ) -> None:
        """Back the rows off, and the whole drain with them: an outage fails every batch, so
        trying the next one at once would hammer a server that is down (and rewrite every row)."""
        self._transient_streak += 1
        delay_s = backoff_s(
            max(rows[0].attempts, self._transient_streak - 1) + 1,
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
        self._paused_until = max(self._paused_until, self._clock() + delay_s)
        report.retried += len(rows)
        report.last_transient = result.message
        OPERATIONS.labels(org_id=school_label(), kind=rows[0].kind, result="retried").inc(len(rows))


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
        max_in_flight=section.max_in_flight,
        retry_base_s=section.retry_base_s,
        retry_max_s=section.retry_max_s,
        progress=progress,
        on_result=on_result,
    )
