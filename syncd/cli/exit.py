"""The exit codes every command shares, and the one way a configuration's problems are
printed."""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path
from typing import TextIO

from syncd.exceptions import ConfigError
from syncd.log import redact

__all__ = ["ExitCode", "write_problems"]


class ExitCode(IntEnum):
    OK = 0  # done / healthy
    FAILED = 1  # done, but something needs the admin
    USAGE = 2  # usage, configuration or environment error
    LOCKED = 75  # EX_TEMPFAIL: another syncd process is syncing this database


def write_problems(out: TextIO, path: Path, err: ConfigError) -> None:
    """One line per problem of the file at ``path``: ``PATH: KEY: REASON``."""
    for key, reason in err.problems:
        out.write(redact(f"{path}: {key}: {reason}\n" if key else f"{path}: {reason}\n"))
