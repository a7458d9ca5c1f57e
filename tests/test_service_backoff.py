"""Pure parts of the daemon: back-off of failing sources and pause ranges."""

from __future__ import annotations

import datetime as dt

import pytest

from syncd.config import PauseRange, ScheduleConfig
from syncd.core.health import FAILING_AFTER, MAX_BACKOFF_S, backoff_delay_s

HOUR = 3600.0


@pytest.mark.parametrize(
    ("failures", "interval", "delay"),
    [
        (0, HOUR, 0.0),
        (1, HOUR, 0.0),
        (FAILING_AFTER - 1, HOUR, 0.0),
        (FAILING_AFTER, HOUR, 2 * HOUR),
        (FAILING_AFTER + 1, HOUR, 4 * HOUR),
        (FAILING_AFTER + 2, HOUR, 8 * HOUR),
        (FAILING_AFTER + 4, HOUR, MAX_BACKOFF_S),  # 32 h capped at a day
        (FAILING_AFTER + 50, 1800.0, MAX_BACKOFF_S),
        (FAILING_AFTER, 1800.0, HOUR),
    ],
)
def test_backoff_table(failures: int, interval: float, delay: float) -> None:
    assert backoff_delay_s(failures, interval) == delay


SUMMER = PauseRange(start=dt.date(2027, 7, 15), end=dt.date(2027, 8, 31))
ROLLOVER = PauseRange(start=dt.date(2027, 1, 1), end=dt.date(2027, 1, 1))


@pytest.mark.parametrize(
    ("day", "paused"),
    [
        (dt.date(2027, 7, 14), False),
        (dt.date(2027, 7, 15), True),
        (dt.date(2027, 8, 1), True),
        (dt.date(2027, 8, 31), True),
        (dt.date(2027, 9, 1), False),
        (dt.date(2027, 1, 1), True),
        (dt.date(2026, 12, 31), False),
    ],
)
def test_pause_ranges_are_inclusive(day: dt.date, paused: bool) -> None:
    assert ScheduleConfig(pause=[SUMMER, ROLLOVER]).paused_on(day) is paused


def test_no_pause_ranges() -> None:
    assert ScheduleConfig().paused_on(dt.date(2027, 8, 1)) is False
