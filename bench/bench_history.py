"""`syncd history` on a 20,000-user school with a year of history: how long one user's story
and one day of everybody's take to read (the history table is indexed by user and by time).

A year here: the first sync (20,000 adds), a weekly full reconcile (52 × 20,000 adds) and
2,000 renames a week, about 1.2 million rows.
Run: .venv/bin/python bench/bench_history.py
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from syncd.store import Store

USERS = 20_000
WEEKS = 52
RENAMES_PER_WEEK = 2_000


def fill(path: Path) -> int:
    """A year of rows, bulk-inserted with plain sqlite3 (set-up only; the reads under test go
    through the store, as `syncd history` does)."""
    start = time.time() - 365 * 86_400
    rows = 0
    with sqlite3.connect(path) as db:
        for week in range(WEEKS + 1):
            at = start + week * 7 * 86_400
            batch = [
                (at, "addUser", f"cc-{n}", json.dumps({"id": f"cc-{n}", "name": f"P{n}"}))
                for n in range(USERS)
            ] + [
                (at + 3600, "updateUser", f"cc-{(week * RENAMES_PER_WEEK + n) % USERS}", "{}")
                for n in range(RENAMES_PER_WEEK)
            ]
            db.executemany(
                "INSERT INTO history (at, kind, record_id, fields, outcome, code, answer) "
                "VALUES (?, ?, ?, ?, 'sent', 0, 'success')",
                batch,
            )
            rows += len(batch)
    return rows


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "syncd.db"
        async with await Store.open(path):
            pass  # creates the schema
        started = time.perf_counter()
        rows = fill(path)
        print(f"history rows: {rows:,} (filled in {time.perf_counter() - started:.1f} s)")
        async with await Store.open(path, readonly=True) as store:
            timings = []
            for n in range(50):
                began = time.perf_counter()
                entries = await store.journal.history(f"cc-{n * 397 % USERS}")
                timings.append(time.perf_counter() - began)
            print(
                f"history ID: {len(entries)} entries per user; median "
                f"{statistics.median(timings) * 1000:.1f} ms, max {max(timings) * 1000:.1f} ms"
            )
            since = time.time() - 7 * 86_400
            began = time.perf_counter()
            recent = await store.journal.history(since=since)
            print(
                f"history --since (last week, first 1,000 rows): {len(recent)} rows in "
                f"{(time.perf_counter() - began) * 1000:.1f} ms"
            )


if __name__ == "__main__":
    asyncio.run(main())
