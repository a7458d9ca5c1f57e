"""The SQLite store: file mode, migrations, read-only opening, one-transaction writes, health."""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from store_helpers import user_diff
from syncd.core.diff import SourceDiff
from syncd.core.health import HealthRecord, observe
from syncd.core.kinds import SourceOutcome
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
            await store.snapshot.approve(["cc-1"])
    assert not path.exists()


def _diff(users: dict[str, User]) -> SourceDiff:
    return user_diff(users)


async def test_a_cycle_is_committed_in_one_transaction(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "syncd.db") as store:
        users = {f"cc-{i}": User(f"cc-{i}", f"P{i}", ("学生",), "classcharts") for i in range(3)}
        good = _diff(users)
        broken = SourceDiff(source="classcharts", adds=(*good.adds, "not a user"))  # type: ignore[arg-type]
        with pytest.raises(AttributeError):
            await store.commit_cycle(broken, users, may_delete_orphans=True)
        assert await store.queue_depth() == {}
        assert await store.snapshot.user_counts() == {}
        await store.commit_cycle(good, users, may_delete_orphans=True)
        assert await store.queue_depth() == {"addUser": 3}
        assert await store.snapshot.user_counts() == {
            "classcharts": {"desired": 3, "acknowledged": 0}
        }


async def test_health_marks_failing_after_three_and_recovers(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "syncd.db") as store:
        record = HealthRecord("epaas")
        for n in range(3):
            record = observe(record, SourceOutcome.FAILED, f"boom {n}", 100.0 + n)
            await store.journal.save_health(record)
            state = (await store.source_states())["epaas"]
            assert state["state"] == ("failing" if n == 2 else "erroring")
        assert state["consecutive_failures"] == 3 and state["last_error"] == "boom 2"
        await store.journal.save_health(observe(record, SourceOutcome.OK, None, 200.0))
        state = (await store.source_states())["epaas"]
        assert state["state"] == "ok" and state["consecutive_failures"] == 0
        assert state["last_success_at"] == 200.0


async def test_a_corrupt_file_is_named_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "syncd.db"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match=r"syncd\.db is corrupt.*restore-backup"):
        await Store.open(path, backup=tmp_path / "syncd.db.bak")


async def test_a_read_only_directory_is_named(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions; the CLI test uses a read-only mount")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="writable"):
            await Store.open(locked / "syncd.db")
    finally:
        locked.chmod(0o700)


async def test_a_missing_database_with_a_backup_is_refused_unless_fresh(tmp_path: Path) -> None:
    path, backup = tmp_path / "syncd.db", tmp_path / "syncd.db.bak"
    async with await Store.open(path) as store:
        await store.record_acknowledged([User("cc-1", "P", ("学生",), "classcharts")])
        await store.backup_to(backup)
    path.unlink()
    with pytest.raises(StoreError, match="restore-backup.*--fresh"):
        await Store.open(path, backup=backup, fresh=False)
    path.write_bytes(b"")  # zero-length counts as missing
    with pytest.raises(StoreError, match="missing or empty"):
        await Store.open(path, backup=backup, fresh=False)
    async with await Store.open(backup, readonly=True) as copy:
        assert [u["id"] for u in await copy.served_users()] == ["cc-1"]
    async with await Store.open(path, backup=backup, fresh=True) as store:
        assert await store.served_users() == []


async def test_history_and_cycles_older_than_the_cutoff_are_forgotten(tmp_path: Path) -> None:
    """The database does not grow with uptime: what `[store] history_days` no longer covers is
    dropped, except the latest cycle (status shows it however old it is)."""
    path = tmp_path / "syncd.db"
    async with await Store.open(path) as store:
        old_cycle = await store.journal.begin_cycle("run")
        for cycle_id in (old_cycle, await store.journal.begin_cycle("run")):
            await store.journal.finish_cycle(cycle_id, outcome="ok", sources={}, counts={})
        async with store._database.write() as db:
            await store.journal.record_sent(
                db,
                [("addUser", "cc-1", {}), ("addUser", "cc-2", {})],
                outcome="ok",
                code=0,
                answer="",
            )
        with sqlite3.connect(path) as db:  # the first cycle and cc-1's entry are 500 days old
            db.execute(
                "UPDATE cycles SET started_at = started_at - 500 * 86400 WHERE id = ?", (old_cycle,)
            )
            db.execute("UPDATE history SET at = at - 500 * 86400 WHERE record_id = 'cc-1'")

        cutoff = time.time() - 400 * 86_400
        assert await store.journal.forget_before(cutoff) == 2
        assert [c["id"] for c in await store.journal.recent_cycles()] == [old_cycle + 1]
        assert [e["record_id"] for e in await store.journal.history()] == ["cc-2"]

        assert await store.journal.forget_before(time.time() + 1) == 1, "only history left to drop"
        assert len(await store.journal.recent_cycles()) == 1, "the latest cycle is kept"
