"""``syncd run``: the daemon. One event loop holds the scheduler (one job per source on its
crontab), the outbound worker, the pull API server and the systemd watchdog.

Failure handling follows Home Assistant's DataUpdateCoordinator: a source that fails is logged
once when it starts failing and once when it recovers, not on every attempt. After
``FAILING_AFTER`` consecutive failures it is polled with exponential back-off (at most once a
day) instead of on every tick, so a revoked password does not hammer the service.

Stopping (SIGTERM/SIGINT) is ours, not APScheduler's (its ``shutdown`` cancels running coroutine
jobs whatever ``wait`` says): pause the scheduler, let running polls finish (bounded), let the
worker finish its in-flight batch, then shut everything down. The outbox makes abandoning
anything beyond that safe.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
from collections.abc import Callable
from typing import Any, TextIO

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from syncd.clients.chengjiyun import client_from_config
from syncd.config import Config
from syncd.cron import interval_s, trigger_from_crontab
from syncd.engine.cycle import run_cycle
from syncd.engine.drain import OutboxWorker, worker_from_config
from syncd.engine.notify import SystemdNotifier, watchdog_loop
from syncd.log import get_logger
from syncd.server.app import start_server
from syncd.store import FAILING_AFTER, Store

__all__ = ["FAILING_AFTER", "MAX_BACKOFF_S", "Daemon", "backoff_delay_s", "run"]

log = get_logger(__name__)

MAX_BACKOFF_S = 86_400.0  # a failing source is still tried at least once a day
STOP_TIMEOUT_S = 30.0  # how long running polls may take to finish after SIGTERM


def backoff_delay_s(consecutive_failures: int, schedule_interval_s: float) -> float:
    """How long after its last attempt a source may be polled again; 0 = on its normal schedule.

    Doubles with every failure past the threshold: 2, 4, 8 … schedule intervals, capped at a day.
    """
    if consecutive_failures < FAILING_AFTER:
        return 0.0
    return min(
        MAX_BACKOFF_S, schedule_interval_s * 2.0 ** (consecutive_failures - FAILING_AFTER + 1)
    )


def make_scheduler(config: Config, job: Any) -> AsyncIOScheduler:
    """One job per enabled source on its crontab (first run at start-up); never overlapping
    itself, missed runs coalesced. Crontabs follow the server's local time zone, DST included."""
    scheduler = AsyncIOScheduler()
    now = dt.datetime.now(scheduler.timezone)
    for source in config.enabled_sources:
        expr = getattr(config.schedule, source)
        gap_s = interval_s(expr)
        scheduler.add_job(
            job,
            trigger=trigger_from_crontab(expr, timezone=scheduler.timezone),
            args=[source],
            id=source,
            name=f"poll {source}",
            max_instances=1,
            coalesce=True,
            # APScheduler's default of 1 s silently skips a run after any loop stall.
            misfire_grace_time=max(1, int(gap_s)),
            jitter=max(1, min(60, int(gap_s * 0.02))),
            next_run_time=now,
            replace_existing=True,
        )
    return scheduler


class Daemon:
    """The long-running service: built in :meth:`run`, stopped by :meth:`request_stop`."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._stop = asyncio.Event()
        self._polls: set[asyncio.Task[Any]] = set()
        self._condition: dict[str, str] = {}  # ok / erroring / failing, per source
        self._paused_logged = False
        self.store: Store | None = None
        self.worker: OutboxWorker | None = None

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stop requested; finishing in-flight work")
            self._stop.set()

    async def run(self) -> None:
        config = self.config
        notifier = SystemdNotifier()
        self.store = store = await Store.open(config.store.path)
        client = client_from_config(config)
        self.worker = worker = worker_from_config(config, store, client)
        runner = None
        scheduler = None
        background: list[asyncio.Task[Any]] = []
        try:
            runner = await start_server(config, store)
            scheduler = make_scheduler(config, self._poll)
            scheduler.start()
            background = [
                asyncio.create_task(self._drain_loop(worker), name="outbox"),
                asyncio.create_task(watchdog_loop(notifier, self._stop), name="watchdog"),
            ]
            notifier.ready()
            notifier.status(f"syncing {', '.join(config.enabled_sources) or 'no sources'}")
            log.info(
                "syncd started",
                sources=config.enabled_sources,
                listen=config.server.listen,
                database=str(config.store.path),
            )
            await self._stop.wait()
            notifier.stopping()
            scheduler.pause()
            await self._wait_for_polls()
            worker.wake()
            await asyncio.wait(background, timeout=STOP_TIMEOUT_S)
        finally:
            for task in background:
                task.cancel()
            if scheduler is not None and scheduler.running:
                scheduler.shutdown(wait=False)
            if runner is not None:
                await runner.cleanup()
            await client.close()
            await store.close()
            log.info("syncd stopped")

    async def _wait_for_polls(self) -> None:
        if self._polls:
            log.info("waiting for running polls", count=len(self._polls))
            _, pending = await asyncio.wait(self._polls, timeout=STOP_TIMEOUT_S)
            for task in pending:
                # The outbox makes this safe: an unfinished cycle has enqueued nothing.
                log.warning("poll did not finish in time; abandoning it", task=task.get_name())
                task.cancel()

    def _paused_today(self) -> bool:
        paused = self.config.schedule.paused_on(dt.date.today())
        if paused != self._paused_logged:
            log.info(
                "pause range begins; no polling or pushing"
                if paused
                else "pause range over; syncing again"
            )
            self._paused_logged = paused
        return paused

    async def _drain_loop(self, worker: OutboxWorker) -> None:
        """The worker drains whenever woken, except inside a ``[schedule] pause`` range."""
        while not self._stop.is_set():
            if self._paused_today():
                await _wait_or_timeout(self._stop, 3600.0)
                continue
            try:
                await worker.drain(stop=self._stop)
            except Exception:
                # Nothing is lost (rows leave the outbox only on acknowledgement): log, wait, retry.
                log.exception("outbound worker failed; retrying in a minute")
                await _wait_or_timeout(self._stop, 60.0)
                continue
            await worker.wait_for_wake(self._stop, timeout_s=3600.0)

    async def _poll(self, source: str) -> None:
        """One scheduled poll of ``source``, skipped while paused or backing off."""
        if self._stop.is_set() or self._paused_today():
            return
        task = asyncio.current_task()
        assert task is not None
        self._polls.add(task)
        try:
            await self._poll_unless_backing_off(source)
        except Exception:
            log.exception("poll failed unexpectedly; it runs again on its schedule", source=source)
        finally:
            self._polls.discard(task)

    async def _poll_unless_backing_off(self, source: str) -> None:
        assert self.store is not None and self.worker is not None
        state = (await self.store.source_states()).get(source, {})
        failures = int(state.get("consecutive_failures") or 0)
        last_attempt = float(state.get("last_attempt_at") or 0.0)
        delay = backoff_delay_s(failures, interval_s(getattr(self.config.schedule, source)))
        if delay and self._clock() < last_attempt + delay:
            log.debug(
                "source is failing; backing off",
                source=source,
                next_attempt_in_s=round(last_attempt + delay - self._clock()),
            )
            return
        report = await run_cycle(self.config, self.store, [source], command="run", daemon=True)
        self.worker.wake()
        outcome = report.sources[source]
        state = (await self.store.source_states()).get(source, {})
        failing = state.get("state") == "failing"
        was = self._condition.get(source, "ok")
        now = "failing" if failing else "ok" if outcome.outcome == "ok" else "erroring"
        if now != was:
            # One line per change of state, not one per attempt (DataUpdateCoordinator style).
            error = "; ".join(outcome.errors) or None
            if now == "failing":
                log.error(
                    "source is failing; polling it with back-off until it recovers",
                    source=source,
                    consecutive_failures=state.get("consecutive_failures"),
                    error=error,
                )
            elif now == "erroring":
                log.warning("source failed; retrying on its schedule", source=source, error=error)
            else:
                log.info("source recovered", source=source)
        self._condition[source] = now


async def _wait_or_timeout(event: asyncio.Event, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout=timeout_s)
    except TimeoutError:
        pass


async def run(config: Config, args: Any, out: TextIO) -> int:
    """``syncd run``: until SIGTERM/SIGINT; exit 0 on a clean stop."""
    daemon = Daemon(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.request_stop)
    try:
        await daemon.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return 0
