"""One sync cycle of one school: poll the sources, map, diff against the snapshot, enqueue.

Polling (``polling.py``) and the store are the only I/O here; mapping and diffing are the pure
core's. ``School`` holds everything that belongs to one school, so one process runs several schools side
by side without any module-level state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from syncd.config import Config
from syncd.core.diff import AckedUser, SourceDiff, diff_source
from syncd.core.kinds import SourceName, SourceOutcome
from syncd.core.mapping import MappedSource, apply_admins_by_source
from syncd.core.model import ADMIN_SOURCE
from syncd.core.report import CycleReport, SourceReport
from syncd.cron import interval_s
from syncd.engine.health import SourceHealth, StateChange
from syncd.engine.polling import Poll, Progress, poll_source
from syncd.log import get_logger
from syncd.metrics import CYCLE_DURATION, CYCLES, LAST_SUCCESS
from syncd.store import Store

__all__ = ["LogProgress", "OnceFilter", "School", "backup_if_due", "run_cycle"]

log = get_logger(__name__)


class OnceFilter:
    """Remembers which messages were already said, so the daemon says each one once; bounded, so
    a year of changing warnings does not grow it without limit (the oldest are forgotten)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._seen: dict[str, None] = {}
        self._max_entries = max_entries

    def first_time(self, message: str) -> bool:
        if message in self._seen:
            return False
        if len(self._seen) >= self._max_entries:
            del self._seen[next(iter(self._seen))]
        self._seen[message] = None
        return True


class LogProgress:
    """Progress of long work as a log line at most every ``interval_s`` (the daemon's first
    sync of a large school takes minutes; silence looks like a hang)."""

    def __init__(self, what: str, *, interval_s: float = 30.0) -> None:
        self._what = what
        self._interval_s = interval_s
        self._last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval_s:
            self._last = now
            log.info("progress", work=self._what, done=done, total=total)


class School:
    """One school: its config, its store and one health object per enabled source."""

    def __init__(
        self, config: Config, store: Store, *, on_health_change: StateChange | None = None
    ) -> None:
        self.config = config
        self.org_id = config.chengjiyun.org_id
        self.store = store
        self.health = {
            source: SourceHealth(
                store,
                source,
                interval_s=interval_s(getattr(config.schedule, source)),
                on_change=on_health_change,
            )
            for source in config.enabled_sources
        }
        self.said = OnceFilter()


async def run_cycle(
    school: School,
    sources: Sequence[str],
    *,
    command: str,
    today: dt.date | None = None,
    write: bool = True,
    daemon: bool = False,
    full: bool = False,
    progress: Progress | None = None,
) -> CycleReport:
    """Poll ``sources`` concurrently, diff each against the snapshot and (if ``write``) enqueue.

    ``daemon``: source failures are logged once per state change by the health objects, and a
    repeated warning about the same record only the first time. ``full``: a full reconcile
    (every user Chengjiyun should hold is re-sent). ``progress``: told of ClassCharts
    accounts polled, (done, total).
    """
    store, today = school.store, today or dt.date.today()
    cycle_id = await store.journal.begin_cycle(command) if write else 0
    started = time.monotonic()
    polled = await asyncio.gather(
        *(
            poll_source(school.config, source, today, quiet=daemon, progress=progress)
            for source in sources
        )
    )
    duration_s = time.monotonic() - started
    polls = await _with_admins(school, dict(zip(sources, polled, strict=True)))
    wanted = {s: set(p.mapped.users) if p.mapped else set() for s, p in polls.items()}
    reports: dict[str, SourceReport] = {}
    for source, poll in polls.items():
        elsewhere = set().union(*(ids for other, ids in wanted.items() if other != source))
        report = await _diff_one(
            school, source, poll, elsewhere, write=write, daemon=daemon, full=full
        )
        reports[source] = report = replace(report, duration_s=duration_s)
        await _after_source(school, report, poll, write=write, daemon=daemon)
    cycle = CycleReport(reports)
    if write:
        await _journal(school.store, cycle_id, cycle)
    return cycle


async def _after_source(
    school: School, report: SourceReport, poll: Poll, *, write: bool, daemon: bool
) -> None:
    """Metrics and the source's health, once its part of the cycle is done."""
    source, org_id = report.source, school.org_id
    CYCLES.labels(org_id=org_id, source=source, outcome=report.outcome).inc()
    CYCLE_DURATION.labels(org_id=org_id, source=source).observe(report.duration_s)
    if write and source in school.health:
        error = "; ".join(poll.errors) or None
        await school.health[source].observe(report.outcome, error, time.time(), quiet=not daemon)
    if poll.mapped is not None:
        LAST_SUCCESS.labels(org_id=org_id, source=source).set(time.time())


async def _journal(store: Store, cycle_id: int, cycle: CycleReport) -> None:
    summaries = {s: r.summary() for s, r in cycle.sources.items()}
    totals = {
        key: sum(int(summary[key]) for summary in summaries.values())
        for key in ("adds", "updates", "deletes", "held")
    }
    await store.journal.finish_cycle(
        cycle_id, outcome=cycle.outcome, sources=summaries, counts=totals
    )


async def _with_admins(school: School, polls: dict[str, Poll]) -> dict[str, Poll]:
    """``[[admins]]`` applied: synced users named there get 管理员; the others become users of
    the pseudo-source ``config`` (present while any admin exists or was ever sent)."""
    admins = school.config.admins
    snapshot = school.store.snapshot
    if not admins and not await snapshot.acknowledged(ADMIN_SOURCE):
        return polls
    polled = {s: p.mapped.users for s, p in polls.items() if p.mapped is not None}
    by_source, warnings = apply_admins_by_source(
        polled, admins, known_ids=await snapshot.acknowledged_ids(excluding_source=ADMIN_SOURCE)
    )
    result = {
        source: replace(poll, mapped=replace(poll.mapped, users=by_source[source]))
        if poll.mapped is not None
        else poll
        for source, poll in polls.items()
    }
    result[ADMIN_SOURCE] = Poll(MappedSource(by_source[ADMIN_SOURCE], {}, tuple(warnings)))
    return result


async def _diff_one(
    school: School,
    source: str,
    poll: Poll,
    claimed_elsewhere: set[str],
    *,
    write: bool,
    daemon: bool,
    full: bool,
) -> SourceReport:
    if poll.mapped is None:
        return SourceReport(source, SourceOutcome.FAILED, errors=poll.errors)
    for warning in poll.mapped.warnings:
        if not daemon or school.said.first_time(warning):
            log.warning("record skipped or adjusted", source=source, detail=warning)
    store = school.store
    acknowledged = await store.snapshot.acknowledged(source)
    diff = await _diff(school, source, poll.mapped, poll, acknowledged, claimed_elsewhere)
    if write:
        await store.commit_cycle(
            diff,
            poll.mapped.users,
            may_delete_orphans=poll.complete and not poll.failed_owners,
            full=full,
        )
    complete = poll.complete and not poll.failed_owners and not poll.errors
    return SourceReport(
        source,
        SourceOutcome.OK if complete else SourceOutcome.PARTIAL,
        errors=poll.errors,
        warnings=poll.mapped.warnings + diff.warnings,
        users=len(poll.mapped.users),
        classes=len(poll.mapped.class_statuses),
        diff=diff,
        acknowledged=acknowledged,
    )


async def _diff(
    school: School,
    source: str,
    mapped: MappedSource,
    poll: Poll,
    acknowledged: Mapping[str, AckedUser],
    claimed_elsewhere: set[str],
) -> SourceDiff:
    """The pure diff, fed from the snapshot, with what it found worth saying logged."""
    snapshot = school.store.snapshot
    is_epaas = source == SourceName.EPAAS
    held_statuses = await snapshot.held_class_statuses() if is_epaas else None
    diff = diff_source(
        source=source,
        desired=mapped.users,
        acknowledged=acknowledged,
        complete=poll.complete,
        failed_owners=poll.failed_owners,
        approved_ids=await snapshot.approved_ids(source),
        safety=school.config.safety,
        desired_class_statuses=mapped.class_statuses if is_epaas else None,
        stored_class_statuses=await snapshot.stored_class_statuses(),
        class_statuses_approved=bool(held_statuses and held_statuses["approved"]),
        claimed_elsewhere=claimed_elsewhere,
    )
    for warning in diff.warnings:
        log.warning("change cannot be sent as is", source=source, detail=warning)
    if diff.held:
        log.warning(
            "deletions held by the [safety] limits; run `syncd approve-deletes` to release them",
            source=source,
            held=len(diff.held),
            reason=diff.held[0][1],
        )
    return diff


async def backup_if_due(school: School, report: CycleReport, *, today: dt.date) -> Path | None:
    """After the first good cycle of each day, an online copy of the database to
    ``[store] backup_path``; also forget history and cycle records older than
    ``[store] history_days``."""
    if report.outcome is not SourceOutcome.OK:
        return None
    target = school.config.store.backup
    midnight = dt.datetime.combine(today, dt.time()).timestamp()
    if not await school.store.backup_to(target, unless_from=midnight):
        return None
    cutoff = time.time() - school.config.store.history_days * 86_400
    await school.store.journal.forget_before(cutoff)
    log.info("database backed up", backup=str(target))
    return target
