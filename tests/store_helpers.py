"""Filling a real SQLite store the way the outbox would after Chengjiyun acknowledged."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from syncd.config import SafetyConfig
from syncd.core.diff import AckedUser, SourceDiff, diff_source
from syncd.core.health import observe
from syncd.core.kinds import SourceOutcome
from syncd.core.model import ClassStatus, User
from syncd.store import Store


async def acknowledge(
    store: Store, users: Iterable[User], statuses: Iterable[ClassStatus] = ()
) -> None:
    await store.record_acknowledged(users, statuses)


async def record_poll(
    store: Store, source: str, *, ok: bool, error: str | None = None, now: float | None = None
) -> None:
    """One poll's outcome recorded as the engine's health object would."""
    record = await store.journal.health(source)
    outcome = SourceOutcome.OK if ok else SourceOutcome.FAILED
    await store.journal.save_health(
        observe(record, outcome, error, time.time() if now is None else now)
    )


def user_diff(
    desired: Mapping[str, User],
    *,
    source: str = "classcharts",
    acknowledged: Mapping[str, AckedUser] | None = None,
) -> SourceDiff:
    """The diff of a complete poll with nothing failed, default [safety], no class statuses."""
    return diff_source(
        source=source,
        desired=desired,
        acknowledged=acknowledged or {},
        complete=True,
        failed_owners=frozenset(),
        approved_ids=frozenset(),
        safety=SafetyConfig(),
        desired_class_statuses=None,
        stored_class_statuses={},
    )
