"""Polling one source: the clients' answers, mapped into canonical records.

A source either answers completely, or is marked incomplete (no deletions from it), or fails
(nothing from it at all). One ClassCharts account that fails protects the records it owns while
the other accounts' changes still flow. Whatever goes wrong inside one source, including an
exception nobody foresaw, stays inside that source's result: the other source's changes are
still sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from syncd.clients.classcharts import ClassChartsPool
from syncd.clients.epaas import EpaasClient, fetch_school
from syncd.config import ClassChartsConfig, Config, EpaasConfig
from syncd.core.kinds import SourceName
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
from syncd.exceptions import ConfigError, SyncdError
from syncd.log import get_logger

__all__ = ["ACCOUNT_CONCURRENCY", "Poll", "Progress", "poll_source"]

log = get_logger(__name__)

ACCOUNT_CONCURRENCY = 4  # ClassCharts logins at once


@dataclass(frozen=True)
class Poll:
    """What polling one source produced (``mapped`` is None when the source failed)."""

    mapped: MappedSource | None
    complete: bool = True
    failed_owners: frozenset[str] = frozenset()
    errors: tuple[str, ...] = ()


async def _poll_parent(pool: ClassChartsPool, email: str, password: str) -> ClassChartsAccountPoll:
    async with pool.parent(email, password) as client:
        await client.login()
        pupils = await client.get_pupils()
        return ClassChartsAccountPoll(
            account_key=parent_account_key(email),
            kind="parent",
            user_id=client.user.id,
            user_name=client.user.name,
            pupils=tuple(PupilFacts(p.id, p.name) for p in pupils),
        )


async def _poll_student(
    pool: ClassChartsPool, code: str, dob: str, key: str
) -> ClassChartsAccountPoll:
    async with pool.student(code, dob) as client:
        await client.login()
        return ClassChartsAccountPoll(
            account_key=student_account_key(code, key),
            kind="student",
            user_id=client.user.id,
            user_name=client.user.name,
            pupils=(PupilFacts(client.user.id, client.user.name),),
        )


Progress = Callable[[int, int], None]  # (done, total), for a terminal line or a log line


_Account = tuple[str, str, Any]  # (label for messages, account key, the poll coroutine)


def _accounts(section: ClassChartsConfig, pool: ClassChartsPool, key: str) -> list[_Account]:
    parents = [
        (
            f"parent account {p.email}",
            parent_account_key(p.email),
            _poll_parent(pool, p.email, p.password.reveal()),
        )
        for p in section.parents
    ]
    students = [
        (
            f"student account #{n}",
            student_account_key(s.code.reveal(), key),
            _poll_student(pool, s.code.reveal(), s.dob.reveal(), key),
        )
        for n, s in enumerate(section.students, start=1)
    ]
    return parents + students


async def _poll_all(
    accounts: list[_Account], progress: Progress | None
) -> list[ClassChartsAccountPoll | BaseException]:
    """At most ACCOUNT_CONCURRENCY logins at once; each account's failure is its own."""
    limit, done = asyncio.Semaphore(ACCOUNT_CONCURRENCY), 0

    async def guarded(coroutine: Any) -> ClassChartsAccountPoll:
        nonlocal done
        async with limit:
            try:
                result: ClassChartsAccountPoll = await coroutine
                return result
            finally:
                done += 1
                if progress is not None:
                    progress(done, len(accounts))

    return await asyncio.gather(*(guarded(c) for _, _, c in accounts), return_exceptions=True)


async def poll_classcharts(
    config: Config, today: dt.date, *, quiet: bool, progress: Progress | None = None
) -> Poll:
    """Every configured account, a few at a time over one shared connection pool."""
    section = config.classcharts
    assert section is not None
    async with ClassChartsPool(
        base_url=section.base_url,
        timeout_s=section.timeout_s,
        connections=ACCOUNT_CONCURRENCY,
        max_response_bytes=config.chengjiyun.max_response_bytes,
    ) as pool:
        accounts = _accounts(section, pool, config.chengjiyun.key.reveal())
        results = await _poll_all(accounts, progress)
    polls: list[ClassChartsAccountPoll] = []
    failed: set[str] = set()
    errors: list[str] = []
    for (label, account_key, _), result in zip(accounts, results, strict=True):
        if isinstance(result, Exception):
            failed.add(account_key)
            errors.append(f"{label}: {_describe(result)}")
            (log.debug if quiet else log.warning)(
                "classcharts account failed; its pupils are kept as they are",
                account=label,
                error=_describe(result),
            )
        elif isinstance(result, BaseException):
            raise result
        else:
            polls.append(result)
    if not polls:
        return Poll(None, complete=False, failed_owners=frozenset(failed), errors=tuple(errors))
    roster = load_roster(section.roster, today=today) if section.roster else None
    mapped = map_classcharts(polls, id_prefix=section.id_prefix, roster=roster)
    return Poll(mapped, complete=True, failed_owners=frozenset(failed), errors=tuple(errors))


async def poll_epaas(config: Config, today: dt.date) -> Poll:
    section: EpaasConfig | None = config.epaas
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
        max_response_bytes=config.chengjiyun.max_response_bytes,
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
    return Poll(mapped, complete=school.complete, errors=errors)


def _describe(err: BaseException) -> str:
    """Our own errors say what went wrong; anything else is named by its type as well."""
    if isinstance(err, SyncdError):
        return str(err)
    return f"unexpected {type(err).__name__}: {err}"


async def poll_source(
    config: Config,
    source: str,
    today: dt.date,
    *,
    quiet: bool,
    progress: Progress | None = None,
) -> Poll:
    """One source's poll; never raises for that source's own failures (configuration aside)."""
    try:
        if source == SourceName.CLASSCHARTS:
            return await poll_classcharts(config, today, quiet=quiet, progress=progress)
        return await poll_epaas(config, today)
    except ConfigError:
        raise
    except (Exception, RecursionError) as err:  # one source's failure never stops the other
        if not isinstance(err, SyncdError):
            log.error("source poll failed unexpectedly", source=source, error=_describe(err))
        (log.debug if quiet else log.warning)(
            "source failed; nothing from it is sent or deleted this cycle",
            source=source,
            error=_describe(err),
        )
        return Poll(None, complete=False, errors=(_describe(err),))
