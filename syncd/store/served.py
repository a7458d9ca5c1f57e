"""Reads for the pull API's answers, split so the costly part can run off the event loop.

``Store.served_users`` parses every record on the event loop; for a large school the server
instead fetches the raw records (the database thread does that) and shapes them in a worker
thread while building the answer once per snapshot change.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from syncd.store.database import Store

__all__ = ["exams_fingerprint", "shape_users", "user_records"]

# Bookkeeping kept with a stored record that Chengjiyun is not sent.
PRIVATE_KEYS = ("source", "owners")


async def user_records(store: Store) -> list[str]:
    """Every acknowledged user's stored JSON record, ordered by id."""
    rows = await store.fetchall("SELECT record FROM users ORDER BY id")
    return [row["record"] for row in rows]


def shape_users(records: Iterable[str], role: str | None = None) -> list[dict[str, Any]]:
    """Records in queryUsers shape, optionally only those holding ``role`` (same rule as
    ``Store.served_users``)."""
    users = []
    for text in records:
        record = json.loads(text)
        if role is None or role in record["roleList"]:
            for key in PRIVATE_KEYS:
                record.pop(key, None)
            users.append(record)
    return users


async def exams_fingerprint(store: Store) -> tuple[int, float, float]:
    """Moves whenever an exam is imported, replaced or deleted (by any process): the count of
    exams and the sum and maximum of their import times."""
    row = await store.fetchone(
        "SELECT COUNT(*) AS n, COALESCE(SUM(imported_at), 0) AS total,"
        " COALESCE(MAX(imported_at), 0) AS latest FROM exams"
    )
    if row is None:
        return (0, 0.0, 0.0)
    return (int(row["n"]), float(row["total"]), float(row["latest"]))
