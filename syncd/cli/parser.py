"""The ``syncd`` argument parser: every command with a description, its exit codes and an
example, so ``syncd COMMAND --help`` explains itself. Global options may come before or after
the command (``syncd status --config FILE`` works)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from syncd import __version__

__all__ = ["COMMAND_HELP", "CommandHelp", "build_parser"]

EXIT_CODES = """exit codes:
  0   done / healthy
  1   done, but something needs the admin (a failed source, a dead letter, operations left
      queued, held deletions for status)
  2   usage, configuration or environment error (unreadable database, port in use, ...)
  75  another syncd process is already syncing this database; nothing was done"""


@dataclass(frozen=True, slots=True)
class CommandHelp:
    summary: str
    description: str
    example: str


COMMAND_HELP: dict[str, CommandHelp] = {
    "run": CommandHelp(
        "the daemon: scheduler, outbound worker and pull API server",
        "Polls each source on its [schedule] crontab, sends changes to Chengjiyun and serves "
        "Chengjiyun's pulls, until SIGTERM/SIGINT (which finish in-flight work first).",
        "syncd run --config /etc/syncd/syncd.toml",
    ),
    "run-once": CommandHelp(
        "one full cycle of every enabled source, then drain the queue, and exit",
        "For cron or a systemd timer. Stops sending after [chengjiyun] drain_timeout_s; what "
        "is left stays queued for the next run.",
        "syncd --run-once   (or: syncd run-once --full)",
    ),
    "serve": CommandHelp(
        "the pull API server alone (for the cron/timer layout)",
        "Answers Chengjiyun's signed queryUsers/queryClassStatus/exam pulls from the database; "
        "syncs nothing.",
        "syncd serve",
    ),
    "plan": CommandHelp(
        "dry run: poll, map, diff and print what would be sent; writes nothing",
        "Prints every add (+), change (~), deletion (-) and held deletion (!), then a summary.",
        "syncd plan   |   syncd plan --json",
    ),
    "status": CommandHelp(
        "is it all right? daemon, sources, queue, dead letters, held deletions, last cycles",
        "Reads the database only; works while the daemon runs. Exit 1 when something needs "
        "attention.",
        "syncd status   |   syncd status --json",
    ),
    "approve-deletes": CommandHelp(
        "release deletions held by the [safety] limits",
        "Without IDs, lists what would be released and asks; --yes for scripts. Approved "
        "deletions are sent on the next cycle of their source.",
        "syncd approve-deletes cc-1101 cc-1102   |   syncd approve-deletes --yes",
    ),
    "retry-dead": CommandHelp(
        "put every dead-lettered operation back in the queue",
        "Use once the cause Chengjiyun gave (see `syncd status`) is fixed.",
        "syncd retry-dead",
    ),
    "restore-backup": CommandHelp(
        "replace the database with the last online backup ([store] backup_path)",
        "For a lost, emptied or corrupt database. The current file (if any) is kept beside it "
        "as *.broken-TIMESTAMP.",
        "syncd restore-backup",
    ),
    "history": CommandHelp(
        "what syncd sent about one user (or everybody), when, and what Chengjiyun answered",
        "Kept for [store] history_days.",
        "syncd history cc-1101   |   syncd history --since 2026-11-01 --json",
    ),
    "sso-url": CommandHelp(
        "print a signed Chengjiyun single-sign-on link for ACCOUNT",
        "ACCOUNT is the Chengjiyun user id (for example a teacher's ep-… id). The link is valid "
        "for 7200 s.",
        "syncd sso-url ep-t001 --stage 高中",
    ),
    "check-config": CommandHelp(
        "validate the configuration and print it with secrets masked",
        "Reports every problem of the file at once.",
        "syncd check-config --config /etc/syncd/syncd.toml",
    ),
    "import-exam": CommandHelp(
        "import one exam's results from .xlsx or .csv files",
        "Everything is validated before anything is written (layouts in docs/exams.md).",
        "syncd import-exam results.xlsx --dry-run",
    ),
    "exams": CommandHelp("list the imported exams", "", "syncd exams"),
    "delete-exam": CommandHelp("remove one imported exam", "", "syncd delete-exam 2026-mid-g8"),
    "demo": CommandHelp(
        "sync a generated school against the built-in sandbox and show the result",
        "Needs no configuration; everything runs on 127.0.0.1 in a temporary directory.",
        "syncd demo --pupils 300",
    ),
    "sandbox": CommandHelp(
        "start the three fakes on 127.0.0.1 and write a config pointing at them",
        "For trying syncd by hand: run plan, --run-once or status against it in another "
        "terminal. Runs until Ctrl-C.",
        "syncd sandbox --dir /tmp/try-syncd",
    ),
}


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The options every command takes; on sub-commands they default to "not given" so a value
    given before the command is not overwritten."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=default,
        help="configuration file, or a directory of one *.toml file per school (default: "
        "$SYNCD_CONFIG, then /etc/syncd/syncd.toml)",
    )
    parser.add_argument(
        "--school",
        metavar="ORG_ID",
        default=default,
        help="with a directory: the school (orgId) to act on (required by commands about one "
        "school when the directory holds several)",
    )
    parser.add_argument(
        "--log-level",
        metavar="LEVEL",
        default=default if suppress else os.environ.get("SYNCD_LOG_LEVEL"),
        help="debug, info, warning or error (default: [log] level, or $SYNCD_LOG_LEVEL, or info)",
    )


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str
) -> argparse.ArgumentParser:
    info = COMMAND_HELP[name]
    parser = sub.add_parser(
        name,
        help=info.summary,
        description=f"{info.summary}.\n\n{info.description}".rstrip(),
        epilog=f"example:\n  {info.example}\n\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, suppress=True)
    return parser


def _sync_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else False
    parser.add_argument(
        "--full",
        action="store_true",
        default=default,
        help="full reconcile: re-send every user Chengjiyun should hold as addUser",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        default=default,
        help="start a first sync although a backup exists for a missing or empty database",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="Keeps Chengjiyun (成绩云) in step with the school's ClassCharts and epaas data.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    _global_options(parser, suppress=False)
    parser.add_argument(
        "--run-once",
        action="store_true",
        help="run one full cycle of every enabled source, drain the queue, and exit",
    )
    _sync_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _command(sub, "run")
    _sync_options(_command(sub, "run-once"), suppress=True)
    _command(sub, "serve")
    plan = _command(sub, "plan")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.add_argument(
        "--full", action="store_true", help="also count what a full reconcile would re-send"
    )
    status = _command(sub, "status")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    approve = _command(sub, "approve-deletes")
    approve.add_argument("ids", nargs="*", metavar="ID", help="user ids to release")
    approve.add_argument("--yes", action="store_true", help="release all held without asking")
    _command(sub, "retry-dead")
    _command(sub, "restore-backup")
    history = _command(sub, "history")
    history.add_argument("id", nargs="?", metavar="ID", help="a user id (default: everybody)")
    history.add_argument("--since", metavar="YYYY-MM-DD", help="only from this day on")
    history.add_argument("--json", action="store_true", help="machine-readable output")
    sso = _command(sub, "sso-url")
    sso.add_argument("account", metavar="ACCOUNT", help="the Chengjiyun user id to sign in as")
    sso.add_argument(
        "--mobile", action="store_true", help="the mobile portal instead of the PC one"
    )
    sso.add_argument("--stage", choices=["小学", "初中", "高中"], help="school stage (type)")
    _command(sub, "check-config")
    imp = _command(sub, "import-exam")
    imp.add_argument(
        "paths", nargs="+", metavar="PATH", help="an .xlsx workbook, or a folder/list of .csv files"
    )
    imp.add_argument("--dry-run", action="store_true", help="validate only; write nothing")
    _command(sub, "exams")
    delete = _command(sub, "delete-exam")
    delete.add_argument("exam_id", metavar="ID", help="the exam id (see `syncd exams`)")
    demo = _command(sub, "demo")
    demo.add_argument(
        "--pupils", type=int, default=300, help="pupils in the generated school (default 300)"
    )
    sandbox = _command(sub, "sandbox")
    sandbox.add_argument(
        "--pupils", type=int, default=300, help="pupils in the generated school (default 300)"
    )
    sandbox.add_argument("--dir", metavar="DIR", help="where to write the config and database")
    return parser
