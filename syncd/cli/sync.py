"""The commands that sync or serve: ``--run-once``, ``plan``, ``run`` and ``serve``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from typing import TextIO

from syncd.alerts import Alerter
from syncd.cli.exit import ExitCode
from syncd.cli.progress import Progress, is_terminal
from syncd.clients.chengjiyun import client_from_config
from syncd.config import Config
from syncd.core.alerts import AlertState
from syncd.core.render import Palette, plan_json, render_cycle, render_drain, render_plan
from syncd.engine.alerting import SchoolAlerts
from syncd.engine.cycle import School, backup_if_due, run_cycle
from syncd.engine.daemon import run_daemon
from syncd.engine.drain import worker_from_config
from syncd.engine.lock import SyncLock
from syncd.log import get_logger
from syncd.schools import SchoolConfigs
from syncd.server.app import serve_command as _serve
from syncd.store import Store

__all__ = ["plan_command", "run_command", "run_once_command", "serve_command"]

log = get_logger(__name__)


async def run_once_command(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    """One cycle of every enabled source, then drain the queue (at most ``drain_timeout_s``).

    Exit 0 when everything is synced; 1 when a source (or one of its accounts) failed, an
    operation was dead-lettered or dead letters remain, or operations are left queued. Held
    deletions alone do not fail the run: they are reported and logged as warnings.
    """
    today = dt.date.today()
    if config.schedule.paused_on(today):
        out.write("today is inside a [schedule] pause range: nothing polled, nothing sent\n")
        return ExitCode.OK
    if not config.enabled_sources:
        log.warning("no source is enabled; add a [classcharts] or [epaas] section")
    with SyncLock(config.store.path, "run-once"):
        store = await Store.open(
            config.store.path, backup=config.store.backup, fresh=getattr(args, "fresh", False)
        )
        async with store:
            school = School(config, store)
            alerter = Alerter.from_config(
                config.alerts,
                school=config.chengjiyun.org_id,
                state=AlertState.from_json(await store.journal.alert_state()),
            )
            alerts = SchoolAlerts(school, alerter)
            polling = (
                Progress(out, "polling ClassCharts", unit="accounts") if is_terminal(out) else None
            )
            report = await run_cycle(
                school,
                config.enabled_sources,
                command="run-once",
                full=getattr(args, "full", False),
                progress=polling,
            )
            if polling is not None:
                polling.finish()
            out.write(render_cycle(report))
            progress = Progress(out) if is_terminal(out) else None
            async with client_from_config(config) as client:
                worker = worker_from_config(
                    config, store, client, progress=progress, on_result=alerts.after_request
                )
                drain = await worker.drain(timeout_s=config.chengjiyun.drain_timeout_s)
            if progress is not None:
                progress.finish()
            out.write(render_drain(drain))
            dead_left = await store.outbox.dead_letter_count()
            await alerts.after_cycle(report)  # after the drain: its dead letters count too
            await store.journal.save_alert_state(alerter.state.to_json())
            await alerter.aclose()  # deliver before the process exits
            if not (drain.remaining or drain.dead):
                await backup_if_due(school, report, today=today)
    if dead_left:
        out.write(
            f"{dead_left} dead letter(s) waiting: see `syncd status`; "
            "requeue with `syncd retry-dead`\n"
        )
    failed = report.failed or drain.dead or dead_left or drain.remaining
    return ExitCode.FAILED if failed else ExitCode.OK


async def plan_command(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    """What a cycle would send now. Opens the database read-only and writes nothing."""
    async with await Store.open(
        config.store.path, backup=config.store.backup, readonly=True
    ) as store:
        report = await run_cycle(
            School(config, store), config.enabled_sources, command="plan", write=False
        )
    # A full reconcile re-sends every unchanged user as addUser, besides the changes.
    resend = sum(len(sr.diff.unchanged_ids) for sr in report.sources.values() if sr.diff)
    if getattr(args, "json", False):
        answer = plan_json(report)
        if args.full:
            answer["fullReconcile"] = {"addUser": resend}
        out.write(json.dumps(answer, ensure_ascii=False, indent=2) + "\n")
    else:
        paint = Palette(is_terminal(out) and not os.environ.get("NO_COLOR"))
        out.write(
            render_plan(report, delete_after_cycles=config.safety.delete_after_cycles, paint=paint)
        )
        if args.full:
            out.write(
                f"--full: {resend} unchanged user(s) would be re-sent as addUser, "
                "and the class statuses announced again\n"
            )
    return ExitCode.FAILED if report.failed else ExitCode.OK


async def run_command(schools: SchoolConfigs, args: argparse.Namespace, out: TextIO) -> int:
    """The daemon of every school, until SIGTERM/SIGINT; exit 0 on a clean stop. Each school
    takes its own sync lock (with one configuration file, a held lock is exit 75)."""
    await run_daemon(schools)
    return ExitCode.OK


async def serve_command(schools: SchoolConfigs, args: argparse.Namespace, out: TextIO) -> int:
    """The pull API alone, for the cron/timer layout (it syncs nothing, so takes no lock)."""
    return await _serve(schools, args, out)
