"""Admin commands: ``status``, ``approve-deletes``, ``retry-dead``."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any, TextIO

from syncd.config import Config
from syncd.store import Store

__all__ = ["approve_deletes_command", "retry_dead_command", "status_command"]


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    return dt.datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")


async def status_command(config: Config, args: Any, out: TextIO) -> int:
    """Last cycles, source health, queue depth, dead letters and held deletions (read-only)."""
    async with await Store.open(config.store.path, readonly=True) as store:
        status = {
            "database": str(config.store.path),
            "cycles": await store.recent_cycles(10),
            "sources": await store.source_states(),
            "queue": await store.queue_depth(),
            "dead_letters": await store.dead_letters(),
            "held_deletions": await store.held_deletions(),
            "users": {
                row["source"]: {"desired": row["desired"], "acknowledged": row["acknowledged"]}
                for row in await store.fetchall(
                    """SELECT source, SUM(kind = 'desired') AS desired, SUM(kind = 'acked') AS acknowledged FROM (
                           SELECT source, 'desired' AS kind FROM desired_users
                           UNION ALL SELECT source, 'acked' FROM users) GROUP BY source ORDER BY source"""
                )
            },
        }
    if getattr(args, "json", False):
        out.write(json.dumps(status, ensure_ascii=False, indent=2) + "\n")
        return 0
    out.write(
        f"database: {status['database']}\n\nusers (last poll / acknowledged by Chengjiyun):\n"
    )
    for source, counts in status["users"].items():
        out.write(f"  {source:<12} {counts['desired']} / {counts['acknowledged']}\n")
    out.write("\nsources:\n")
    if not status["sources"]:
        out.write("  (no poll yet)\n")
    for name, state in status["sources"].items():
        line = (
            f"  {name:<12} {state['state']:<8} last success {_when(state['last_success_at'])}, "
            f"last attempt {_when(state['last_attempt_at'])}"
        )
        if state["consecutive_failures"]:
            line += f", {state['consecutive_failures']} failure(s) in a row: {state['last_error']}"
        out.write(line + "\n")
    out.write("\nlast cycles:\n")
    if not status["cycles"]:
        out.write("  (none)\n")
    for cycle in status["cycles"]:
        per_source = "; ".join(
            f"{source} {info['outcome']} (+{info['adds']} ~{info['updates']} -{info['deletes']}"
            + (f" held {info['held']}" if info["held"] else "")
            + ")"
            for source, info in cycle["sources"].items()
        )
        out.write(
            f"  #{cycle['id']:<5} {_when(cycle['started_at'])} {cycle['command']:<9} {cycle['outcome'] or 'running'}: {per_source}\n"
        )
    queue = status["queue"]
    out.write(
        f"\nqueue: {sum(queue.values())} operation(s) waiting"
        + (f" {queue}" if queue else "")
        + "\n"
    )
    dead = status["dead_letters"]
    out.write(
        f"\ndead letters: {len(dead)}"
        + (" (requeue with `syncd retry-dead`)" if dead else "")
        + "\n"
    )
    for letter in dead:
        code = (
            f"code {letter['code']}: "
            if letter["code"] is not None and str(letter["code"]) not in letter["reason"]
            else ""
        )
        out.write(
            f"  {letter['kind']:<11} {letter['record_id'] or '-':<20} {code}{letter['reason']} ({_when(letter['failed_at'])})\n"
        )
    held = status["held_deletions"]
    out.write(
        f"\nheld deletions: {len(held)}"
        + (" (release with `syncd approve-deletes [ID ...]`)" if held else "")
        + "\n"
    )
    for item in held:
        flag = " [approved: deleted next cycle]" if item["approved"] else ""
        out.write(f"  {item['id']:<20} {item['name']} ({item['source']}){flag}: {item['reason']}\n")
    return 0


async def approve_deletes_command(config: Config, args: Any, out: TextIO) -> int:
    """Mark held deletions approved; the next cycle of their source deletes them."""
    wanted = list(getattr(args, "ids", []) or [])
    async with await Store.open(config.store.path) as store:
        held = {item["id"]: item for item in await store.held_deletions()}
        unknown = [user_id for user_id in wanted if user_id not in held]
        if unknown:
            out.write(f"not held, nothing approved: {', '.join(unknown)} (see `syncd status`)\n")
            return 1
        ids = wanted or list(held)
        async with store.write() as db:
            await db.executemany(
                "UPDATE held_deletions SET approved = 1 WHERE id = ?", [(i,) for i in ids]
            )
    if not ids:
        out.write("no deletions are held\n")
    for user_id in ids:
        out.write(
            f"approved: {user_id} {held[user_id]['name']} — deleted on the next cycle of {held[user_id]['source']}\n"
        )
    return 0


async def retry_dead_command(config: Config, args: Any, out: TextIO) -> int:
    """Put every dead letter back in the outbox with a fresh attempt count."""
    now = time.time()
    async with await Store.open(config.store.path) as store, store.write() as db:
        rows = await db.execute_fetchall(
            "SELECT seq, kind, record_id, payload, record, hash, source FROM dead_letters ORDER BY seq"
        )
        for row in rows:
            if row[2] is not None:
                await db.execute("DELETE FROM outbox WHERE record_id = ?", (row[2],))
            else:
                await db.execute("DELETE FROM outbox WHERE kind = ?", (row[1],))
            await db.execute(
                """INSERT INTO outbox (kind, record_id, payload, record, hash, source, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                (row[1], row[2], row[3], row[4], row[5], row[6], now),
            )
        await db.execute("DELETE FROM dead_letters")
    out.write(f"requeued {len(rows)} dead-lettered operation(s); they are sent on the next drain\n")
    return 0
