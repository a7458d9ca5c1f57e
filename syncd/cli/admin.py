"""The admin's commands: ``status``, ``approve-deletes``, ``retry-dead``, ``restore-backup``,
``history``, ``sso-url`` and ``check-config``. They work while the daemon runs (short
transactions); ``restore-backup`` alone needs the daemon stopped."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from typing import Any, TextIO

from syncd.cli.exit import ExitCode
from syncd.clients.chengjiyun import client_from_config
from syncd.config import Config, masked
from syncd.core.kinds import SourceState
from syncd.core.render import render_status, when
from syncd.cron import trigger_from_crontab
from syncd.engine.lock import SyncLock, read_holder
from syncd.store import Store

__all__ = [
    "approve_deletes_command",
    "check_config_command",
    "history_command",
    "restore_backup_command",
    "retry_dead_command",
    "school_status",
    "sso_url_command",
    "status_command",
]


async def school_status(config: Config) -> dict[str, Any]:
    async with await Store.open(
        config.store.path, backup=config.store.backup, readonly=True
    ) as store:
        status: dict[str, Any] = {
            "database": str(config.store.path),
            "daemon": read_holder(config.store.path),
            "cycles": await store.journal.recent_cycles(10),
            "sources": await store.journal.source_states(),
            "queue": await store.outbox.depth(),
            "dead_letters": await store.outbox.dead_letters(),
            "held_deletions": await store.snapshot.held_deletions(),
            "held_class_statuses": await store.snapshot.held_class_statuses(),
            "users": await store.snapshot.user_counts(),
        }
    status["next_poll"] = _next_polls(config) if status["daemon"] else {}
    failing = any(s["state"] != SourceState.OK for s in status["sources"].values())
    status["healthy"] = not (
        failing
        or status["dead_letters"]
        or status["held_deletions"]
        or status["held_class_statuses"]
    )
    return status


def _next_polls(config: Config) -> dict[str, float]:
    """When the running daemon polls each source next, by its crontab (back-off aside)."""
    now = dt.datetime.now().astimezone()
    polls = {}
    for source in config.enabled_sources:
        trigger = trigger_from_crontab(getattr(config.schedule, source), timezone=now.tzinfo)
        fire = trigger.get_next_fire_time(None, now)
        if fire is not None:
            polls[source] = fire.timestamp()
    return polls


async def status_command(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    """Exit 0 when healthy, 1 when something needs the admin (failing source, dead letters,
    held deletions)."""
    status = await school_status(config)
    if getattr(args, "json", False):
        out.write(json.dumps(status, ensure_ascii=False, indent=2) + "\n")
    else:
        out.write(render_status(status))
    return ExitCode.OK if status["healthy"] else ExitCode.FAILED


async def approve_deletes_command(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    """Mark held deletions (and a held class-status change) approved; the next cycle of their
    source sends them."""
    wanted = list(getattr(args, "ids", []) or [])
    async with await Store.open(config.store.path, backup=config.store.backup) as store:
        held = {item["id"]: item for item in await store.snapshot.held_deletions()}
        statuses = await store.snapshot.held_class_statuses()
        unknown = [user_id for user_id in wanted if user_id not in held]
        if unknown:
            out.write(f"not held, nothing approved: {', '.join(unknown)} (see `syncd status`)\n")
            return ExitCode.FAILED
        if not held and not statuses:
            out.write("no deletions are held\n")
            return ExitCode.OK
        if not wanted:
            _list_held(out, held.values(), statuses)
            if not getattr(args, "yes", False) and not _confirmed(out):
                return ExitCode.FAILED
            if statuses:
                await store.snapshot.approve_class_statuses()
                out.write("approved: the class-status change — sent on the next epaas cycle\n")
        ids = wanted or list(held)
        await store.snapshot.approve(ids)
    for user_id in ids:
        out.write(
            f"approved: {user_id} {held[user_id]['name']} — deleted on the next cycle of "
            f"{held[user_id]['source']}\n"
        )
    return ExitCode.OK


def _list_held(out: TextIO, held: Any, statuses: dict[str, Any] | None) -> None:
    held = list(held)
    out.write(f"{len(held)} held deletion(s) would be released:\n")
    for item in held:
        out.write(f"  {item['id']:<20} {item['name']} ({item['source']}): {item['reason']}\n")
    if statuses:
        out.write(
            f"and the class-status change removing {len(statuses['keys'])} class status(es): "
            f"{statuses['reason']}\n"
        )


def _confirmed(out: TextIO) -> bool:
    """Ask on the terminal; without one, refuse (scripts pass --yes or name the ids)."""
    if not sys.stdin.isatty():
        out.write("nothing approved: no terminal to ask on; name the ids, or pass --yes\n")
        return False
    out.write("release all of them? [y/N] ")
    out.flush()
    if sys.stdin.readline().strip().lower() in ("y", "yes"):
        return True
    out.write("nothing approved\n")
    return False


async def retry_dead_command(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    """Put every dead letter back in the outbox with a fresh attempt count."""
    async with await Store.open(config.store.path, backup=config.store.backup) as store:
        count = await store.outbox.requeue_dead()
    out.write(f"requeued {count} dead-lettered operation(s); they are sent on the next drain\n")
    return ExitCode.OK


async def restore_backup_command(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    """Copy ``[store] backup_path`` over the database; the old file (and its WAL) is kept aside."""
    path, backup = config.store.path, config.store.backup
    if not backup.exists():
        out.write(f"no backup at {backup}: nothing restored\n")
        return ExitCode.USAGE
    with SyncLock(path, "restore-backup"):
        async with await Store.open(backup, readonly=True):
            pass  # refuses a corrupt or newer backup before anything is moved
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            current = path.with_name(path.name + suffix)
            if current.exists():
                current.rename(current.with_name(f"{current.name}.broken-{stamp}"))
        shutil.copyfile(backup, path)
        os.chmod(path, 0o600)
    taken = when(backup.stat().st_mtime)
    out.write(
        f"restored {path} from {backup} (taken {taken}); the next run sends what changed since\n"
    )
    return ExitCode.OK


async def history_command(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    """What was sent about one user (or everybody) and what Chengjiyun answered."""
    since = 0.0
    if args.since:
        try:
            since = dt.datetime.strptime(args.since, "%Y-%m-%d").astimezone().timestamp()
        except ValueError:
            out.write(f"--since {args.since!r} is not a date like 2026-11-01\n")
            return ExitCode.USAGE
    async with await Store.open(
        config.store.path, backup=config.store.backup, readonly=True
    ) as store:
        entries = await store.journal.history(args.id, since=since)
    if args.json:
        out.write(json.dumps(entries, ensure_ascii=False, indent=2) + "\n")
        return ExitCode.OK
    if not entries:
        out.write(f"nothing was sent about {args.id}\n" if args.id else "nothing was sent\n")
        return ExitCode.FAILED if args.id else ExitCode.OK
    for entry in entries:
        fields = json.dumps(entry["fields"], ensure_ascii=False)
        out.write(
            f"{when(entry['at'])}  {entry['kind']:<11} {entry['record_id'] or '-':<16} "
            f"{entry['outcome']:<8} {entry['answer']}  {fields}\n"
        )
    return ExitCode.OK


async def sso_url_command(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    async with client_from_config(config) as client:
        out.write(client.sso_url(args.account, mobile=args.mobile, stage=args.stage) + "\n")
    return ExitCode.OK


async def check_config_command(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    out.write(json.dumps(masked(config), ensure_ascii=False, indent=2) + "\n")
    sources = ", ".join(config.enabled_sources) or "none"
    out.write(f"configuration is valid; enabled sources: {sources}\n")
    return ExitCode.OK
