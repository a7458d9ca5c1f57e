"""The one connection to the SQLite file, its migrations, transactions and error messages.

One writer connection; every write goes through :meth:`Database.write`, which serialises writers
in the process and opens ``BEGIN IMMEDIATE`` so SQLite never fails a read-then-write transaction
with SQLITE_BUSY. ``synchronous=FULL`` because an acknowledged push must survive power loss. The
file is created 0600 and never holds a secret. Every SQLite failure leaves this module as a
:class:`StoreError` that names the file and says what to do.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

import aiosqlite

from syncd.exceptions import StoreError
from syncd.store.schema import MIGRATIONS, SCHEMA_VERSION

__all__ = ["Database", "GroupCommit", "Row", "explain"]

Row = aiosqlite.Row
CACHE_KIB = 512
BUSY_TIMEOUT_MS = 10_000
T = TypeVar("T")


def explain(path: Path, err: BaseException, *, backup: Path | None = None) -> StoreError:
    """A StoreError naming ``path``, what went wrong and what the admin can do about it."""
    text = str(err)
    lowered = text.lower()
    restore = (
        f"restore the last backup with `syncd restore-backup` (from {backup})"
        if backup is not None
        else "restore it from a backup"
    )
    if "readonly" in lowered or "read-only" in lowered or isinstance(err, PermissionError):
        reason = (
            f"database {path} cannot be written ({text}): the directory {path.parent} and the "
            "file must be writable by the user syncd runs as"
        )
    elif "unable to open" in lowered or isinstance(err, OSError):
        reason = (
            f"cannot open database {path} ({text}): check that {path.parent} exists and is "
            "writable by the user syncd runs as"
        )
    elif "full" in lowered:
        reason = f"the disk holding {path} is full: free some space and run again; nothing was sent"
    elif "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        reason = f"database {path} is corrupt ({text}): {restore}"
    else:
        reason = f"database {path}: {text}"
    return StoreError(reason)


class Database:
    """The connection, owned here; repositories borrow it for their statements."""

    def __init__(
        self, conn: aiosqlite.Connection, path: Path, *, readonly: bool, backup: Path | None
    ) -> None:
        self._conn = conn
        self.path = path
        self.readonly = readonly
        self.backup = backup
        self._write_lock = asyncio.Lock()
        self._backup_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, path: Path, *, readonly: bool = False, backup: Path | None = None
    ) -> Database:
        """Open (creating 0600 and migrating unless ``readonly``) the database at ``path``.

        A read-only open of a file that does not exist yet gives an empty in-memory database, so
        ``syncd plan`` on a fresh install shows everything as to be added and writes nothing.
        """
        in_memory = readonly and not path.exists()
        try:
            if in_memory:
                conn = await aiosqlite.connect(":memory:")
            elif readonly:
                conn = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
                conn = await aiosqlite.connect(path)
        except (sqlite3.Error, OSError) as err:
            raise explain(path, err, backup=backup) from err
        conn.row_factory = aiosqlite.Row
        database = cls(conn, path, readonly=readonly, backup=backup)
        try:
            await database._prepare(in_memory=in_memory)
        except sqlite3.Error as err:
            await conn.close()
            raise explain(path, err, backup=backup) from err
        except BaseException:
            await conn.close()
            raise
        return database

    async def _prepare(self, *, in_memory: bool) -> None:
        await self._conn.execute("PRAGMA foreign_keys = ON")
        await self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # A small page cache: one process may hold a connection per school, and the OS caches
        # the file anyway (SQLite's default of 2 MiB each was most of an idle school's cost).
        await self._conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        version = await self._user_version()  # also the first read: a corrupt file fails here
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {self.path} is schema {version}, newer than this syncd "
                f"({SCHEMA_VERSION}): upgrade syncd"
            )
        if self.readonly and not in_memory:
            return
        if not self.readonly:
            await self._conn.execute("PRAGMA journal_mode = WAL")
            await self._conn.execute("PRAGMA synchronous = FULL")
        for number in range(version, SCHEMA_VERSION):
            # executescript commits first; the whole step plus its version bump is one transaction.
            await self._conn.executescript(
                f"BEGIN IMMEDIATE;\n{MIGRATIONS[number]}\nPRAGMA user_version = {number + 1};\nCOMMIT;"
            )

    async def _user_version(self) -> int:
        async with self._conn.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def close(self) -> None:
        await self._conn.close()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), committed on success, rolled back on error."""
        if self.readonly:
            raise StoreError(f"database {self.path} was opened read-only")
        async with self._write_lock:
            try:
                await self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise explain(self.path, err, backup=self.backup) from err
            except BaseException:
                # Cancelled while the BEGIN was queued: it still runs, so end what it opens, or
                # the next writer finds a transaction already open.
                await self._rollback()
                raise
            try:
                yield self._conn
            except sqlite3.Error as err:
                await self._rollback()
                raise explain(self.path, err, backup=self.backup) from err
            except BaseException:
                await self._rollback()
                raise
            try:
                await self._conn.commit()
            except sqlite3.Error as err:
                await self._rollback()
                raise explain(self.path, err, backup=self.backup) from err

    async def _rollback(self) -> None:
        try:
            await self._conn.rollback()
        except sqlite3.Error:
            pass  # the connection is already unusable; the original error says why

    async def fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        try:
            async with self._conn.execute(sql, params) as cursor:
                return list(await cursor.fetchall())
        except sqlite3.Error as err:
            raise explain(self.path, err, backup=self.backup) from err

    async def fetchone(self, sql: str, params: tuple[Any, ...] = ()) -> Row | None:
        try:
            async with self._conn.execute(sql, params) as cursor:
                return await cursor.fetchone()
        except sqlite3.Error as err:
            raise explain(self.path, err, backup=self.backup) from err

    async def scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    async def backup_to(self, target: Path, *, unless_from: float | None = None) -> bool:
        """An online copy (SQLite's backup API) written beside ``target`` and renamed into place,
        so a crash never leaves a half-written backup. One at a time: two backups to one file
        would wait on each other's lock for ever. ``unless_from``: skip (and return False) when
        ``target`` was written at or after this time."""
        async with self._backup_lock:
            if unless_from is not None and target.exists():
                if target.stat().st_mtime >= unless_from:
                    return False
            await self._backup(target)
            return True

    async def _backup(self, target: Path) -> None:
        partial = target.with_name(target.name + ".partial")
        try:
            partial.unlink(missing_ok=True)
            os.close(os.open(partial, os.O_CREAT | os.O_WRONLY, 0o600))
            # From a connection of its own: backing up through the writer connection while it
            # holds a transaction makes SQLite answer "locked", and Python's backup() retries
            # that for ever on the very thread the transaction needs to finish.
            source_uri = f"file:{self.path}?mode=ro"
            async with (
                aiosqlite.connect(source_uri, uri=True) as source,
                aiosqlite.connect(partial) as copy,
            ):
                await source.backup(copy)
            os.replace(partial, target)
        except (sqlite3.Error, OSError) as err:
            partial.unlink(missing_ok=True)
            raise explain(target, err) from err


class GroupCommit(Generic[T]):
    """Units of work that arrive while one transaction is under way share the next one, so a
    burst of them costs one fsync'd commit instead of one each.

    Nothing waits on a timer: the first caller commits at once, and whoever arrives meanwhile
    is committed in the next transaction, so a caller waits for at most the transaction under
    way and its own. A caller returns only once its own item is committed. If the group's
    transaction fails, the caller that led it raises and the others are tried again in the next
    group; a caller cancelled before its group began is left out.
    """

    def __init__(
        self,
        database: Database,
        apply: Callable[[aiosqlite.Connection, list[T]], Awaitable[None]],
    ) -> None:
        self._database = database
        self._apply = apply
        # Waiting items; a future is set True once its item is committed, or False to say
        # "lead the next group", which one caller (the leader) does at a time.
        self._queue: list[tuple[T, asyncio.Future[bool]]] = []
        self._leading = False

    async def submit(self, item: T) -> None:
        """Commit ``item`` with whatever else is waiting; return once it is committed."""
        turn: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((item, turn))
        if self._leading:
            try:
                if await turn:
                    return
            except asyncio.CancelledError:
                self._leave(turn)
                if turn.done() and not turn.cancelled() and not turn.result():
                    self._hand_over()  # chosen to lead just as it was cancelled: pass it on
                raise
        self._leading = True
        # Shielded: the others wait on this group, so it runs to its end even if this caller
        # is cancelled meanwhile (and its own item is then committed all the same).
        await asyncio.shield(self._commit_next_group(turn))

    async def _commit_next_group(self, turn: asyncio.Future[bool]) -> None:
        """Everything waiting, in one transaction; on failure the others wait for the next."""
        group: list[tuple[T, asyncio.Future[bool]]] = []
        try:
            async with self._database.write() as db:
                group, self._queue = self._queue, []  # taken once the write lock is held
                await self._apply(db, [queued for queued, _ in group])
        except BaseException:
            self._queue[:0] = group
            self._leave(turn)
            raise
        else:
            for _, future in group:
                if not future.done():
                    future.set_result(True)
        finally:
            self._hand_over()

    def _leave(self, turn: asyncio.Future[bool]) -> None:
        self._queue = [waiting for waiting in self._queue if waiting[1] is not turn]

    def _hand_over(self) -> None:
        """The next waiting caller leads the next group; with nobody waiting, nobody leads."""
        for _, future in self._queue:
            if not future.done():
                future.set_result(False)
                return
        self._leading = False
