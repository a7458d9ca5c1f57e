"""A warning that a flood cannot turn into a flood of log lines.

Malformed requests and dropped connections are the attacker's choice, so each kind is logged at
most once per interval, with the count of the ones left out since the last line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["ThrottledWarning"]


class ThrottledWarning:
    """At most one line (WARNING unless ``level`` says otherwise) per ``interval_s``; the next
    line says how many were suppressed."""

    def __init__(
        self,
        logger: Any,
        *,
        interval_s: float = 10.0,
        level: str = "warning",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._level = level
        self._last_at: float | None = None
        self.suppressed = 0
        self.total = 0

    def warn(self, event: str, **fields: Any) -> bool:
        """Log ``event`` unless a line went out less than ``interval_s`` ago; True if logged."""
        self.total += 1
        now = self._clock()
        if self._last_at is not None and now - self._last_at < self._interval_s:
            self.suppressed += 1
            return False
        getattr(self._logger, self._level)(event, suppressed=self.suppressed, **fields)
        self._last_at = now
        self.suppressed = 0
        return True
