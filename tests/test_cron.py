"""The crontab translation is pure: a table of inputs and the weekdays APScheduler must see."""

from __future__ import annotations

import datetime as dt

import pytest

from syncd.cron import CronError, interval_s, parse_weekdays, trigger_from_crontab

SUN, MON, TUE, WED, THU, FRI, SAT = range(7)


@pytest.mark.parametrize(
    ("field", "days"),
    [
        ("*", None),
        ("0", {SUN}),
        ("7", {SUN}),
        ("1", {MON}),
        ("1-5", {MON, TUE, WED, THU, FRI}),
        ("5-7", {FRI, SAT, SUN}),
        ("*/2", {SUN, TUE, THU, SAT}),
        ("1-5/2", {MON, WED, FRI}),
        ("sat,sun", {SAT, SUN}),
        ("MON-wed", {MON, TUE, WED}),
        ("0,3", {SUN, WED}),
    ],
)
def test_weekday_field(field: str, days: set[int] | None) -> None:
    assert parse_weekdays(field) == (None if days is None else frozenset(days))


@pytest.mark.parametrize("field", ["8", "mon-", "5-1", "*/0", "x", "1-5/"])
def test_bad_weekday_field(field: str) -> None:
    with pytest.raises(CronError):
        parse_weekdays(field)


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        # 2026-11-23 is a Monday: cron "1" is Monday, "0" is Sunday.
        ("0 3 * * 1", dt.datetime(2026, 11, 22, 12, 0), dt.datetime(2026, 11, 23, 3, 0)),
        ("0 3 * * 0", dt.datetime(2026, 11, 23, 12, 0), dt.datetime(2026, 11, 29, 3, 0)),
        ("0 3 * * 1-5", dt.datetime(2026, 11, 27, 12, 0), dt.datetime(2026, 11, 30, 3, 0)),
        ("*/30 * * * *", dt.datetime(2026, 11, 23, 10, 1), dt.datetime(2026, 11, 23, 10, 30)),
        ("0 * * * *", dt.datetime(2026, 11, 23, 10, 1), dt.datetime(2026, 11, 23, 11, 0)),
    ],
)
def test_next_fire_time_uses_cron_weekdays(
    expr: str, after: dt.datetime, expected: dt.datetime
) -> None:
    trigger = trigger_from_crontab(expr, timezone=dt.UTC)
    fire = trigger.get_next_fire_time(None, after.replace(tzinfo=dt.UTC))
    assert fire == expected.replace(tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("expr", "seconds"),
    [("*/30 * * * *", 1800), ("0 * * * *", 3600), ("0 3 * * *", 86400), ("0 3 * * 1-5", 3 * 86400)],
)
def test_interval(expr: str, seconds: int) -> None:
    assert interval_s(expr) == seconds


@pytest.mark.parametrize("expr", ["* * * *", "61 * * * *", "0 25 * * *", "0 3 * * 9"])
def test_bad_expression(expr: str) -> None:
    with pytest.raises(CronError):
        trigger_from_crontab(expr)
