"""The SQLite file: acknowledged snapshot, last desired state, outbox, dead letters, held
deletions, cycle history, per-source health and imported exams.

One writer connection; every write goes through :meth:`Store.write`, which serialises writers in
the process and opens ``BEGIN IMMEDIATE`` so SQLite never fails a read-then-write transaction with
SQLITE_BUSY. ``synchronous=FULL`` because an acknowledged push must survive power loss. The file is
created 0600 and never holds a secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from syncd.core.diff import AckedUser, SourceDiff
from syncd.core.model import ClassStatus, User
from syncd.exceptions import SyncdError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Store", "StoreError", "class_status_digest"]

NOTIFIED_DIGEST_KEY = "class_status_notified"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def class_status_digest(hashes: Any) -> str:
    """One fingerprint of every class status, to tell whether Chengjiyun has seen this set."""
    text = ",".join(f"{key}={value}" for key, value in sorted(hashes))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


FAILING_AFTER = 3  # consecutive failed polls before a source is marked failing


def _op_hash(kind: str, record_id: str, user: User | None) -> str:
    """What makes two operations the same, for dead-letter de-duplication."""
    return user.content_hash() if user is not None else f"{kind}:{record_id}"


class StoreError(SyncdError):
    """The database cannot be opened or is from a newer syncd."""


# Each entry upgrades the schema by one version (PRAGMA user_version). Append; never edit a
# released entry.
MIGRATIONS: list[str] = [
    # 1: the sync engine
    """
    CREATE TABLE users (                -- what Chengjiyun has acknowledged: the snapshot
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        record TEXT NOT NULL,           -- User.to_json()
        hash TEXT NOT NULL,             -- User.content_hash()
        missing_cycles INTEGER NOT NULL DEFAULT 0,  -- consecutive complete polls it was absent from
        acked_at REAL NOT NULL
    );
    CREATE INDEX users_source ON users(source);
    CREATE TABLE desired_users (        -- the desired state computed by the last cycle of each source
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        record TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX desired_users_source ON desired_users(source);
    CREATE TABLE class_statuses (       -- served by queryClassStatus
        key TEXT PRIMARY KEY,
        record TEXT NOT NULL,           -- ClassStatus.to_json()
        hash TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('addUser', 'updateUser', 'classStatus', 'deleteUser')),
        record_id TEXT,                 -- user id; NULL for the classStatus notify
        payload TEXT NOT NULL,          -- JSON element sent in the request array
        record TEXT,                    -- full User.to_json() to store on acknowledgement
        hash TEXT,
        source TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX outbox_one_per_record ON outbox(record_id) WHERE record_id IS NOT NULL;
    CREATE UNIQUE INDEX outbox_one_notify ON outbox(kind) WHERE kind = 'classStatus';
    CREATE TABLE dead_letters (
        seq INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        record_id TEXT,
        payload TEXT NOT NULL,
        record TEXT,
        hash TEXT,
        source TEXT,
        attempts INTEGER NOT NULL,
        code INTEGER,
        reason TEXT NOT NULL,
        failed_at REAL NOT NULL
    );
    CREATE TABLE held_deletions (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        name TEXT NOT NULL,
        reason TEXT NOT NULL,
        held_at REAL NOT NULL,
        approved INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE cycles (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        command TEXT NOT NULL,          -- run-once / run / plan
        started_at REAL NOT NULL,
        finished_at REAL,
        outcome TEXT,                   -- ok / partial / failed
        sources TEXT NOT NULL DEFAULT '{}',   -- {source: {outcome, error, polled, ...}}
        counts TEXT NOT NULL DEFAULT '{}'     -- {adds, updates, deletes, held, sent, dead}
    );
    CREATE TABLE source_state (
        source TEXT PRIMARY KEY,
        state TEXT NOT NULL DEFAULT 'ok',      -- ok / failing
        consecutive_failures INTEGER NOT NULL DEFAULT 0,
        last_attempt_at REAL,
        last_success_at REAL,
        last_error TEXT
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: imported exams (issue 5)
    """
    CREATE TABLE exams (
        exam_id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        grade INTEGER,
        year INTEGER,
        imported_at REAL NOT NULL
    );
    CREATE TABLE exam_totals (
        exam_id TEXT NOT NULL REFERENCES exams(exam_id) ON DELETE CASCADE,
        account TEXT NOT NULL,
        scores TEXT NOT NULL,           -- {"语文": 120, ...}
        PRIMARY KEY (exam_id, account)
    );
    CREATE TABLE exam_questions (
        exam_id TEXT NOT NULL REFERENCES exams(exam_id) ON DELETE CASCADE,
        course TEXT NOT NULL,
        position INTEGER NOT NULL,
        number TEXT NOT NULL,
        subjective TEXT NOT NULL,
        score REAL NOT NULL,
        scroll TEXT NOT NULL,
        selection TEXT,
        type TEXT,
        knowledge TEXT,
        ability TEXT,
        PRIMARY KEY (exam_id, course, number)
    );
    CREATE TABLE exam_question_scores (
        exam_id TEXT NOT NULL REFERENCES exams(exam_id) ON DELETE CASCADE,
        course TEXT NOT NULL,
        account TEXT NOT NULL,
        scores TEXT NOT NULL,           -- {"1": 5, "3.a": null}
        PRIMARY KEY (exam_id, course, account)
    );
    """,
    # 3: a counter that moves whenever what the pull API serves changes, in any process, so
    # answers can be built once per change and served from memory.
    """
    INSERT OR IGNORE INTO meta (key, value) VALUES ('snapshot_generation', '0');
    CREATE TRIGGER users_added AFTER INSERT ON users BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'snapshot_generation'; END;
    CREATE TRIGGER users_changed AFTER UPDATE OF record ON users BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'snapshot_generation'; END;
    CREATE TRIGGER users_removed AFTER DELETE ON users BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'snapshot_generation'; END;
    CREATE TRIGGER class_statuses_added AFTER INSERT ON class_statuses BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'snapshot_generation'; END;
    CREATE TRIGGER class_statuses_changed AFTER UPDATE ON class_statuses BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'snapshot_generation'; END;
    CREATE TRIGGER class_statuses_removed AFTER DELETE ON class_statuses BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'snapshot_generation'; END;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class Store:
    """The single connection to the database file."""

    def __init__(self, conn: aiosqlite.Connection, path: Path, *, readonly: bool) -> None:
        self.conn = conn
        self.path = path
        self.readonly = readonly
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, *, readonly: bool = False) -> Store:
        """Open (creating 0600 and migrating unless ``readonly``) the database at ``path``.

        A read-only open of a file that does not exist yet gives an empty in-memory database, so
        ``syncd plan`` on a fresh install shows everything as to be added and writes nothing.
        """
        try:
            if readonly:
                if path.exists():
                    conn = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True)
                else:
                    conn = await aiosqlite.connect(":memory:")
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
                conn = await aiosqlite.connect(path)
        except (sqlite3.Error, OSError) as err:
            raise StoreError(f"cannot open database {path}: {err}") from err
        conn.row_factory = aiosqlite.Row
        store = cls(conn, path, readonly=readonly)
        try:
            await store._prepare(in_memory=readonly and not path.exists())
        except BaseException:
            await conn.close()
            raise
        return store

    async def _prepare(self, *, in_memory: bool) -> None:
        await self.conn.execute("PRAGMA foreign_keys = ON")
        await self.conn.execute("PRAGMA busy_timeout = 10000")
        if self.readonly and not in_memory:
            version = await self._user_version()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database {self.path} is schema {version}, newer than this syncd ({SCHEMA_VERSION})"
                )
            return
        if not self.readonly:
            await self.conn.execute("PRAGMA journal_mode = WAL")
            await self.conn.execute("PRAGMA synchronous = FULL")
        await self._migrate()

    async def _user_version(self) -> int:
        async with self.conn.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def _migrate(self) -> None:
        version = await self._user_version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {self.path} is schema {version}, newer than this syncd ({SCHEMA_VERSION})"
            )
        for number in range(version, SCHEMA_VERSION):
            # executescript commits first; the whole step plus its version bump is one transaction.
            await self.conn.executescript(
                f"BEGIN IMMEDIATE;\n{MIGRATIONS[number]}\nPRAGMA user_version = {number + 1};\nCOMMIT;"
            )

    async def close(self) -> None:
        await self.conn.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), committed on success, rolled back on error."""
        if self.readonly:
            raise StoreError("this database was opened read-only")
        async with self._write_lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                await self.conn.rollback()
                raise
            await self.conn.commit()

    async def fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[aiosqlite.Row]:
        async with self.conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def fetchone(self, sql: str, params: tuple[Any, ...] = ()) -> aiosqlite.Row | None:
        async with self.conn.execute(sql, params) as cursor:
            return await cursor.fetchone()

    # --- reads used by the pull API, status, health and exams -------------------------------

    async def served_users(self, role: str | None = None) -> list[dict[str, Any]]:
        """Acknowledged users in queryUsers shape, optionally only those holding ``role``."""
        rows = await self.fetchall("SELECT record FROM users ORDER BY id")
        users = []
        for row in rows:
            record = json.loads(row["record"])
            if role is None or role in record["roleList"]:
                record.pop("source", None)
                record.pop("owners", None)
                users.append(record)
        return users

    async def user_ids(self, role: str | None = None) -> set[str]:
        return {user["id"] for user in await self.served_users(role)}

    async def served_class_statuses(self) -> list[dict[str, Any]]:
        rows = await self.fetchall("SELECT record FROM class_statuses ORDER BY key")
        statuses = []
        for row in rows:
            record = json.loads(row["record"])
            record.pop("key", None)
            statuses.append(record)
        return statuses

    async def queue_depth(self) -> dict[str, int]:
        rows = await self.fetchall("SELECT kind, COUNT(*) AS n FROM outbox GROUP BY kind")
        return {row["kind"]: row["n"] for row in rows}

    async def dead_letters(self) -> list[dict[str, Any]]:
        rows = await self.fetchall(
            "SELECT seq, kind, record_id, source, attempts, code, reason, failed_at FROM dead_letters ORDER BY seq"
        )
        return [dict(row) for row in rows]

    async def held_deletions(self) -> list[dict[str, Any]]:
        rows = await self.fetchall(
            "SELECT id, source, name, reason, held_at, approved FROM held_deletions ORDER BY source, id"
        )
        return [dict(row) for row in rows]

    async def recent_cycles(self, limit: int = 10) -> list[dict[str, Any]]:
        rows = await self.fetchall("SELECT * FROM cycles ORDER BY id DESC LIMIT ?", (limit,))
        cycles = []
        for row in rows:
            cycle = dict(row)
            cycle["sources"] = json.loads(cycle["sources"])
            cycle["counts"] = json.loads(cycle["counts"])
            cycles.append(cycle)
        return cycles

    async def source_states(self) -> dict[str, dict[str, Any]]:
        rows = await self.fetchall("SELECT * FROM source_state ORDER BY source")
        return {row["source"]: dict(row) for row in rows}

    async def snapshot_generation(self) -> int:
        """Moves on every change to the served users or class statuses (by any process)."""
        value = await self.get_meta("snapshot_generation")
        return int(value or 0)

    async def get_meta(self, key: str) -> str | None:
        row = await self.fetchone("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else str(row["value"])

    # --- the sync engine's writes -----------------------------------------------------------

    async def acknowledged(self, source: str) -> dict[str, AckedUser]:
        rows = await self.fetchall(
            "SELECT record, missing_cycles FROM users WHERE source = ?", (source,)
        )
        acked = {}
        for row in rows:
            user = User.from_json(json.loads(row["record"]))
            acked[user.id] = AckedUser(user, row["missing_cycles"])
        return acked

    async def approved_ids(self, source: str) -> frozenset[str]:
        rows = await self.fetchall(
            "SELECT id FROM held_deletions WHERE source = ? AND approved = 1", (source,)
        )
        return frozenset(row["id"] for row in rows)

    async def stored_class_statuses(self) -> dict[str, ClassStatus]:
        rows = await self.fetchall("SELECT record FROM class_statuses")
        statuses = (ClassStatus.from_json(json.loads(row["record"])) for row in rows)
        return {status.key: status for status in statuses}

    async def class_status_digest(self) -> str:
        return class_status_digest(
            tuple(row) for row in await self.fetchall("SELECT key, hash FROM class_statuses")
        )

    async def begin_cycle(self, command: str) -> int:
        async with self.write() as db:
            cursor = await db.execute(
                "INSERT INTO cycles (command, started_at) VALUES (?, ?)", (command, time.time())
            )
            return int(cursor.lastrowid or 0)

    async def finish_cycle(
        self, cycle_id: int, *, outcome: str, sources: dict[str, Any], counts: dict[str, Any]
    ) -> None:
        async with self.write() as db:
            await db.execute(
                "UPDATE cycles SET finished_at = ?, outcome = ?, sources = ?, counts = ? WHERE id = ?",
                (time.time(), outcome, _dumps(sources), _dumps(counts), cycle_id),
            )

    async def record_poll(
        self, source: str, *, ok: bool, error: str | None, now: float | None = None
    ) -> None:
        """Keep the per-source health: consecutive failures, failing after 3, last success."""
        now = time.time() if now is None else now
        async with self.write() as db:
            if ok:
                await db.execute(
                    """INSERT INTO source_state (source, state, consecutive_failures, last_attempt_at, last_success_at)
                       VALUES (?, 'ok', 0, ?, ?)
                       ON CONFLICT(source) DO UPDATE SET state = 'ok', consecutive_failures = 0,
                           last_attempt_at = excluded.last_attempt_at, last_success_at = excluded.last_success_at,
                           last_error = NULL""",
                    (source, now, now),
                )
            else:
                await db.execute(
                    """INSERT INTO source_state (source, state, consecutive_failures, last_attempt_at, last_error)
                       VALUES (?, 'ok', 1, ?, ?)
                       ON CONFLICT(source) DO UPDATE SET consecutive_failures = consecutive_failures + 1,
                           last_attempt_at = excluded.last_attempt_at, last_error = excluded.last_error""",
                    (source, now, error),
                )
                await db.execute(
                    "UPDATE source_state SET state = 'failing' WHERE source = ? AND consecutive_failures >= ?",
                    (source, FAILING_AFTER),
                )

    async def apply_diff(self, diff: SourceDiff, desired: Mapping[str, User]) -> dict[str, int]:
        """Write the new desired state and the operations it implies in ONE transaction.

        Pending operations of this source are replaced: the diff is always against the
        acknowledged snapshot, so the newest one says everything that is still to be sent, and a
        re-run enqueues nothing twice. An operation identical to a dead letter is not enqueued
        again until ``retry-dead`` or until the record changes. Returns counts of what was queued.
        """
        now = time.time()
        source = diff.source
        queued = {"addUser": 0, "updateUser": 0, "deleteUser": 0, "classStatus": 0}
        async with self.write() as db:
            await db.execute("DELETE FROM desired_users WHERE source = ?", (source,))
            await db.executemany(
                "INSERT INTO desired_users (id, source, record, hash) VALUES (?, ?, ?, ?)",
                [(u.id, source, _dumps(u.to_json()), u.content_hash()) for u in desired.values()],
            )
            await db.execute(
                "UPDATE users SET missing_cycles = 0 WHERE source = ? AND missing_cycles != 0",
                (source,),
            )
            await db.executemany(
                "UPDATE users SET missing_cycles = ? WHERE id = ?",
                [(n, uid) for uid, n in diff.missing.items()],
            )
            await db.executemany(
                "UPDATE users SET record = ?, hash = ? WHERE id = ?",
                [
                    (_dumps(u.user.to_json()), u.user.content_hash(), u.user.id)
                    for u in diff.updates
                    if not u.sends
                ],
            )
            held_now = {user.id for user, _ in diff.held}
            held_before = await db.execute_fetchall(
                "SELECT id FROM held_deletions WHERE source = ?", (source,)
            )
            await db.executemany(
                "DELETE FROM held_deletions WHERE id = ?",
                [(row[0],) for row in held_before if row[0] not in held_now],
            )
            await db.executemany(
                """INSERT INTO held_deletions (id, source, name, reason, held_at) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET reason = excluded.reason""",
                [(user.id, source, user.name, reason, now) for user, reason in diff.held],
            )
            if diff.class_statuses is not None:
                await db.execute("DELETE FROM class_statuses")
                await db.executemany(
                    "INSERT INTO class_statuses (key, record, hash, updated_at) VALUES (?, ?, ?, ?)",
                    [
                        (s.key, _dumps(s.to_json()), s.content_hash(), now)
                        for s in diff.class_statuses.values()
                    ],
                )

            operations = [
                *(("addUser", u.id, u.pushed(), u) for u in diff.adds),
                *(("updateUser", u.user.id, u.changes, u.user) for u in diff.updates if u.sends),
                *(("deleteUser", u.id, u.id, None) for u in diff.deletes),
            ]
            await db.execute(
                "DELETE FROM outbox WHERE source = ? AND kind != 'classStatus'", (source,)
            )
            dead_rows = await db.execute_fetchall(
                "SELECT seq, kind, record_id, hash FROM dead_letters WHERE source = ?", (source,)
            )
            wanted = {
                (kind, record_id, _op_hash(kind, record_id, user))
                for kind, record_id, _, user in operations
            }
            # A dead letter stays only while the very same operation is still wanted; one whose
            # record changed or no longer needs sending is gone (the log keeps its story).
            await db.executemany(
                "DELETE FROM dead_letters WHERE seq = ?",
                [(row[0],) for row in dead_rows if (row[1], row[2], row[3]) not in wanted],
            )
            dead = {(row[1], row[2], row[3]) for row in dead_rows}
            rows = []
            for kind, record_id, payload, user in operations:
                op_hash = _op_hash(kind, record_id, user)
                if (kind, record_id, op_hash) in dead:
                    continue
                record = _dumps(user.to_json()) if user is not None else None
                rows.append((kind, record_id, _dumps(payload), record, op_hash, source, now))
                queued[kind] += 1
            await db.executemany(
                """INSERT INTO outbox (kind, record_id, payload, record, hash, source, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                rows,
            )
            digest_rows = await db.execute_fetchall("SELECT key, hash FROM class_statuses")
            digest = class_status_digest(tuple(row) for row in digest_rows)
            notified = await db.execute_fetchall(
                "SELECT value FROM meta WHERE key = ?", (NOTIFIED_DIGEST_KEY,)
            )
            notified_digest = notified[0][0] if notified else class_status_digest(())
            if diff.class_status_changed or digest != notified_digest:
                cursor = await db.execute(
                    """INSERT OR IGNORE INTO outbox (kind, record_id, payload, source, created_at)
                       VALUES ('classStatus', NULL, 'null', ?, ?)""",
                    (source, now),
                )
                queued["classStatus"] = cursor.rowcount or 0
        return queued
