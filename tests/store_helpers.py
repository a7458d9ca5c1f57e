"""Filling a real SQLite store the way the outbox would after Chengjiyun acknowledged."""

from __future__ import annotations

import time
from collections.abc import Iterable

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
