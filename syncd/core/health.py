"""Health rules for a source, as pure functions: when it counts as failing, and how long to back
off. The engine's ``SourceHealth`` object applies them and owns the logging and the database row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from syncd.core.kinds import SourceOutcome, SourceState

__all__ = ["FAILING_AFTER", "MAX_BACKOFF_S", "HealthRecord", "backoff_delay_s", "observe"]

FAILING_AFTER = 3  # consecutive failed polls before a source is failing
MAX_BACKOFF_S = 86_400.0  # a failing source is still tried at least once a day


@dataclass(frozen=True, slots=True)
class HealthRecord:
    """What is remembered about one source between polls (one database row)."""

    source: str
    state: SourceState = SourceState.OK
    consecutive_failures: int = 0
    last_attempt_at: float | None = None
    last_success_at: float | None = None
    last_error: str | None = None


def observe(
    record: HealthRecord, outcome: SourceOutcome, error: str | None, now: float
) -> HealthRecord:
    """The record after one poll: a failed poll counts, a partial or good one resets the count."""
    if outcome is SourceOutcome.FAILED:
        failures = record.consecutive_failures + 1
        state = SourceState.FAILING if failures >= FAILING_AFTER else SourceState.ERRORING
        return replace(
            record,
            state=state,
            consecutive_failures=failures,
            last_attempt_at=now,
            last_error=error,
        )
    return replace(
        record,
        state=SourceState.OK,
        consecutive_failures=0,
        last_attempt_at=now,
        last_success_at=now,
        last_error=error,
    )


def backoff_delay_s(consecutive_failures: int, schedule_interval_s: float) -> float:
    """How long after its last attempt a failing source may be polled again; 0 = on schedule.

    Doubles with every failure past the threshold (2, 4, 8 … schedule intervals), capped at a
    day, so a revoked password does not hammer the service.
    """
    if consecutive_failures < FAILING_AFTER:
        return 0.0
    return min(
        MAX_BACKOFF_S, schedule_interval_s * 2.0 ** (consecutive_failures - FAILING_AFTER + 1)
    )
