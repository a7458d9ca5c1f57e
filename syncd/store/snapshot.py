"""What Chengjiyun has been told, and what the last cycle wanted: the tables ``users``
(acknowledged snapshot), ``desired_users``, ``class_statuses``, ``held_deletions``, ``in_doubt``
and the notified class-status fingerprint in ``meta``.

Methods whose first argument is ``db`` run inside a transaction the caller opened (see
``Store``), so a cycle's new state and its operations are written together or not at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

import aiosqlite

from syncd.core.diff import AckedUser, SourceDiff
from syncd.core.model import ClassStatus, User
from syncd.core.plan import class_status_digest, dumps
from syncd.store.database import Database

__all__ = ["NOTIFIED_DIGEST_KEY", "Snapshot"]

NOTIFIED_DIGEST_KEY = "class_status_notified"
HELD_STATUSES_KEY = "class_statuses_held"  # JSON {"keys": [...], "reason": "..."}
APPROVED_STATUSES_KEY = "class_statuses_approved"


class Snapshot:
    def __init__(self, database: Database) -> None:
        self._db = database

    # --- reads -------------------------------------------------------------------------------

    async def acknowledged(self, source: str) -> dict[str, AckedUser]:
        rows = await self._db.fetchall(
            "SELECT record, missing_cycles FROM users WHERE source = ?", (source,)
        )
        acked = {}
        for row in rows:
            user = User.from_json(json.loads(row["record"]))
            acked[user.id] = AckedUser(user, row["missing_cycles"])
        return acked

    async def approved_ids(self, source: str) -> frozenset[str]:
        rows = await self._db.fetchall(
            "SELECT id FROM held_deletions WHERE source = ? AND approved = 1", (source,)
        )
        return frozenset(row["id"] for row in rows)

    async def stored_class_statuses(self) -> dict[str, ClassStatus]:
        rows = await self._db.fetchall("SELECT record FROM class_statuses")
        statuses = (ClassStatus.from_json(json.loads(row["record"])) for row in rows)
        return {status.key: status for status in statuses}

    async def served_users(self, role: str | None = None) -> list[dict[str, Any]]:
        """Acknowledged users in queryUsers shape, optionally only those holding ``role``."""
        rows = await self._db.fetchall("SELECT record FROM users ORDER BY id")
        users = []
        for row in rows:
            record = json.loads(row["record"])
            if role is None or role in record["roleList"]:
                record.pop("source", None)
                record.pop("owners", None)
                users.append(record)
        return users

    async def user_records(self) -> list[str]:
        """Every acknowledged user's stored JSON, ordered by id: the pull API shapes them off the
        event loop (``syncd.server.answers.shape_users``)."""
        rows = await self._db.fetchall("SELECT record FROM users ORDER BY id")
        return [row["record"] for row in rows]

    async def served_class_statuses(self) -> list[dict[str, Any]]:
        rows = await self._db.fetchall("SELECT record FROM class_statuses ORDER BY key")
        statuses = []
        for row in rows:
            record = json.loads(row["record"])
            record.pop("key", None)
            statuses.append(record)
        return statuses

    async def held_deletions(self) -> list[dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT id, source, name, reason, held_at, approved FROM held_deletions "
            "ORDER BY source, id"
        )
        return [dict(row) for row in rows]

    async def acknowledged_ids(self, *, excluding_source: str) -> frozenset[str]:
        rows = await self._db.fetchall(
            "SELECT id FROM users WHERE source != ?", (excluding_source,)
        )
        return frozenset(row["id"] for row in rows)

    async def held_class_statuses(self) -> dict[str, Any] | None:
        """The class-status change held by the safety limits (keys that would vanish, reason,
        approved), or None."""
        held = await self._db.scalar("SELECT value FROM meta WHERE key = ?", (HELD_STATUSES_KEY,))
        if held is None:
            return None
        approved = await self._db.scalar(
            "SELECT value FROM meta WHERE key = ?", (APPROVED_STATUSES_KEY,)
        )
        return {**json.loads(held), "approved": approved is not None}

    async def approve_class_statuses(self) -> None:
        async with self._db.write() as db:
            await db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, '1')", (APPROVED_STATUSES_KEY,)
            )

    async def user_counts(self) -> dict[str, dict[str, int]]:
        """Per source: users in the last poll (desired) and acknowledged by Chengjiyun."""
        rows = await self._db.fetchall(
            """SELECT source, SUM(kind = 'desired') AS desired, SUM(kind = 'acked') AS acknowledged
               FROM (SELECT source, 'desired' AS kind FROM desired_users
                     UNION ALL SELECT source, 'acked' FROM users)
               GROUP BY source ORDER BY source"""
        )
        return {
            row["source"]: {"desired": row["desired"], "acknowledged": row["acknowledged"]}
            for row in rows
        }

    async def generation(self) -> int:
        """Moves on every change to the served users or class statuses (by any process)."""
        value = await self._db.scalar("SELECT value FROM meta WHERE key = 'snapshot_generation'")
        return int(value or 0)

    # --- writes inside the caller's transaction ----------------------------------------------

    async def write_cycle_state(
        self, db: aiosqlite.Connection, diff: SourceDiff, desired: Mapping[str, User]
    ) -> None:
        """The desired state, missing counters, store-only updates, held deletions and class
        statuses of one source's cycle; rows that did not change are not rewritten."""
        source, now = diff.source, time.time()
        rows = await db.execute_fetchall(
            "SELECT id, hash FROM desired_users WHERE source = ?", (source,)
        )
        before: dict[str, str] = {row[0]: row[1] for row in rows}
        await db.executemany(
            "DELETE FROM desired_users WHERE id = ?",
            [(user_id,) for user_id in before if user_id not in desired],
        )
        await db.executemany(
            "INSERT OR REPLACE INTO desired_users (id, source, record, hash) VALUES (?, ?, ?, ?)",
            [
                (u.id, source, dumps(u.to_json()), digest)
                for u in desired.values()
                if before.get(u.id) != (digest := u.content_hash())
            ],
        )
        await db.execute(
            "UPDATE users SET missing_cycles = 0 WHERE source = ? AND missing_cycles != 0",
            (source,),
        )
        await db.executemany(
            "UPDATE users SET missing_cycles = ? WHERE id = ?",
            [(count, user_id) for user_id, count in diff.missing.items()],
        )
        await db.executemany(  # changes Chengjiyun does not take (studentList, owners): store only
            "UPDATE users SET record = ?, hash = ? WHERE id = ?",
            [
                (dumps(u.user.to_json()), u.user.content_hash(), u.user.id)
                for u in diff.updates
                if not u.sends
            ],
        )
        await self._write_held(db, source, diff.held, now)
        if diff.class_statuses is not None:
            await self._write_class_status_hold(db, diff)
            if diff.class_status_changed:
                await self._replace_class_statuses(db, diff.class_statuses.values(), now)

    async def _write_held(
        self,
        db: aiosqlite.Connection,
        source: str,
        held: Iterable[tuple[User, str]],
        now: float,
    ) -> None:
        held = list(held)
        held_now = {user.id for user, _ in held}
        before = await db.execute_fetchall(
            "SELECT id FROM held_deletions WHERE source = ?", (source,)
        )
        await db.executemany(
            "DELETE FROM held_deletions WHERE id = ?",
            [(row[0],) for row in before if row[0] not in held_now],
        )
        await db.executemany(
            """INSERT INTO held_deletions (id, source, name, reason, held_at) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET reason = excluded.reason""",
            [(user.id, source, user.name, reason, now) for user, reason in held],
        )

    async def _write_class_status_hold(self, db: aiosqlite.Connection, diff: SourceDiff) -> None:
        """Remember a held class-status change for ``status``; once nothing is held, forget it
        and its approval (an approval releases one hold, not every later one)."""
        if diff.class_statuses_held:
            hold = {
                "keys": list(diff.class_statuses_held),
                "reason": diff.class_statuses_held_reason,
            }
            await db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                (HELD_STATUSES_KEY, dumps(hold)),
            )
        else:
            await db.execute(
                "DELETE FROM meta WHERE key IN (?, ?)", (HELD_STATUSES_KEY, APPROVED_STATUSES_KEY)
            )

    async def _replace_class_statuses(
        self, db: aiosqlite.Connection, statuses: Iterable[ClassStatus], now: float
    ) -> None:
        await db.execute("DELETE FROM class_statuses")
        await db.executemany(
            "INSERT INTO class_statuses (key, record, hash, updated_at) VALUES (?, ?, ?, ?)",
            [(s.key, dumps(s.to_json()), s.content_hash(), now) for s in statuses],
        )

    async def current_digest(self, db: aiosqlite.Connection) -> str:
        rows = await db.execute_fetchall("SELECT key, hash FROM class_statuses")
        return class_status_digest((row[0], row[1]) for row in rows)

    async def notified_digest(self, db: aiosqlite.Connection) -> str | None:
        rows = list(
            await db.execute_fetchall(
                "SELECT value FROM meta WHERE key = ?", (NOTIFIED_DIGEST_KEY,)
            )
        )
        return str(rows[0][0]) if rows else None

    async def acknowledged_hashes(self, db: aiosqlite.Connection, ids: list[str]) -> dict[str, str]:
        marks = ",".join("?" * len(ids))
        rows = await db.execute_fetchall(
            f"SELECT id, hash FROM users WHERE id IN ({marks})",  # noqa: S608 - placeholders only
            ids,
        )
        return {row[0]: row[1] for row in rows}

    async def record_acknowledged_users(
        self, db: aiosqlite.Connection, users: Iterable[tuple[str, str, str, str]]
    ) -> None:
        """(id, source, record JSON, hash) that Chengjiyun confirmed holding."""
        rows = [(*user, time.time()) for user in users]
        await db.executemany(
            """INSERT INTO users (id, source, record, hash, missing_cycles, acked_at)
               VALUES (?, ?, ?, ?, 0, ?)
               ON CONFLICT(id) DO UPDATE SET source = excluded.source, record = excluded.record,
                   hash = excluded.hash, missing_cycles = 0, acked_at = excluded.acked_at""",
            rows,
        )
        await db.executemany("DELETE FROM in_doubt WHERE id = ?", [(row[0],) for row in rows])

    async def record_deleted_users(self, db: aiosqlite.Connection, ids: Iterable[str]) -> None:
        params = [(user_id,) for user_id in ids]
        await db.executemany("DELETE FROM users WHERE id = ?", params)
        await db.executemany("DELETE FROM held_deletions WHERE id = ?", params)
        await db.executemany("DELETE FROM in_doubt WHERE id = ?", params)

    async def mark_in_doubt(
        self, db: aiosqlite.Connection, users: Iterable[tuple[str, str]]
    ) -> None:
        """(id, source) of adds about to be sent: until answered, Chengjiyun may hold them."""
        await db.executemany(
            "INSERT OR IGNORE INTO in_doubt (id, source, since) VALUES (?, ?, ?)",
            [(user_id, source, time.time()) for user_id, source in users],
        )

    async def unacknowledged_in_doubt(
        self, db: aiosqlite.Connection, source: str
    ) -> frozenset[str]:
        """Adds of ``source`` sent without an answer, for users Chengjiyun never confirmed."""
        rows = await db.execute_fetchall(
            "SELECT d.id FROM in_doubt d LEFT JOIN users u ON u.id = d.id "
            "WHERE d.source = ? AND u.id IS NULL",
            (source,),
        )
        return frozenset(row[0] for row in rows)

    async def in_doubt_among(self, db: aiosqlite.Connection, ids: list[str]) -> frozenset[str]:
        marks = ",".join("?" * len(ids))
        rows = await db.execute_fetchall(
            f"SELECT id FROM in_doubt WHERE id IN ({marks})",  # noqa: S608 - placeholders only
            ids,
        )
        return frozenset(row[0] for row in rows)

    async def add_class_statuses(
        self, db: aiosqlite.Connection, statuses: Iterable[ClassStatus]
    ) -> None:
        await db.executemany(
            "INSERT OR REPLACE INTO class_statuses (key, record, hash, updated_at) "
            "VALUES (?, ?, ?, ?)",
            [(s.key, dumps(s.to_json()), s.content_hash(), time.time()) for s in statuses],
        )

    async def clear_in_doubt(self, db: aiosqlite.Connection, ids: Iterable[str]) -> None:
        await db.executemany("DELETE FROM in_doubt WHERE id = ?", [(i,) for i in ids])

    async def record_notified(self, db: aiosqlite.Connection, digest: str) -> None:
        await db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (NOTIFIED_DIGEST_KEY, digest),
        )

    async def approve(self, ids: Iterable[str]) -> None:
        async with self._db.write() as db:
            await db.executemany(
                "UPDATE held_deletions SET approved = 1 WHERE id = ?", [(i,) for i in ids]
            )
