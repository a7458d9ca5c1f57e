"""The exit codes every command shares."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode"]


class ExitCode(IntEnum):
    OK = 0  # done / healthy
    FAILED = 1  # done, but something needs the admin
    USAGE = 2  # usage, configuration or environment error
    LOCKED = 75  # EX_TEMPFAIL: another syncd process is syncing this database
