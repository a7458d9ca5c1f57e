"""``syncd run``: the daemon. One event loop holds the scheduler (one job per source on its
crontab, plus the weekly full reconcile), the outbound worker, the pull API server and the
systemd watchdog.

A source's failures are its ``SourceHealth``'s business: logged once per change of state,
polled with back-off while failing. Chengjiyun refusing the account is the worker loop's: it
waits (doubling, at most an hour) before trying again, rather than hammering a wrong key.

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
from collections.abc import Awaitable, Callable
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from syncd.alerts import Alerter
from syncd.clients.chengjiyun import client_from_config
from syncd.config import Config
from syncd.core.health import FAILING_AFTER, MAX_BACKOFF_S, backoff_delay_s
from syncd.core.report import CycleReport
from syncd.cron import interval_s, trigger_from_crontab
from syncd.engine.alerting import SchoolAlerts
from syncd.engine.cycle import LogProgress, School, backup_if_due, run_cycle
from syncd.engine.drain import OutboxWorker, worker_from_config
from syncd.engine.notify import SystemdNotifier, watchdog_loop
from syncd.log import get_logger
from syncd.server.app import start_server
from syncd.store import Store

__all__ = ["FAILING_AFTER", "MAX_BACKOFF_S", "Daemon", "backoff_delay_s", "run_daemon"]

log = get_logger(__name__)

STOP_TIMEOUT_S = 30.0  # how long running polls may take to finish after SIGTERM
REFUSED_BACKOFF_MAX_S = 3600.0  # longest wait before trying a refused account again
IDLE_WAKE_S = 3600.0  # the worker looks at the outbox at least this often


def make_scheduler(config: Config, poll: Callable[[str], Awaitable[None]]) -> AsyncIOScheduler:
    """One job per enabled source on its crontab (first run at start-up), and the full
    reconcile; never overlapping themselves, missed runs coalesced. Crontabs follow the
    server's local time zone, DST included."""
    scheduler = AsyncIOScheduler()
    now = dt.datetime.now(scheduler.timezone)
    jobs: list[tuple[str, str, dt.datetime | None]] = [
        (source, getattr(config.schedule, source), now) for source in config.enabled_sources
    ]
    if config.schedule.full_resync:
        jobs.append(("full", config.schedule.full_resync, None))
    for name, expr, first_run in jobs:
        gap_s = interval_s(expr)
        # next_run_time=None would add the job paused: leave it out for "on the trigger".
        first = {"next_run_time": first_run} if first_run is not None else {}
        scheduler.add_job(
            poll,
            trigger=trigger_from_crontab(expr, timezone=scheduler.timezone),
            args=[name],
            id=name,
            name=f"poll {name}",
            max_instances=1,
            coalesce=True,
            # APScheduler's default of 1 s silently skips a run after any loop stall.
            misfire_grace_time=max(1, int(gap_s)),
            jitter=max(1, min(60, int(gap_s * 0.02))),
            replace_existing=True,
            **first,
        )
    return scheduler


class Daemon:
    """The long-running service of one school: built in :meth:`run`, stopped by
    :meth:`request_stop`."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._stop = asyncio.Event()
        self._polls: set[asyncio.Task[Any]] = set()
        self._paused_logged = False
        self.school: School | None = None
        self.worker: OutboxWorker | None = None
        self.alerter = Alerter([], school=config.chengjiyun.org_id)
        self.alerts: SchoolAlerts | None = None

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stop requested; finishing in-flight work")
            self._stop.set()

    async def run(self) -> None:
        config = self.config
        notifier = SystemdNotifier()
        store = await Store.open(config.store.path, backup=config.store.backup, fresh=False)
        self.school = School(config, store)
        self.alerter = Alerter.from_config(config.alerts, school=config.chengjiyun.org_id)
        self.alerts = alerts = SchoolAlerts(self.school, self.alerter)
        client = client_from_config(config)
        self.worker = worker = worker_from_config(
            config,
            store,
            client,
            on_result=alerts.after_request,
            progress=LogProgress("sending to Chengjiyun"),
        )
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
            await self.alerter.aclose()
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
        refused_wait_s = 0.0
        while not self._stop.is_set():
            if self._paused_today():
                await worker.wait_for_wake(self._stop, IDLE_WAKE_S)
                continue
            try:
                report = await worker.drain(stop=self._stop)
            except Exception:
                # Nothing is lost (rows leave the outbox only on acknowledgement): log, wait, retry.
                log.exception("outbound worker failed; retrying in a minute")
                await _wait_or_timeout(self._stop, 60.0)
                continue
            if report.refused is not None:
                refused_wait_s = min(REFUSED_BACKOFF_MAX_S, max(60.0, refused_wait_s * 2))
                log.warning(
                    "Chengjiyun refuses the account; trying again later",
                    retry_in_s=refused_wait_s,
                    hint=report.refused_hint,
                )
                await _wait_or_timeout(self._stop, refused_wait_s)
                continue
            refused_wait_s = 0.0
            await worker.wait_for_wake(self._stop, IDLE_WAKE_S)

    async def _poll(self, name: str) -> None:
        """One scheduled poll of a source (or the full reconcile), skipped while paused."""
        if self._stop.is_set():
            return
        if self._paused_today():
            log.debug("poll skipped inside a pause range", job=name)
            return
        task = asyncio.current_task()
        assert task is not None
        self._polls.add(task)
        try:
            if name == "full":
                await self._cycle(self.config.enabled_sources, full=True)
            else:
                await self._poll_unless_backing_off(name)
        except Exception:
            log.exception("poll failed unexpectedly; it runs again on its schedule", job=name)
        finally:
            self._polls.discard(task)

    async def _poll_unless_backing_off(self, source: str) -> None:
        assert self.school is not None
        wait_s = await self.school.health[source].backing_off_for_s(self._clock())
        if wait_s:
            log.debug("source is failing; backing off", source=source, next_in_s=round(wait_s))
            return
        await self._cycle([source], full=False)

    async def _cycle(self, sources: list[str], *, full: bool) -> None:
        assert self.school is not None and self.worker is not None
        started = time.monotonic()
        report = await run_cycle(
            self.school,
            sources,
            command="run",
            daemon=True,
            full=full,
            progress=LogProgress("polling ClassCharts accounts"),
        )
        self.worker.wake()
        self._log_cycle(report, time.monotonic() - started, full=full)
        if self.alerts is not None:
            await self.alerts.after_cycle(report)
        await backup_if_due(self.school, report, today=dt.date.today())

    def _log_cycle(self, report: CycleReport, duration_s: float, *, full: bool) -> None:
        """One info line per cycle: per source its outcome and counts."""
        fields: dict[str, Any] = {}
        for source, sr in report.sources.items():
            summary = sr.summary()
            fields[source] = (
                f"{summary['outcome']} users={summary['users']} +{summary['adds']} "
                f"~{summary['updates']} -{summary['deletes']} held={summary['held']}"
            )
        log.info(
            "full reconcile queued" if full else "cycle done",
            duration_s=round(duration_s, 2),
            **fields,
        )


async def _wait_or_timeout(event: asyncio.Event, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout=timeout_s)
    except TimeoutError:
        pass


async def run_daemon(config: Config) -> None:
    """Until SIGTERM/SIGINT."""
    daemon = Daemon(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.request_stop)
    try:
        await daemon.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
