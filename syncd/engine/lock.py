"""One syncing process per database: an exclusive kernel lock on a file beside it.

``fcntl.flock`` is released by the kernel when the holder dies, however it dies, so a SIGKILL
never leaves a stale lock behind. The file holds the holder's pid and start time, so a second
process can say who is syncing; ``status`` reads it to show the daemon's pid and uptime.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from syncd.exceptions import StoreError, SyncLockedError

__all__ = ["SyncLock", "lock_path_for", "read_holder"]


def lock_path_for(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


def read_holder(database: Path) -> dict[str, Any] | None:
    """The live holder of the lock (``pid``, ``since``, ``command``), or None when free."""
    path = lock_path_for(database)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: the holder wrote its details before taking it
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None  # nobody holds it; the content is a previous holder's
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    finally:
        os.close(fd)
    try:
        holder = json.loads(text)
    except ValueError:
        return {"pid": None, "since": None, "command": None}
    return holder if isinstance(holder, dict) else None


class SyncLock:
    """``with SyncLock(db_path, "run"):`` — raises SyncLockedError if another process syncs."""

    def __init__(self, database: Path, command: str) -> None:
        self.path = lock_path_for(database)
        self._command = command
        self._fd: int | None = None

    def __enter__(self) -> SyncLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise StoreError(
                f"cannot create the sync lock {self.path} ({err}): the directory "
                f"{self.path.parent} must be writable by the user syncd runs as"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            os.close(fd)
            raise _locked(self.path, text) from err
        holder = {"pid": os.getpid(), "since": time.time(), "command": self._command}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        except OSError as err:
            os.close(fd)
            raise StoreError(
                f"cannot write the sync lock {self.path} ({err}): free space on that disk"
            ) from err
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _locked(path: Path, text: str) -> SyncLockedError:
    try:
        holder = json.loads(text)
        pid, since = int(holder["pid"]), float(holder["since"])
    except (ValueError, KeyError, TypeError):
        return SyncLockedError(f"another syncd process is syncing this database ({path})", None)
    started = dt.datetime.fromtimestamp(since).astimezone().isoformat(timespec="seconds")
    return SyncLockedError(
        f"another syncd process (pid {pid}, {holder.get('command', 'sync')} since {started}) "
        f"is syncing this database; nothing was done",
        pid,
    )
