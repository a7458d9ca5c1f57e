"""The SQLite store: file mode, migrations, read-only opening, one-transaction writes, health."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from syncd.config import SafetyConfig
from syncd.core.diff import SourceDiff, diff_source
from syncd.core.model import User
from syncd.store import SCHEMA_VERSION, Store, StoreError


async def test_created_0600_with_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "syncd.db"
    async with await Store.open(path):
        pass
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "syncd.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this syncd"):
        await Store.open(path)


async def test_readonly_open_of_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    async with await Store.open(path, readonly=True) as store:
        assert await store.served_users() == []
        with pytest.raises(StoreError, match="read-only"):
            async with store.write():
                pass
    assert not path.exists()


async def test_apply_diff_is_one_transaction(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "syncd.db") as store:
        users = {f"cc-{i}": User(f"cc-{i}", f"P{i}", ("学生",), "classcharts") for i in range(3)}
        good = diff_source(
            source="classcharts",
            desired=users,
            acknowledged={},
            complete=True,
            failed_owners=frozenset(),
            approved_ids=frozenset(),
            safety=SafetyConfig(),
            desired_class_statuses=None,
            stored_class_statuses={},
        )
        broken = SourceDiff(source="classcharts", adds=(*good.adds, "not a user"))  # type: ignore[arg-type]
        with pytest.raises(AttributeError):
            await store.apply_diff(broken, users)
        assert await store.queue_depth() == {}
        assert await store.fetchall("SELECT * FROM desired_users") == []
        await store.apply_diff(good, users)
        assert await store.queue_depth() == {"addUser": 3}


async def test_record_poll_marks_failing_after_three_and_recovers(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "syncd.db") as store:
        for n in range(3):
            await store.record_poll("epaas", ok=False, error=f"boom {n}", now=100.0 + n)
            state = (await store.source_states())["epaas"]
            assert state["state"] == ("failing" if n == 2 else "ok")
        assert state["consecutive_failures"] == 3 and state["last_error"] == "boom 2"
        await store.record_poll("epaas", ok=True, error=None, now=200.0)
        state = (await store.source_states())["epaas"]
        assert (state["state"], state["consecutive_failures"], state["last_success_at"]) == (
            "ok",
            0,
            200.0,
        )
