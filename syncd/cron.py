"""Crontab strings for APScheduler 3, with cron's weekday numbering.

``CronTrigger.from_crontab`` numbers weekdays from 0 = Monday, while every crontab an admin has
ever written means 0 (and 7) = Sunday: "0 3 * * 1-5" would silently run Tuesday to Saturday. So
the weekday field is translated here to APScheduler's day names; the other four fields mean the
same in both and pass through.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from apscheduler.triggers.cron import CronTrigger

__all__ = ["CronError", "interval_s", "parse_weekdays", "trigger_from_crontab"]

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NAME_TO_NUMBER = {name: number for number, name in enumerate(_DAY_NAMES)}


class CronError(ValueError):
    """A crontab string we cannot use; the message says which part and why."""


def _weekday(token: str) -> int:
    token = token.strip().lower()
    if token in _NAME_TO_NUMBER:
        return _NAME_TO_NUMBER[token]
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token) % 7
    raise CronError(f"weekday {token!r} is not 0-7 or a day name (sun..sat)")


def parse_weekdays(field: str) -> frozenset[int] | None:
    """The weekdays (0 = Sunday) a crontab weekday field selects; None for every day ("*")."""
    if field == "*":
        return None
    days: set[int] = set()
    for part in field.split(","):
        match = re.fullmatch(r"(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?", part.strip().lower())
        if not match:
            raise CronError(f"weekday field part {part!r} is not understood")
        span, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if step < 1:
            raise CronError(f"weekday step in {part!r} must be at least 1")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            first_text, last_text = span.split("-")
            first = _weekday(first_text)
            last = 7 if last_text.strip() == "7" else _weekday(last_text)
            if last < first:
                raise CronError(f"weekday range {part!r} runs backwards")
        else:
            first = last = _weekday(span)
        days.update(day % 7 for day in range(first, last + 1, step))
    return frozenset(days)


def trigger_from_crontab(expr: str, timezone: Any = None) -> CronTrigger:
    """A CronTrigger for a five-field crontab string, weekdays numbered as cron numbers them."""
    fields = expr.split()
    if len(fields) != 5:
        raise CronError(
            f"{expr!r} has {len(fields)} fields; a crontab string has 5 (minute hour day month weekday)"
        )
    minute, hour, day, month, weekday = fields
    days = parse_weekdays(weekday)
    day_of_week = "*" if days is None else ",".join(_DAY_NAMES[d] for d in sorted(days))
    try:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=day_of_week,
            timezone=timezone,
        )
    except ValueError as err:
        raise CronError(f"{expr!r}: {err}") from None


def interval_s(expr: str, *, samples: int = 8) -> float:
    """The longest gap between consecutive runs over the next ``samples`` runs, in seconds.

    Used for "stale" health: a source is stale after three of these without a success.
    """
    trigger = trigger_from_crontab(expr, timezone=dt.UTC)
    previous: dt.datetime | None = None
    now = dt.datetime(
        2026, 1, 5, tzinfo=dt.UTC
    )  # a fixed Monday: the answer must not depend on today
    current = trigger.get_next_fire_time(None, now)
    longest = 0.0
    for _ in range(samples):
        if current is None:
            break
        if previous is not None:
            longest = max(longest, (current - previous).total_seconds())
        previous = current
        current = trigger.get_next_fire_time(previous, previous + dt.timedelta(seconds=1))
    return longest
