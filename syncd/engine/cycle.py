"""One sync cycle: poll the sources, map, diff against the snapshot, enqueue — and the
``--run-once`` and ``plan`` commands built on it.

Polling is the only I/O here besides the store; mapping and diffing are the pure functions of
``mapping.py`` and ``diff.py``. A source that fails contributes nothing to the cycle (no
operations at all, so no deletions); one ClassCharts account that fails protects the records it
owns while the other accounts' changes still flow.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from syncd.clients.chengjiyun import client_from_config
from syncd.clients.classcharts import ParentClient, StudentClient
from syncd.clients.epaas import EpaasClient, fetch_school
from syncd.config import Config
from syncd.core.diff import AckedUser, SourceDiff, diff_source
from syncd.core.mapping import (
    ClassChartsAccountPoll,
    MappedSource,
    PupilFacts,
    map_classcharts,
    map_epaas,
    parent_account_key,
    student_account_key,
)
from syncd.core.roster import load_roster
from syncd.engine.drain import DrainReport, worker_from_config
from syncd.exceptions import ConfigError, SyncdError
from syncd.log import get_logger
from syncd.metrics import CYCLES, LAST_SUCCESS
from syncd.store import Store

__all__ = ["CycleReport", "SourceReport", "plan_command", "run_cycle", "run_once_command"]

log = get_logger(__name__)

EXIT_OK, EXIT_FAILED = 0, 1
# In the daemon the same skipped record would be logged every hour for a year: say it once.
_warned_once: set[str] = set()
ACCOUNT_CONCURRENCY = 4  # ClassCharts logins at once


@dataclass
class _Poll:
    """What polling one source produced (``mapped`` is None when the source failed)."""

    mapped: MappedSource | None
    complete: bool = True
    failed_owners: frozenset[str] = frozenset()
    errors: tuple[str, ...] = ()


@dataclass
class SourceReport:
    source: str
    outcome: str  # ok / partial / failed
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    users: int = 0
    classes: int = 0
    diff: SourceDiff | None = None
    acknowledged: dict[str, AckedUser] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        diff = self.diff
        return {
            "outcome": self.outcome,
            "errors": list(self.errors),
            "warnings": len(self.warnings),
            "users": self.users,
            "classes": self.classes,
            "adds": len(diff.adds) if diff else 0,
            "updates": sum(1 for u in diff.updates if u.sends) if diff else 0,
            "deletes": len(diff.deletes) if diff else 0,
            "held": len(diff.held) if diff else 0,
            "class_status_changed": bool(diff and diff.class_status_changed),
        }


@dataclass
class CycleReport:
    sources: dict[str, SourceReport]

    @property
    def failed(self) -> bool:
        return any(report.outcome != "ok" for report in self.sources.values())


# --- polling ---------------------------------------------------------------------------------


async def _poll_parent(config: Config, email: str, password: str) -> ClassChartsAccountPoll:
    section = config.classcharts
    assert section is not None
    async with ParentClient(
        email, password, base_url=section.base_url, timeout_s=section.timeout_s
    ) as client:
        await client.login()
        pupils = await client.get_pupils()
        return ClassChartsAccountPoll(
            account_key=parent_account_key(email),
            kind="parent",
            user_id=client.user.id,
            user_name=client.user.name,
            pupils=tuple(PupilFacts(p.id, p.name) for p in pupils),
        )


async def _poll_student(config: Config, code: str, dob: str) -> ClassChartsAccountPoll:
    section = config.classcharts
    assert section is not None
    async with StudentClient(
        code, dob, base_url=section.base_url, timeout_s=section.timeout_s
    ) as client:
        await client.login()
        return ClassChartsAccountPoll(
            account_key=student_account_key(code, config.chengjiyun.key.reveal()),
            kind="student",
            user_id=client.user.id,
            user_name=client.user.name,
            pupils=(PupilFacts(client.user.id, client.user.name),),
        )


async def poll_classcharts(config: Config, *, quiet: bool = False) -> _Poll:
    section = config.classcharts
    assert section is not None
    limit = asyncio.Semaphore(ACCOUNT_CONCURRENCY)
    accounts: list[tuple[str, str, Any]] = [
        (
            f"parent account {p.email}",
            parent_account_key(p.email),
            _poll_parent(config, p.email, p.password.reveal()),
        )
        for p in section.parents
    ] + [
        (
            f"student account #{n}",
            student_account_key(s.code.reveal(), config.chengjiyun.key.reveal()),
            _poll_student(config, s.code.reveal(), s.dob.reveal()),
        )
        for n, s in enumerate(section.students, start=1)
    ]

    async def guarded(coroutine: Any) -> ClassChartsAccountPoll:
        async with limit:
            return await coroutine

    results = await asyncio.gather(*(guarded(c) for _, _, c in accounts), return_exceptions=True)
    polls: list[ClassChartsAccountPoll] = []
    failed: set[str] = set()
    errors: list[str] = []
    for (label, key, _), result in zip(accounts, results, strict=True):
        if isinstance(result, SyncdError):
            failed.add(key)
            errors.append(f"{label}: {result}")
            (log.debug if quiet else log.warning)(
                "classcharts account failed; its pupils are kept as they are",
                account=label,
                error=str(result),
            )
        elif isinstance(result, BaseException):
            raise result
        else:
            polls.append(result)
    if not polls:
        return _Poll(None, complete=False, failed_owners=frozenset(failed), errors=tuple(errors))
    roster = load_roster(section.roster) if section.roster else None
    mapped = map_classcharts(polls, id_prefix=section.id_prefix, roster=roster)
    return _Poll(mapped, complete=True, failed_owners=frozenset(failed), errors=tuple(errors))


async def poll_epaas(config: Config, today: dt.date) -> _Poll:
    section = config.epaas
    assert section is not None
    async with EpaasClient(
        base_url=section.base_url,
        suite_id=section.suite_id,
        suite_secret=section.suite_secret.reveal(),
        suite_ticket=section.suite_ticket.reveal(),
        auth_corpid=section.auth_corpid,
        permanent_code=section.permanent_code.reveal(),
        page_size=section.page_size,
        timeout_s=section.timeout_s,
    ) as client:
        school = await fetch_school(client)
    mapped = map_epaas(
        school.classes,
        id_prefix=section.id_prefix,
        today=today,
        class_subjects=section.class_subjects,
    )
    mapped = MappedSource(mapped.users, mapped.class_statuses, school.warnings + mapped.warnings)
    errors = tuple(f"incomplete answer: {w}" for w in school.warnings)
    return _Poll(mapped, complete=school.complete, errors=errors)


async def _poll(config: Config, source: str, today: dt.date, *, quiet: bool) -> _Poll:
    try:
        if source == "classcharts":
            return await poll_classcharts(config, quiet=quiet)
        return await poll_epaas(config, today)
    except ConfigError:
        raise
    except SyncdError as err:
        (log.debug if quiet else log.warning)(
            "source failed; nothing from it is sent or deleted this cycle",
            source=source,
            error=str(err),
        )
        return _Poll(None, complete=False, errors=(str(err),))


# --- the cycle -------------------------------------------------------------------------------


async def run_cycle(
    config: Config,
    store: Store,
    sources: Sequence[str],
    *,
    command: str,
    today: dt.date | None = None,
    write: bool = True,
    daemon: bool = False,
) -> CycleReport:
    """Poll ``sources`` concurrently, diff each against the snapshot and (if ``write``) enqueue.

    ``daemon``: the caller logs source failures once per state change, and a repeated warning
    about the same record is logged only the first time.
    """
    today = today or dt.date.today()
    cycle_id = await store.begin_cycle(command) if write else 0
    polls = await asyncio.gather(
        *(_poll(config, source, today, quiet=daemon) for source in sources)
    )
    reports: dict[str, SourceReport] = {}
    stored_statuses = await store.stored_class_statuses()
    for source, poll in zip(sources, polls, strict=True):
        reports[source] = report = await _diff_one(
            config, store, source, poll, stored_statuses, write=write, once=daemon
        )
        CYCLES.labels(source=source, outcome=report.outcome).inc()
        if write:
            await store.record_poll(
                source, ok=poll.mapped is not None, error="; ".join(poll.errors) or None
            )
        if poll.mapped is not None:
            LAST_SUCCESS.labels(source=source).set(time.time())
    if write:
        outcome = (
            "ok"
            if all(r.outcome == "ok" for r in reports.values())
            else ("failed" if all(r.outcome == "failed" for r in reports.values()) else "partial")
        )
        summaries = {s: r.summary() for s, r in reports.items()}
        totals = {
            k: sum(int(v[k]) for v in summaries.values())
            for k in ("adds", "updates", "deletes", "held")
        }
        await store.finish_cycle(cycle_id, outcome=outcome, sources=summaries, counts=totals)
    return CycleReport(reports)


async def _diff_one(
    config: Config,
    store: Store,
    source: str,
    poll: _Poll,
    stored_statuses: Any,
    *,
    write: bool,
    once: bool,
) -> SourceReport:
    if poll.mapped is None:
        return SourceReport(source, "failed", errors=poll.errors)
    for warning in poll.mapped.warnings:
        if not once or warning not in _warned_once:
            log.warning("record skipped or adjusted", source=source, detail=warning)
            _warned_once.add(warning)
    acknowledged = await store.acknowledged(source)
    diff = diff_source(
        source=source,
        desired=poll.mapped.users,
        acknowledged=acknowledged,
        complete=poll.complete,
        failed_owners=poll.failed_owners,
        approved_ids=await store.approved_ids(source),
        safety=config.safety,
        desired_class_statuses=poll.mapped.class_statuses if source == "epaas" else None,
        stored_class_statuses=stored_statuses,
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
    if write:
        await store.apply_diff(diff, poll.mapped.users)
    outcome = "ok" if poll.complete and not poll.failed_owners and not poll.errors else "partial"
    return SourceReport(
        source,
        outcome,
        errors=poll.errors,
        warnings=poll.mapped.warnings + diff.warnings,
        users=len(poll.mapped.users),
        classes=len(poll.mapped.class_statuses),
        diff=diff,
        acknowledged=acknowledged,
    )


# --- commands --------------------------------------------------------------------------------


class _Progress:
    """done / total, rate and ETA on one terminal line, redrawn in place."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._started = time.monotonic()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else float("inf")
        eta_text = f"{eta:.0f} s" if eta != float("inf") else "?"
        self._out.write(f"\r  sending: {done}/{total} operations, {rate:.1f}/s, ETA {eta_text}   ")
        self._out.flush()
        self.shown = True


def _describe_sources(report: CycleReport, out: TextIO) -> None:
    for source, sr in report.sources.items():
        counts = sr.summary()
        if sr.outcome == "failed":
            out.write(f"{source}: FAILED — nothing sent or deleted for it this cycle\n")
        else:
            out.write(
                f"{source}: {sr.outcome} — {sr.users} users"
                + (f", {sr.classes} class statuses" if source == "epaas" else "")
                + f"; queued {counts['adds']} add, {counts['updates']} update, {counts['deletes']} delete"
                + (", class status notify" if counts["class_status_changed"] else "")
                + "\n"
            )
        for error in sr.errors:
            out.write(f"  error: {error}\n")
        if sr.warnings:
            out.write(f"  {len(sr.warnings)} warning(s), e.g. {sr.warnings[0]}\n")
        if counts["held"]:
            out.write(
                f"  {counts['held']} deletion(s) HELD by the [safety] limits: see `syncd status`, "
                "release with `syncd approve-deletes`\n"
            )


def _describe_drain(drain: DrainReport, out: TextIO) -> None:
    sent = ", ".join(f"{n} {kind}" for kind, n in drain.sent.items() if n) or "nothing"
    out.write(f"sent: {sent} in {drain.requests} request(s)\n")
    for dead in drain.dead:
        out.write(f"  DEAD LETTER {dead['kind']} {dead['record_id'] or ''}: {dead['reason']}\n")
    if drain.remaining:
        out.write(f"  {drain.remaining} operation(s) still queued (stopped early)\n")


async def run_once_command(config: Config, args: Any, out: TextIO) -> int:
    """``--run-once``: one cycle of every enabled source, then drain the queue.

    Exit 0 when everything is synced; 1 when a source (or one of its accounts) failed, or an
    operation was dead-lettered, or dead letters remain. Held deletions alone do not fail the
    run: they are reported and logged as warnings.
    """
    if config.schedule.paused_on(dt.date.today()):
        out.write("today is inside a [schedule] pause range: nothing polled, nothing sent\n")
        return EXIT_OK
    async with await Store.open(config.store.path) as store:
        if not config.enabled_sources:
            log.warning("no source is enabled; add a [classcharts] or [epaas] section")
        report = await run_cycle(config, store, config.enabled_sources, command="run-once")
        _describe_sources(report, out)
        progress = _Progress(out) if _isatty(out) else None
        async with client_from_config(config) as client:
            drain = await worker_from_config(config, store, client, progress=progress).drain()
        if progress is not None and progress.shown:
            out.write("\n")
        _describe_drain(drain, out)
        dead_left = len(await store.dead_letters())
    if dead_left:
        out.write(
            f"{dead_left} dead letter(s) waiting: see `syncd status`; requeue with `syncd retry-dead`\n"
        )
    return EXIT_FAILED if report.failed or drain.dead or dead_left or drain.remaining else EXIT_OK


def _isatty(out: TextIO) -> bool:
    return hasattr(out, "isatty") and out.isatty()


def _plan_json(report: CycleReport) -> dict[str, Any]:
    sources: dict[str, Any] = {}
    for source, sr in report.sources.items():
        diff = sr.diff
        sources[source] = {
            "outcome": sr.outcome,
            "errors": list(sr.errors),
            "warnings": list(sr.warnings),
            "addUser": [u.pushed() for u in diff.adds] if diff else [],
            "updateUser": [u.changes for u in diff.updates if u.sends] if diff else [],
            "deleteUser": [u.id for u in diff.deletes] if diff else [],
            "held": [{"id": u.id, "name": u.name, "reason": r} for u, r in diff.held]
            if diff
            else [],
            "missing": dict(diff.missing) if diff else {},
            "classStatusChanged": bool(diff and diff.class_status_changed),
        }
    return {"sources": sources}


def _plan_text(report: CycleReport, config: Config, out: TextIO) -> None:
    for source, sr in report.sources.items():
        diff = sr.diff
        if diff is None:
            out.write(f"{source}: FAILED — {'; '.join(sr.errors)}\n")
            continue
        out.write(f"{source}: {sr.outcome}, {sr.users} users\n")
        for error in sr.errors:
            out.write(f"  error: {error}\n")
        for warning in sr.warnings:
            out.write(f"  warning: {warning}\n")
        for user in diff.adds:
            out.write(f"  add     {user.id}  {user.name} ({', '.join(user.roles)})\n")
        for update in diff.updates:
            if not update.sends:
                continue
            old = sr.acknowledged[update.user.id].user.pushed()
            changes = ", ".join(
                f"{k}: {old.get(k)!r} → {v!r}" for k, v in update.changes.items() if k != "id"
            )
            out.write(f"  update  {update.user.id}  {changes}\n")
        for user in diff.deletes:
            out.write(f"  delete  {user.id}  {user.name}\n")
        for user, reason in diff.held:
            out.write(f"  HELD    {user.id}  {user.name}: {reason}\n")
        held_ids = {user.id for user, _ in diff.held} | {user.id for user in diff.deletes}
        for user_id, count in sorted(diff.missing.items()):
            if user_id in held_ids:
                continue
            out.write(
                f"  missing {user_id} ({count} of {config.safety.delete_after_cycles} cycles before deletion)\n"
            )
        if diff.class_status_changed:
            out.write("  class statuses changed: update/classStatus will be sent once\n")
        if diff.is_empty and not diff.held:
            out.write("  nothing to send\n")


async def plan_command(config: Config, args: Any, out: TextIO) -> int:
    """``plan``: what a cycle would send now. Opens the database read-only and writes nothing."""
    async with await Store.open(Path(config.store.path), readonly=True) as store:
        report = await run_cycle(config, store, config.enabled_sources, command="plan", write=False)
    if getattr(args, "json", False):
        out.write(json.dumps(_plan_json(report), ensure_ascii=False, indent=2) + "\n")
    else:
        _plan_text(report, config, out)
    return EXIT_FAILED if report.failed else EXIT_OK
