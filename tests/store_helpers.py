"""Filling a real SQLite store the way the outbox would after Chengjiyun acknowledged."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from syncd.core.model import ClassStatus, User
from syncd.store import Store


async def acknowledge(
    store: Store, users: Iterable[User], statuses: Iterable[ClassStatus] = ()
) -> None:
    async with store.write() as db:
        await db.executemany(
            "INSERT INTO users (id, source, record, hash, acked_at) VALUES (?, ?, ?, ?, ?)",
            [
                (
                    u.id,
                    u.source,
                    json.dumps(u.to_json(), ensure_ascii=False),
                    u.content_hash(),
                    time.time(),
                )
                for u in users
            ],
        )
        await db.executemany(
            "INSERT INTO class_statuses (key, record, hash, updated_at) VALUES (?, ?, ?, ?)",
            [
                (s.key, json.dumps(s.to_json(), ensure_ascii=False), s.content_hash(), time.time())
                for s in statuses
            ],
        )
