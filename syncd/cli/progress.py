"""Progress of a long drain on a terminal: done / total, rate and ETA on one redrawn line."""

from __future__ import annotations

import time
from typing import TextIO

__all__ = ["Progress", "is_terminal"]


def is_terminal(out: TextIO) -> bool:
    return hasattr(out, "isatty") and out.isatty()


class Progress:
    def __init__(self, out: TextIO, what: str = "sending", *, unit: str = "operations") -> None:
        self._out = out
        self._what = what
        self._unit = unit
        self._started = time.monotonic()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = done / elapsed
        eta = f"{(total - done) / rate:.0f} s" if rate > 0 else "?"
        self._out.write(
            f"\r  {self._what}: {done}/{total} {self._unit}, {rate:.1f}/s, ETA {eta}   "
        )
        self._out.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            self._out.write("\n")
