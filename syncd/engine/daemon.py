"""``syncd run``: the daemon. One event loop holds the scheduler, one :class:`SchoolService` per
school (its own lock, store, worker and jobs), the pull API server for all of them and the
systemd watchdog.

Stopping (SIGTERM/SIGINT) is ours, not APScheduler's (its ``shutdown`` cancels running coroutine
jobs whatever ``wait`` says): every school stops its jobs, lets running polls finish (bounded)
and its worker finish its in-flight batch; then the scheduler and the server shut down.

Reloading (SIGHUP, ``systemctl reload syncd``) re-reads the ``--config`` directory: added schools
start, removed ones stop, changed ones restart, and the others are not touched.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from syncd.alerts import Alerter
from syncd.config import AlertsConfig, Config
from syncd.core.alerts import AlertEvent, AlertKind
from syncd.engine.notify import SystemdNotifier, watchdog_loop
from syncd.engine.service import SchoolService
from syncd.exceptions import SyncdError
from syncd.log import get_logger
from syncd.schools import InvalidSchool, SchoolConfigs, load_schools
from syncd.server.app import NotRunning, ServedSchools, start_schools_server

__all__ = ["STARTUP_STAGGER_S", "Daemon", "run_daemon"]

log = get_logger(__name__)

STARTUP_STAGGER_S = 0.25  # the schools of a directory take their first polls this far apart
STARTING_AT_ONCE = 16  # schools whose databases are being opened at the same time


class Daemon:
    """The long-running service of every school of ``schools``: built in :meth:`run`, stopped
    by :meth:`request_stop`, re-read by :meth:`request_reload`."""

    def __init__(
        self,
        schools: SchoolConfigs,
        *,
        clock: Callable[[], float] = time.time,
        load: Callable[[Path], SchoolConfigs] = load_schools,
    ) -> None:
        self.schools = schools
        self._clock = clock
        self._load = load
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self.services: dict[str, SchoolService] = {}
        self.served = ServedSchools(per_school=schools.is_directory)
        self._scheduler = AsyncIOScheduler()
        self._announced: dict[Path, str] = {}  # invalid files already alerted, with their error
        self._alerts_in_flight: set[asyncio.Task[None]] = set()

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stop requested; finishing in-flight work")
            self._stop.set()

    def request_reload(self) -> None:
        log.info("reload requested; re-reading the configuration")
        self._reload.set()

    async def run(self) -> None:
        notifier = SystemdNotifier()
        runner = None
        self._scheduler.start()
        watchdog = asyncio.create_task(watchdog_loop(notifier, self._stop), name="watchdog")
        try:
            await self._start_schools(self.schools.schools.values())
            self._report_invalid(self.schools.invalid)
            runner = await start_schools_server(self.schools.server, self.served)
            notifier.ready()
            self._notify_status(notifier)
            if not self.services:
                log.warning(
                    "no school is running: add or fix *.toml files, then `systemctl reload syncd`",
                    config=str(self.schools.source),
                )
            log.info(
                "syncd started",
                schools=len(self.services),
                listen=self.schools.server.listen,
                config=str(self.schools.source),
            )
            while not self._stop.is_set():
                await _first_of(self._stop, self._reload)
                if self._reload.is_set() and not self._stop.is_set():
                    self._reload.clear()
                    notifier.notify("RELOADING=1")
                    await self._apply_reload()
                    notifier.ready()
                    self._notify_status(notifier)
            notifier.stopping()
        finally:
            await asyncio.gather(*(self._stop_school(org) for org in list(self.services)))
            watchdog.cancel()
            if self._scheduler.running:
                self._scheduler.shutdown(wait=False)
            if runner is not None:
                await runner.cleanup()
            log.info("syncd stopped")

    def _notify_status(self, notifier: SystemdNotifier) -> None:
        not_running = len(self.served.not_running)
        text = f"syncing {len(self.services)} school(s)"
        notifier.status(text + (f"; {not_running} not running" if not_running else ""))

    async def _start_schools(self, configs: Iterable[Config]) -> None:
        """Start the schools, a few at a time (opening a database takes a moment, and a
        thousand of them must not keep systemd waiting), their first polls spread out."""
        several = self.schools.is_directory
        opening = asyncio.Semaphore(STARTING_AT_ONCE)

        async def start(index: int, config: Config) -> None:
            async with opening:
                await self._start_school(
                    config, first_poll_in_s=index * STARTUP_STAGGER_S if several else 0.0
                )

        await asyncio.gather(*(start(i, config) for i, config in enumerate(configs)))

    async def _start_school(self, config: Config, *, first_poll_in_s: float) -> None:
        """In a directory, a school that cannot start is reported and the others go on; with
        one configuration file, its failure is the process's (e.g. exit 75 or 2)."""
        org_id = config.chengjiyun.org_id
        service = SchoolService(config, clock=self._clock)
        try:
            await service.start(
                self._scheduler, first_poll_in_s=first_poll_in_s, jitter=self.schools.is_directory
            )
        except Exception as err:
            if not self.schools.is_directory:
                raise
            # A held lock or an unusable database is the admin's to fix; anything else is a bug
            # worth its traceback. Either way the other schools go on.
            report = log.error if isinstance(err, SyncdError) else log.exception
            report("school not started", org_id=org_id, error=str(err))
            self.served.not_running[org_id] = NotRunning.NOT_STARTED
            event = AlertEvent(AlertKind.SCHOOL_NOT_STARTED, org_id, None, str(err))
            self._alert(config.alerts, event)
            return
        assert service.served is not None
        self.services[org_id] = service
        self.served.schools[org_id] = service.served
        self.served.not_running.pop(org_id, None)
        log.info("school started", org_id=org_id, sources=config.enabled_sources)

    async def _stop_school(self, org_id: str) -> None:
        service = self.services.pop(org_id)
        self.served.schools.pop(org_id, None)
        await service.stop()
        log.info("school stopped", org_id=org_id)

    def _report_invalid(self, invalid: tuple[InvalidSchool, ...]) -> None:
        """Each invalid file once per distinct error: a log line, /healthz, and an alert on the
        file's own ``[alerts]`` channel when that section validates."""
        for bad in invalid:
            self.served.not_running[bad.name] = NotRunning.INVALID
            error = str(bad.error)
            if self._announced.get(bad.path) == error:
                continue
            self._announced[bad.path] = error
            log.error(
                "school file is invalid; that school is not running",
                file=str(bad.path),
                error=error,
                fix=f"syncd check-config --config {bad.path}",
            )
            self._alert(bad.alerts, AlertEvent(AlertKind.CONFIG_INVALID, bad.name, None, error))
        still_bad = {bad.path for bad in invalid}
        for path in [p for p in self._announced if p not in still_bad]:
            del self._announced[path]

    def _alert(self, channels: AlertsConfig | None, event: AlertEvent) -> None:
        """Tell a school's admin about a school that is not running, on its own channels."""
        if channels is None:
            return
        task = asyncio.create_task(
            _send_and_close(Alerter.from_config(channels, school=event.school), event)
        )
        self._alerts_in_flight.add(task)
        task.add_done_callback(self._alerts_in_flight.discard)

    async def _apply_reload(self) -> None:
        """Stop the removed and changed schools, start the changed and added ones (and any
        that failed to start before); leave the others alone."""
        try:
            fresh = self._load(self.schools.source)
        except SyncdError as err:
            log.error("reload failed; keeping the running configuration", error=str(err))
            return
        if fresh.server != self.schools.server:
            log.warning("[server] changed: restart syncd to move the listener; kept the old one")
            fresh = replace(fresh, server=self.schools.server)
        old, new = self.schools.schools, fresh.schools
        removed = [org for org in old if org not in new]
        changed = [org for org in new if org in old and new[org] != old[org]]
        added = [org for org in new if org not in old]
        retried = [org for org in new if org in old and org not in self.services]
        for name in [*removed, *(bad.name for bad in self.schools.invalid)]:
            self.served.not_running.pop(name, None)
        for org in changed:  # between its stop and its start, pulls are told to come back
            self.served.not_running[org] = NotRunning.RESTARTING
        await asyncio.gather(
            *(self._stop_school(org) for org in [*removed, *changed] if org in self.services)
        )
        self.schools = fresh
        starting = dict.fromkeys([*changed, *added, *retried])
        await self._start_schools(new[org] for org in starting)
        self._report_invalid(fresh.invalid)
        log.info(
            "configuration reloaded",
            started=sorted(added),
            restarted=sorted(set(changed) | set(retried)),
            stopped=sorted(removed),
            invalid=[bad.path.name for bad in fresh.invalid],
        )


async def _send_and_close(alerter: Alerter, event: AlertEvent) -> None:
    await alerter.send(event)
    await alerter.aclose()


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def run_daemon(schools: SchoolConfigs) -> None:
    """Until SIGTERM/SIGINT; SIGHUP re-reads the configuration."""
    daemon = Daemon(schools)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.request_stop)
    loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
    try:
        await daemon.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
