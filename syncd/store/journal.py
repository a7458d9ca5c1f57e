"""What syncd remembers about its own work: the tables ``cycles`` (one row per cycle, with
per-source totals), ``source_state`` (each source's health) and ``history`` (every operation
sent to Chengjiyun and its answer). Error text is redacted before it is stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

import aiosqlite

from syncd.core.health import HealthRecord
from syncd.core.kinds import SourceState
from syncd.core.plan import dumps
from syncd.log import redact
from syncd.store.database import Database

__all__ = ["Journal"]


class Journal:
    def __init__(self, database: Database) -> None:
        self._db = database

    # --- cycles ------------------------------------------------------------------------------

    async def begin_cycle(self, command: str) -> int:
        async with self._db.write() as db:
            cursor = await db.execute(
                "INSERT INTO cycles (command, started_at) VALUES (?, ?)", (command, time.time())
            )
            return int(cursor.lastrowid or 0)

    async def finish_cycle(
        self, cycle_id: int, *, outcome: str, sources: Mapping[str, Any], counts: Mapping[str, Any]
    ) -> None:
        async with self._db.write() as db:
            await db.execute(
                "UPDATE cycles SET finished_at = ?, outcome = ?, sources = ?, counts = ? "
                "WHERE id = ?",
                (time.time(), outcome, redact(dumps(sources)), dumps(counts), cycle_id),
            )

    async def recent_cycles(self, limit: int = 10) -> list[dict[str, Any]]:
        rows = await self._db.fetchall("SELECT * FROM cycles ORDER BY id DESC LIMIT ?", (limit,))
        cycles = []
        for row in rows:
            cycle = dict(row)
            cycle["sources"] = json.loads(cycle["sources"])
            cycle["counts"] = json.loads(cycle["counts"])
            cycles.append(cycle)
        return cycles

    async def health(self, source: str) -> HealthRecord:
        row = await self._db.fetchone("SELECT * FROM source_state WHERE source = ?", (source,))
        if row is None:
            return HealthRecord(source)
        return HealthRecord(
            source=source,
            state=SourceState(row["state"]) if row["state"] in set(SourceState) else SourceState.OK,
            consecutive_failures=row["consecutive_failures"],
            last_attempt_at=row["last_attempt_at"],
            last_success_at=row["last_success_at"],
            last_error=row["last_error"],
        )

    async def save_health(self, record: HealthRecord) -> None:
        async with self._db.write() as db:
            await db.execute(
                """INSERT INTO source_state (source, state, consecutive_failures, last_attempt_at,
                       last_success_at, last_error) VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT(source) DO UPDATE SET state = excluded.state,
                       consecutive_failures = excluded.consecutive_failures,
                       last_attempt_at = excluded.last_attempt_at,
                       last_success_at = excluded.last_success_at,
                       last_error = excluded.last_error""",
                (
                    record.source,
                    record.state,
                    record.consecutive_failures,
                    record.last_attempt_at,
                    record.last_success_at,
                    redact(record.last_error) if record.last_error else None,
                ),
            )

    async def source_states(self) -> dict[str, dict[str, Any]]:
        rows = await self._db.fetchall("SELECT * FROM source_state ORDER BY source")
        return {row["source"]: dict(row) for row in rows}

    # --- what the alerts already announced (for --run-once, which forgets between runs) ----

    async def alert_state(self) -> Any:
        value = await self._db.scalar("SELECT value FROM meta WHERE key = 'alert_state'")
        return json.loads(value) if value else []

    async def save_alert_state(self, state: Any) -> None:
        async with self._db.write() as db:
            await db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('alert_state', ?)",
                (dumps(state),),
            )

    # --- history -----------------------------------------------------------------------------

    async def record_sent(
        self,
        db: aiosqlite.Connection,
        entries: Iterable[tuple[str, str | None, Any]],
        *,
        outcome: str,
        code: int | None,
        answer: str,
    ) -> None:
        """(kind, record id, element sent) of one request, with Chengjiyun's answer."""
        now, answer = time.time(), redact(answer)
        await db.executemany(
            "INSERT INTO history (at, kind, record_id, fields, outcome, code, answer) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (now, kind, record_id, dumps(fields), outcome, code, answer)
                for kind, record_id, fields in entries
            ],
        )

    async def history(
        self, record_id: str | None = None, *, since: float = 0.0, limit: int = 1000
    ) -> list[dict[str, Any]]:
        if record_id is None:
            rows = await self._db.fetchall(
                "SELECT * FROM history WHERE at >= ? ORDER BY at, seq LIMIT ?", (since, limit)
            )
        else:
            rows = await self._db.fetchall(
                "SELECT * FROM history WHERE record_id = ? AND at >= ? ORDER BY at, seq LIMIT ?",
                (record_id, since, limit),
            )
        return [{**dict(row), "fields": json.loads(row["fields"])} for row in rows]

    async def forget_before(self, cutoff: float) -> int:
        """Drop history entries and cycle records older than ``cutoff`` (``[store]
        history_days``), so a daemon's database does not grow with its uptime; the latest cycle
        is always kept. Returns the number of rows dropped."""
        async with self._db.write() as db:
            history = await db.execute("DELETE FROM history WHERE at < ?", (cutoff,))
            cycles = await db.execute(
                "DELETE FROM cycles WHERE started_at < ? AND id < (SELECT max(id) FROM cycles)",
                (cutoff,),
            )
            return (history.rowcount or 0) + (cycles.rowcount or 0)
