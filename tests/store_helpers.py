"""Filling a real SQLite store the way the outbox would after Chengjiyun acknowledged."""

from __future__ import annotations

from collections.abc import Iterable

from syncd.core.model import ClassStatus, User
from syncd.store import Store


async def acknowledge(
    store: Store, users: Iterable[User], statuses: Iterable[ClassStatus] = ()
) -> None:
    await store.record_acknowledged(users, statuses)
