"""The ``syncd`` command line (DESIGN "Command line"). Exit codes: 0 ok, 1 something failed, 2 usage/config."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from syncd import __version__
from syncd.config import Config, config_path_from, load_config, masked
from syncd.exceptions import ConfigError, SyncdError
from syncd.log import configure_logging, get_logger, redact

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# command -> "module:function". Each function is ``async def f(config, args, out) -> int``
# (``demo`` takes ``(args, out)``: it needs no config file).
COMMANDS: dict[str, str] = {
    "run": "syncd.engine.daemon:run",
    "run-once": "syncd.engine.cycle:run_once_command",
    "serve": "syncd.server.app:serve_command",
    "plan": "syncd.engine.cycle:plan_command",
    "status": "syncd.cli.admin:status_command",
    "approve-deletes": "syncd.cli.admin:approve_deletes_command",
    "retry-dead": "syncd.cli.admin:retry_dead_command",
    "sso-url": "syncd.clients.chengjiyun:sso_url_command",
    "import-exam": "syncd.server.exams:import_exam_command",
    "exams": "syncd.server.exams:list_exams_command",
    "delete-exam": "syncd.server.exams:delete_exam_command",
    "demo": "syncd.cli.demo:demo_command",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="Keeps Chengjiyun (成绩云) in step with the school's ClassCharts and epaas data.",
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default: $SYNCD_CONFIG, then /etc/syncd/syncd.toml)",
    )
    parser.add_argument(
        "--run-once",
        action="store_true",
        help="run one full cycle of every enabled source, drain the queue, and exit "
        "(0 all synced, 1 a source failed or an operation was dead-lettered, 2 config error)",
    )
    parser.add_argument(
        "--log-level", default=os.environ.get("SYNCD_LOG_LEVEL", "INFO"), help=argparse.SUPPRESS
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="the daemon: scheduler, outbound worker and pull API server")
    sub.add_parser("serve", help="the pull API server alone (for the cron/timer layout)")
    plan = sub.add_parser(
        "plan", help="dry run: poll, map, diff and print what would be sent; writes nothing"
    )
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    status = sub.add_parser("status", help="last cycles, queue depth, dead letters, held deletions")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    approve = sub.add_parser(
        "approve-deletes", help="release deletions held by the [safety] limits"
    )
    approve.add_argument(
        "ids", nargs="*", metavar="ID", help="user ids to release (default: all held)"
    )
    sub.add_parser("retry-dead", help="put every dead-lettered operation back in the queue")
    sso = sub.add_parser("sso-url", help="print a signed Chengjiyun single-sign-on link")
    sso.add_argument("account", metavar="ACCOUNT")
    sso.add_argument(
        "--mobile", action="store_true", help="the mobile portal instead of the PC one"
    )
    sso.add_argument("--stage", choices=["小学", "初中", "高中"], help="school stage (type)")
    sub.add_parser(
        "check-config", help="validate the configuration and print it with secrets masked"
    )
    imp = sub.add_parser("import-exam", help="import one exam's results from .xlsx or .csv files")
    imp.add_argument(
        "paths", nargs="+", metavar="PATH", help="an .xlsx workbook, or a folder/list of .csv files"
    )
    imp.add_argument("--dry-run", action="store_true", help="validate only; write nothing")
    sub.add_parser("exams", help="list the imported exams")
    delete = sub.add_parser("delete-exam", help="remove one imported exam")
    delete.add_argument("exam_id", metavar="ID")
    demo = sub.add_parser(
        "demo", help="sync a generated school against the built-in sandbox and show the result"
    )
    demo.add_argument(
        "--pupils", type=int, default=300, help="pupils in the generated school (default 300)"
    )
    return parser


def _resolve(target: str) -> Callable[..., Any]:
    """Commands are imported on use, so `syncd check-config` does not load aiohttp and friends."""
    module_name, _, function_name = target.partition(":")
    return getattr(importlib.import_module(module_name), function_name)  # type: ignore[no-any-return]


def _check_config(config: Config, out: TextIO) -> int:
    out.write(json.dumps(masked(config), ensure_ascii=False, indent=2) + "\n")
    out.write(
        f"configuration is valid; enabled sources: {', '.join(config.enabled_sources) or 'none'}\n"
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = _parser()
    args = parser.parse_args(argv)
    command = "run-once" if args.run_once else args.command
    if args.run_once and args.command:
        parser.error("--run-once is a command of its own; do not combine it with another command")
    if command is None:
        parser.print_help(out)
        return EXIT_USAGE

    if command == "demo":
        configure_logging(level=args.log_level, stream=sys.stderr)
        config: Config | None = None
    else:
        path = config_path_from(args.config)
        try:
            config = load_config(path)
        except ConfigError as err:
            sys.stderr.write(f"syncd: configuration error in {path}: {err}\n")
            return EXIT_USAGE
        # The daemon-style commands log to stdout (journald); the others keep stdout for their
        # output (plan --json, status --json) and log to stderr.
        daemon_style = command in ("run", "run-once", "serve")
        configure_logging(level=args.log_level, stream=sys.stdout if daemon_style else sys.stderr)
        if command == "check-config":
            return _check_config(config, out)

    handler = _resolve(COMMANDS[command])
    try:
        if config is None:
            return int(asyncio.run(handler(args, out)))
        return int(asyncio.run(handler(config, args, out)))
    except KeyboardInterrupt:
        return 130
    except ConfigError as err:
        sys.stderr.write(f"syncd: configuration error: {redact(str(err))}\n")
        return EXIT_USAGE
    except SyncdError as err:
        get_logger("syncd").error("command failed", command=command, error=str(err))
        sys.stderr.write(f"syncd: {command} failed: {redact(str(err))}\n")
        return EXIT_FAILED
