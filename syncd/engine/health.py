"""One health object per source, in the spirit of Home Assistant's DataUpdateCoordinator: it
owns the source's consecutive failures, its back-off, its database row, and the rule that a
state is logged (and alerted) once when it changes, not on every attempt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from syncd.core.health import HealthRecord, backoff_delay_s, observe
from syncd.core.kinds import SourceOutcome, SourceState
from syncd.log import get_logger
from syncd.store import Store

__all__ = ["SourceHealth", "StateChange"]

log = get_logger(__name__)

StateChange = Callable[[str, SourceState, SourceState, HealthRecord], Awaitable[None]]


class SourceHealth:
    """The health of one source of one school, kept in its ``source_state`` row."""

    def __init__(
        self,
        store: Store,
        source: str,
        *,
        interval_s: float,
        on_change: StateChange | None = None,
    ) -> None:
        self._store = store
        self.source = source
        self._interval_s = interval_s
        self._on_change = on_change
        self._logged_state: SourceState | None = None  # None: nothing said yet in this process

    async def record(self) -> HealthRecord:
        return await self._store.journal.health(self.source)

    async def backing_off_for_s(self, now: float) -> float:
        """Seconds until a failing source may be polled again; 0 when it may be polled now."""
        record = await self.record()
        delay_s = backoff_delay_s(record.consecutive_failures, self._interval_s)
        if not delay_s or record.last_attempt_at is None:
            return 0.0
        return max(0.0, record.last_attempt_at + delay_s - now)

    async def observe(
        self, outcome: SourceOutcome, error: str | None, now: float, *, quiet: bool = False
    ) -> HealthRecord:
        """Record one poll's outcome; log (and report) a change of state once.

        ``quiet`` (``--run-once``): the command prints its own report, so only the row is kept.
        """
        before = await self.record()
        after = observe(before, outcome, error, now)
        await self._store.journal.save_health(after)
        was = self._logged_state if self._logged_state is not None else before.state
        if not quiet and (after.state is not was or self._logged_state is None):
            self._log(was, after)
        self._logged_state = after.state
        if after.state is not before.state and self._on_change is not None:
            await self._on_change(self.source, before.state, after.state, after)
        return after

    def _log(self, was: SourceState, now: HealthRecord) -> None:
        if now.state is SourceState.FAILING:
            log.error(
                "source is failing; polling it with back-off until it recovers",
                source=self.source,
                consecutive_failures=now.consecutive_failures,
                error=now.last_error,
            )
        elif now.state is SourceState.ERRORING:
            log.warning(
                "source failed; retrying on its schedule",
                source=self.source,
                error=now.last_error,
            )
        elif was is not SourceState.OK:
            log.info("source recovered", source=self.source)
