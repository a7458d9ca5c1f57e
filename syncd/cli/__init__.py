"""The ``syncd`` command line. Every command is ``async def f(config, args, out) -> int`` in a
module of this package (``demo`` takes ``(args, out)``: it needs no configuration file), looked
up on use so ``syncd check-config`` does not load aiohttp and friends."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO, cast

from syncd.cli.exit import ExitCode, write_problems
from syncd.cli.parser import build_parser
from syncd.config import Config, LogConfig, config_path_from
from syncd.exceptions import ConfigError, StoreError, SyncdError, SyncLockedError
from syncd.log import configure_logging, get_logger, redact
from syncd.schools import SchoolConfigs, load_schools

__all__ = ["COMMANDS", "EACH_SCHOOL", "ExitCode", "main"]

COMMANDS: dict[str, str] = {
    "run": "syncd.cli.sync:run_command",
    "run-once": "syncd.cli.sync:run_once_command",
    "serve": "syncd.cli.sync:serve_command",
    "plan": "syncd.cli.sync:plan_command",
    "status": "syncd.cli.admin:status_command",
    "approve-deletes": "syncd.cli.admin:approve_deletes_command",
    "retry-dead": "syncd.cli.admin:retry_dead_command",
    "restore-backup": "syncd.cli.admin:restore_backup_command",
    "history": "syncd.cli.admin:history_command",
    "sso-url": "syncd.cli.admin:sso_url_command",
    "check-config": "syncd.cli.admin:check_config_command",
    "import-exam": "syncd.cli.exams:import_exam_command",
    "exams": "syncd.cli.exams:list_exams_command",
    "delete-exam": "syncd.cli.exams:delete_exam_command",
    "demo": "syncd.cli.demo:demo_command",
    "sandbox": "syncd.cli.demo:sandbox_command",
}
_NO_CONFIG = frozenset({"demo", "sandbox"})  # they make their own
# Commands that take every school of the --config path (a file is a directory of one school).
_ALL_SCHOOLS = frozenset({"run", "serve"})
# Commands about one school that, given a directory and no --school, go through every school.
EACH_SCHOOL: dict[str, str] = {
    "run-once": "syncd.cli.schools:run_once_each_command",
    "status": "syncd.cli.schools:status_each_command",
    "check-config": "syncd.cli.schools:check_config_each_command",
}

# Commands that run as a service log to stdout (journald); the others keep stdout for their own
# output (plan --json, status --json) and log to stderr.
_SERVICE_COMMANDS = frozenset({"run", "run-once", "serve"})


class _Redacted:
    """Everything a command prints passes the same redaction as the logs: an upstream message
    may echo a password or a token back."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, text: str) -> int:
        return self._out.write(redact(text))

    def flush(self) -> None:
        self._out.flush()

    def isatty(self) -> bool:
        return hasattr(self._out, "isatty") and self._out.isatty()


def _resolve(target: str) -> Callable[..., Any]:
    module_name, _, function_name = target.partition(":")
    return getattr(importlib.import_module(module_name), function_name)  # type: ignore[no-any-return]


def _fail(message: str, code: ExitCode) -> int:
    sys.stderr.write(f"syncd: {redact(message)}\n")
    return int(code)


def _command_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    if args.run_once and args.command not in (None, "run-once"):
        parser.error("--run-once is a command of its own; do not combine it with another command")
    command: str | None = "run-once" if args.run_once else args.command
    return command


def _load(path: Path, command: str, out: TextIO) -> SchoolConfigs | int:
    try:
        return load_schools(path)
    except ConfigError as err:
        if command == "check-config":
            write_problems(out, path, err)
            out.write(f"{len(err.problems)} problem(s); nothing was started\n")
        return _fail(f"configuration error in {path}: {err}", ExitCode.USAGE)


def _handler_and_input(
    command: str, schools: SchoolConfigs, school: str | None
) -> tuple[str, SchoolConfigs | Config]:
    """Which function runs ``command``, and on what: every school, or the one it is about."""
    if command in _ALL_SCHOOLS:
        return COMMANDS[command], schools.only(school) if school else schools
    if command in EACH_SCHOOL and schools.is_directory and school is None:
        return EACH_SCHOOL[command], schools
    return COMMANDS[command], schools.one(school)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    command = _command_of(parser, args)
    if command is None:
        parser.print_help(out)
        return int(ExitCode.USAGE)
    target: SchoolConfigs | Config | None = None
    log_config = LogConfig()
    handler_name = COMMANDS[command]
    if command not in _NO_CONFIG:
        loaded = _load(config_path_from(args.config), command, out)
        if isinstance(loaded, int):
            return loaded
        log_config = loaded.log
        try:
            handler_name, target = _handler_and_input(command, loaded, args.school)
        except ConfigError as err:
            return _fail(str(err), ExitCode.USAGE)
        if isinstance(target, Config):
            log_config = target.log
    stream = sys.stdout if command in _SERVICE_COMMANDS else sys.stderr
    configure_logging(
        level=(args.log_level or log_config.level).upper(), stream=stream, fmt=log_config.format
    )
    handler = _resolve(handler_name)
    out = cast(TextIO, _Redacted(out))
    try:
        if target is None:
            return int(asyncio.run(handler(args, out)))
        return int(asyncio.run(handler(target, args, out)))
    except KeyboardInterrupt:
        return 130
    except ConfigError as err:
        return _fail(f"configuration error: {err}", ExitCode.USAGE)
    except SyncLockedError as err:
        return _fail(str(err), ExitCode.LOCKED)
    except StoreError as err:
        return _fail(str(err), ExitCode.USAGE)
    except SyncdError as err:
        get_logger("syncd").error("command failed", command=command, error=str(err))
        return _fail(f"{command} failed: {err}", ExitCode.FAILED)
