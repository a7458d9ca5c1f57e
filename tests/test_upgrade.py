"""A database written by the previous release (0.1, schema 2) opens, migrates and syncs with
no re-send. ``tests/data/release-0.1.db`` was written by that release's own ``--run-once``
against these fakes and this generated school."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
from pathlib import Path

from sandbox_helpers import Sandbox, run_syncd
from syncd.sandbox.chengjiyun import FakeChengjiyun
from syncd.sandbox.classcharts import FakeClassCharts
from syncd.sandbox.epaas import FakeEpaas
from syncd.sandbox.school import COURSE_ONLY_TEACHER, generate_school, populate
from syncd.store import SCHEMA_VERSION

FIXTURE = Path(__file__).parent / "data" / "release-0.1.db"
WRITTEN_ON = dt.date(2026, 11, 20)  # the day the fixture was made


async def test_a_database_of_the_previous_release_syncs_with_no_resend(tmp_path: Path) -> None:
    shutil.copy(FIXTURE, tmp_path / "syncd.db")
    with sqlite3.connect(tmp_path / "syncd.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        held = {row[0]: json.loads(row[1]) for row in db.execute("SELECT id, record FROM users")}
    school = generate_school(30, today=WRITTEN_ON)
    classcharts, epaas, chengjiyun = FakeClassCharts(), FakeEpaas(), FakeChengjiyun()
    populate(school, classcharts, epaas)
    for klass in epaas.classes.values():  # that release's sandbox had no such teacher
        klass.teachers.pop(COURSE_ONLY_TEACHER[0], None)
    for user_id, record in held.items():  # Chengjiyun holds what that release sent
        chengjiyun.users[user_id] = {
            k: v for k, v in record.items() if k not in ("source", "owners", "studentList")
        }
    urls = [await fake.start() for fake in (classcharts, epaas, chengjiyun)]
    try:
        box = Sandbox(school, classcharts, epaas, chengjiyun, urls, tmp_path)
        result = await run_syncd(box.config(), "--run-once")
    finally:
        for fake in (classcharts, epaas, chengjiyun):
            await fake.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    user_pushes = [p for p in chengjiyun.pushes if p.endpoint != "update/classStatus"]
    assert user_pushes == [], [(p.endpoint, p.body) for p in user_pushes]
    with sqlite3.connect(tmp_path / "syncd.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT COUNT(*) FROM users").fetchone()[0] == len(held)
