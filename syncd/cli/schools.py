"""Commands about one school, given a directory of schools and no ``--school``: they go through
every school of the directory, one after the other, and report each."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from syncd.cli.admin import school_status
from syncd.cli.exit import ExitCode, write_problems
from syncd.cli.sync import run_once_command
from syncd.core.render import render_school_lines
from syncd.exceptions import StoreError, SyncdError, SyncLockedError
from syncd.schools import SchoolConfigs

__all__ = ["check_config_each_command", "run_once_each_command", "status_each_command"]


async def status_each_command(schools: SchoolConfigs, args: argparse.Namespace, out: TextIO) -> int:
    """One line per school; exit 1 if any school needs attention or any file is invalid."""
    statuses: dict[str, dict[str, Any]] = {}
    unavailable: dict[str, str] = {}
    for org_id, config in schools.schools.items():
        try:
            statuses[org_id] = await school_status(config)
        except StoreError as err:
            unavailable[org_id] = str(err)
    invalid = [(bad.name, f"{bad.path.name}: {bad.error}") for bad in schools.invalid]
    healthy = all(s["healthy"] for s in statuses.values()) and not unavailable and not invalid
    if getattr(args, "json", False):
        answer = {
            "schools": statuses,
            "unavailable": unavailable,
            "invalid": [{"school": name, "problem": problem} for name, problem in invalid],
            "healthy": healthy,
        }
        out.write(json.dumps(answer, ensure_ascii=False, indent=2) + "\n")
    else:
        out.write(render_school_lines(statuses, unavailable, invalid))
    return ExitCode.OK if healthy else ExitCode.FAILED


async def check_config_each_command(
    schools: SchoolConfigs, args: argparse.Namespace, out: TextIO
) -> int:
    """Every file of the directory: one line if it is valid (`--school ORG_ID check-config`
    prints it in full), else every problem. Exit 2 if any file is invalid."""
    for org_id, config in schools.schools.items():
        sources = ", ".join(config.enabled_sources) or "none"
        out.write(f"school {org_id}: valid; database {config.store.path}; sources: {sources}\n")
    for bad in schools.invalid:
        write_problems(out, bad.path, bad.error)
    total = len(schools.schools) + len(schools.invalid)
    if not total:
        out.write(f"{schools.source} holds no *.toml school file\n")
        return ExitCode.USAGE
    out.write(
        f"{len(schools.schools)} of {total} school file(s) valid"
        + (f"; {len(schools.invalid)} not started until fixed\n" if schools.invalid else "\n")
    )
    return ExitCode.USAGE if schools.invalid else ExitCode.OK


async def run_once_each_command(
    schools: SchoolConfigs, args: argparse.Namespace, out: TextIO
) -> int:
    """``--run-once`` for every school in turn; one school's failure does not stop the next.
    Exit: 2 if a file is invalid or a school's database is unusable, else 1 if any school
    failed, else 75 if a school was being synced by another process, else 0."""
    codes: list[int] = [ExitCode.USAGE] if schools.invalid else []
    for bad in schools.invalid:
        out.write(f"== school {bad.name}: {bad.path} is invalid, not synced: {bad.error}\n")
    for org_id, config in schools.schools.items():
        out.write(f"== school {org_id}\n")
        try:
            codes.append(await run_once_command(config, args, out))
        except SyncLockedError as err:
            out.write(f"syncd: {err}\n")
            codes.append(ExitCode.LOCKED)
        except StoreError as err:
            out.write(f"syncd: {err}\n")
            codes.append(ExitCode.USAGE)
        except SyncdError as err:
            out.write(f"syncd: run-once of {org_id} failed: {err}\n")
            codes.append(ExitCode.FAILED)
    for code in (ExitCode.USAGE, ExitCode.FAILED, ExitCode.LOCKED):
        if code in codes:
            return code
    return ExitCode.OK
