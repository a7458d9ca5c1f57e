"""One school inside ``syncd run``: its sync lock, store, health objects, alerts, outbound
worker (with its own rate limiter and connections) and scheduler jobs. Nothing here is shared
with another school, so one school's hanging upstream, full queue or bug delays no other.

A source's failures are its ``SourceHealth``'s business: logged once per change of state,
polled with back-off while failing. Chengjiyun refusing the account is the drain loop's: it
waits (doubling, at most an hour) before trying again, rather than hammering a wrong key.

Every task of the school runs with its ``org_id`` bound to the logging context, so each log
line and metric names the school.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from syncd.alerts import Alerter
from syncd.clients.chengjiyun import ChengjiyunClient, client_from_config
from syncd.config import Config
from syncd.core.alerts import AlertState
from syncd.core.report import CycleReport
from syncd.cron import interval_s, trigger_from_crontab
from syncd.engine.alerting import SchoolAlerts
from syncd.engine.cycle import LogProgress, School, backup_if_due, run_cycle
from syncd.engine.drain import OutboxWorker, worker_from_config
from syncd.engine.lock import SyncLock
from syncd.engine.memory import release_freed_memory
from syncd.log import get_logger
from syncd.server.app import ServedSchool
from syncd.store import Store

__all__ = ["IDLE_WAKE_S", "REFUSED_BACKOFF_MAX_S", "STOP_TIMEOUT_S", "SchoolService"]

log = get_logger(__name__)

STOP_TIMEOUT_S = 30.0  # how long running polls (and the in-flight batch) may take after a stop
REFUSED_BACKOFF_MAX_S = 3600.0  # longest wait before trying a refused account again
IDLE_WAKE_S = 3600.0  # the worker looks at the outbox at least this often
MAX_JITTER_S = 300.0  # later polls of a school start up to this much after their crontab time


class SchoolService:
    """One school's part of the daemon: :meth:`start` it, then :meth:`stop` it."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.org_id = config.chengjiyun.org_id
        self._clock = clock
        self._stop = asyncio.Event()
        self._polls: set[asyncio.Task[Any]] = set()
        self._drain_task: asyncio.Task[None] | None = None
        self._paused_logged = False
        self._scheduler: AsyncIOScheduler | None = None
        self._resources = contextlib.AsyncExitStack()
        self.school: School | None = None
        self.worker: OutboxWorker | None = None
        self.alerter = Alerter([], school=self.org_id)
        self.alerts: SchoolAlerts | None = None
        self.served: ServedSchool | None = None

    async def start(
        self, scheduler: AsyncIOScheduler, *, first_poll_in_s: float = 0.0, jitter: bool = False
    ) -> None:
        """Take the school's sync lock, open its store and worker, and schedule its polls (the
        first ``first_poll_in_s`` from now). Raises SyncLockedError or StoreError, having
        released whatever it took."""
        config = self.config
        try:
            self._resources.enter_context(SyncLock(config.store.path, "run"))
            store = await Store.open(config.store.path, backup=config.store.backup, fresh=False)
            await self._resources.enter_async_context(store)
            self.school = School(config, store)
            self.alerter = Alerter.from_config(
                config.alerts,
                school=self.org_id,
                state=AlertState.from_json(await store.journal.alert_state()),
            )
            self._resources.push_async_callback(self.alerter.aclose)
            self.alerts = alerts = SchoolAlerts(self.school, self.alerter)
            client: ChengjiyunClient = await self._resources.enter_async_context(
                client_from_config(config)
            )
            self.worker = worker_from_config(
                config,
                store,
                client,
                on_result=alerts.after_request,
                progress=LogProgress("sending to Chengjiyun"),
            )
            self.served = ServedSchool(config, store)
        except BaseException:
            await self._resources.aclose()
            raise
        self._drain_task = asyncio.create_task(self._drain_loop(), name=f"outbox {self.org_id}")
        self._scheduler = scheduler
        self._add_jobs(scheduler, first_poll_in_s=first_poll_in_s, jitter=jitter)

    def _add_jobs(
        self, scheduler: AsyncIOScheduler, *, first_poll_in_s: float, jitter: bool
    ) -> None:
        """One job per enabled source on its crontab (the first run soon after start), and the
        full reconcile; never overlapping themselves, missed runs coalesced. Crontabs follow
        the server's local time zone, DST included. With ``jitter`` (several schools), each run
        starts at a random moment of the next few minutes, so schools do not all poll at once."""
        config = self.config
        first_run = dt.datetime.now(scheduler.timezone) + dt.timedelta(seconds=first_poll_in_s)
        jobs: list[tuple[str, str, dt.datetime | None]] = [
            (source, getattr(config.schedule, source), first_run)
            for source in config.enabled_sources
        ]
        if config.schedule.full_resync:
            jobs.append(("full", config.schedule.full_resync, None))
        for name, expr, first in jobs:
            gap_s = interval_s(expr)
            spread_s = min(MAX_JITTER_S, gap_s * 0.1) if jitter else min(60.0, gap_s * 0.02)
            # next_run_time=None would add the job paused: leave it out for "on the trigger".
            when = {"next_run_time": first} if first is not None else {}
            scheduler.add_job(
                self._poll,
                trigger=trigger_from_crontab(expr, timezone=scheduler.timezone),
                args=[name],
                id=self.job_id(name),
                name=f"poll {name} of {self.org_id}",
                max_instances=1,
                coalesce=True,
                # APScheduler's default of 1 s silently skips a run after any loop stall.
                misfire_grace_time=max(1, int(gap_s)),
                jitter=max(1, int(spread_s)),
                replace_existing=True,
                **when,
            )

    def job_id(self, name: str) -> str:
        return f"{self.org_id}:{name}"

    async def stop(self) -> None:
        """Stop polling, let running polls finish (bounded), let the worker finish its
        in-flight batch, then close everything. The outbox makes abandoning the rest safe."""
        self._stop.set()
        if self._scheduler is not None:
            for job in self._scheduler.get_jobs():
                if job.id.startswith(f"{self.org_id}:"):
                    job.remove()
        await self._wait_for_polls()
        if self.worker is not None:
            self.worker.wake()
        if self._drain_task is not None:
            _, pending = await asyncio.wait({self._drain_task}, timeout=STOP_TIMEOUT_S)
            for task in pending:
                task.cancel()
        await self._resources.aclose()

    async def _wait_for_polls(self) -> None:
        if self._polls:
            log.info("waiting for running polls", org_id=self.org_id, count=len(self._polls))
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

    async def _drain_loop(self) -> None:
        """The worker drains whenever woken, except inside a ``[schedule] pause`` range."""
        structlog.contextvars.bind_contextvars(org_id=self.org_id)
        worker = self.worker
        assert worker is not None
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
        structlog.contextvars.bind_contextvars(org_id=self.org_id)
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
        _log_cycle(report, time.monotonic() - started, full=full)
        if self.alerts is not None:
            await self.alerts.after_cycle(report)
            await self.school.store.journal.save_alert_state(self.alerter.state.to_json())
        await backup_if_due(self.school, report, today=dt.date.today())
        release_freed_memory()


def _log_cycle(report: CycleReport, duration_s: float, *, full: bool) -> None:
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
