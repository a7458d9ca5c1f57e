"""The outbound queue: the tables ``outbox`` (operations waiting) and ``dead_letters``
(operations Chengjiyun refused for good, with the reason).

A row leaves the outbox only in the transaction that records its fate (acknowledged, or dead-
lettered), so a crash at any moment loses nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiosqlite

from syncd.core.kinds import KIND_ORDER, OperationKind
from syncd.core.plan import DeadKey, SourcePlan, dumps
from syncd.log import redact
from syncd.store.database import Database

__all__ = ["Outbox", "QueuedOperation"]


@dataclass(frozen=True, slots=True)
class QueuedOperation:
    """One outbox row. ``record`` is the full user JSON stored on acknowledgement."""

    seq: int
    kind: OperationKind
    record_id: str | None
    payload: Any
    record: str | None
    hash: str | None
    source: str | None
    attempts: int
    force: bool = False


_COLUMNS = "seq, kind, record_id, payload, record, hash, source, attempts, force"


def _row(row: Any) -> QueuedOperation:
    return QueuedOperation(
        row[0],
        OperationKind(row[1]),
        row[2],
        json.loads(row[3]),
        row[4],
        row[5],
        row[6],
        row[7],
        bool(row[8]),
    )


class Outbox:
    def __init__(self, database: Database) -> None:
        self._db = database

    # --- reads -------------------------------------------------------------------------------

    async def count(self) -> int:
        return int(await self._db.scalar("SELECT COUNT(*) FROM outbox"))

    async def depth(self) -> dict[str, int]:
        rows = await self._db.fetchall("SELECT kind, COUNT(*) AS n FROM outbox GROUP BY kind")
        return {row["kind"]: row["n"] for row in rows}

    async def dead_letters(self) -> list[dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT seq, kind, record_id, source, attempts, code, reason, failed_at "
            "FROM dead_letters ORDER BY seq"
        )
        return [dict(row) for row in rows]

    async def dead_letter_count(self) -> int:
        return int(await self._db.scalar("SELECT COUNT(*) FROM dead_letters"))

    # --- a cycle's operations, inside the caller's transaction -------------------------------

    async def dead_keys(self, db: aiosqlite.Connection, source: str) -> list[DeadKey]:
        rows = await db.execute_fetchall(
            "SELECT kind, record_id, hash FROM dead_letters WHERE source = ?", (source,)
        )
        return [(row[0], row[1], row[2]) for row in rows]

    async def replace_pending(self, db: aiosqlite.Connection, plan: SourcePlan) -> dict[str, int]:
        """Pending user operations of the source are replaced by the plan's: the diff is always
        against the acknowledged snapshot, so the newest plan says all that is still to send."""
        now = time.time()
        await db.executemany(
            "DELETE FROM dead_letters WHERE source = ? AND kind = ? AND record_id IS ? AND hash = ?",
            [(plan.source, *key) for key in plan.dead_to_forget],
        )
        await db.execute(
            "DELETE FROM outbox WHERE source = ? AND kind != ?",
            (plan.source, OperationKind.NOTIFY),
        )
        await db.executemany(
            """INSERT INTO outbox (kind, record_id, payload, record, hash, source, created_at, force)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(record_id) WHERE record_id IS NOT NULL DO UPDATE SET
                   kind = excluded.kind, payload = excluded.payload, record = excluded.record,
                   hash = excluded.hash, source = excluded.source, attempts = 0,
                   next_attempt_at = 0, last_error = NULL, force = excluded.force""",
            [
                (
                    op.kind,
                    op.record_id,
                    dumps(op.payload),
                    dumps(op.user.to_json()) if op.user is not None else None,
                    op.fingerprint,
                    plan.source,
                    now,
                    int(op.force),
                )
                for op in plan.operations
            ],
        )
        queued = dict.fromkeys(map(str, KIND_ORDER), 0)
        for op in plan.operations:
            queued[op.kind] += 1
        return queued

    async def queue_notify(self, db: aiosqlite.Connection, source: str) -> int:
        cursor = await db.execute(
            "INSERT OR IGNORE INTO outbox (kind, record_id, payload, source, created_at) "
            "VALUES (?, NULL, 'null', ?, ?)",
            (OperationKind.NOTIFY, source, time.time()),
        )
        return cursor.rowcount or 0

    # --- the drain ---------------------------------------------------------------------------

    async def due(
        self,
        db: aiosqlite.Connection,
        kind: OperationKind,
        limit: int,
        *,
        in_flight: Iterable[QueuedOperation] = (),
    ) -> tuple[list[QueuedOperation], float | None]:
        """Up to ``limit`` rows of ``kind`` that are due now, or (nothing, seconds until the
        first is due); (nothing, None) when there are no rows of that kind to claim.

        Rows ``in_flight`` are skipped, and so is any row for a record one of them names: a
        cycle may re-queue an operation whose request is on the wire, and sending the copy
        before the original is answered would put the same record in flight twice.
        """
        busy = list(in_flight)
        seqs = json.dumps([row.seq for row in busy])
        ids = json.dumps([row.record_id for row in busy if row.record_id is not None])
        now = time.time()
        rows = list(
            await db.execute_fetchall(
                f"SELECT {_COLUMNS}, next_attempt_at FROM outbox WHERE kind = ? "  # noqa: S608
                "AND seq NOT IN (SELECT value FROM json_each(?)) "
                "AND (record_id IS NULL OR record_id NOT IN (SELECT value FROM json_each(?))) "
                "ORDER BY next_attempt_at, seq LIMIT ?",
                (kind, seqs, ids, limit),
            )
        )
        if not rows:
            return [], None
        due = [_row(row) for row in rows if row[9] <= now]
        if not due:
            return [], max(0.0, rows[0][9] - now)
        return due, 0.0

    async def remove(self, db: aiosqlite.Connection, rows: Iterable[QueuedOperation]) -> None:
        await db.executemany("DELETE FROM outbox WHERE seq = ?", [(row.seq,) for row in rows])

    async def retry_later(
        self,
        db: aiosqlite.Connection,
        rows: Iterable[QueuedOperation],
        *,
        delay_s: float,
        error: str,
    ) -> None:
        """Back off: the rows stay queued; they are tried again after ``delay_s``."""
        when, error = time.time() + delay_s, redact(error)
        await db.executemany(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? "
            "WHERE seq = ?",
            [(when, error, row.seq) for row in rows],
        )

    async def move_to_dead_letters(
        self,
        db: aiosqlite.Connection,
        rows: Iterable[QueuedOperation],
        *,
        code: int | None,
        reason: str,
    ) -> None:
        rows, now, reason = list(rows), time.time(), redact(reason)
        await db.executemany(
            """INSERT INTO dead_letters (seq, kind, record_id, payload, record, hash, source,
                   attempts, code, reason, failed_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                (
                    row.seq,
                    row.kind,
                    row.record_id,
                    dumps(row.payload),
                    row.record,
                    row.hash,
                    row.source,
                    row.attempts + 1,
                    code,
                    reason,
                    now,
                )
                for row in rows
            ],
        )
        await self.remove(db, rows)

    async def resend_as_add(self, row: QueuedOperation, payload: Any) -> None:
        """An update of a user Chengjiyun no longer holds becomes an add of the whole record."""
        async with self._db.write() as db:
            await db.execute(
                "UPDATE outbox SET kind = ?, payload = ?, attempts = 0, next_attempt_at = 0 "
                "WHERE seq = ?",
                (OperationKind.ADD, dumps(payload), row.seq),
            )

    async def requeue_dead(self) -> int:
        """Every dead letter back in the outbox with a fresh attempt count (``retry-dead``)."""
        now = time.time()
        async with self._db.write() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT kind, record_id, payload, record, hash, source FROM dead_letters "
                    "ORDER BY seq"
                )
            )
            for row in rows:
                if row[1] is not None:
                    await db.execute("DELETE FROM outbox WHERE record_id = ?", (row[1],))
                else:
                    await db.execute("DELETE FROM outbox WHERE kind = ?", (row[0],))
            await db.executemany(
                """INSERT INTO outbox (kind, record_id, payload, record, hash, source, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                [(*row, now) for row in rows],
            )
            await db.execute("DELETE FROM dead_letters")
        return len(rows)
