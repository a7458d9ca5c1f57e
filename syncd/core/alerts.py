"""Alerts without I/O: what happened (events), when to say so (de-duplication), and how (text).

An operator wants one message when something goes wrong and one when it is right again, never
one per cycle. :func:`observe` turns a stream of per-cycle observations into those state changes;
:func:`render` and :func:`webhook_payload` turn an event into a title, a text and a webhook body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

__all__ = [
    "AlertEvent",
    "AlertKind",
    "AlertMessage",
    "AlertState",
    "Condition",
    "Observation",
    "WebhookFormat",
    "observe",
    "render",
    "webhook_payload",
]


class AlertKind(StrEnum):
    SOURCE_FAILING = "source_failing"
    SOURCE_RECOVERED = "source_recovered"
    SOURCE_STALE = "source_stale"
    DELETIONS_HELD = "deletions_held"
    DEAD_LETTERED = "dead_lettered"
    ACCOUNT_REFUSED = "account_refused"
    CHENGJIYUN_UNREACHABLE = "chengjiyun_unreachable"
    CHENGJIYUN_RECOVERED = "chengjiyun_recovered"
    CONFIG_INVALID = "config_invalid"
    SCHOOL_NOT_STARTED = "school_not_started"


class WebhookFormat(StrEnum):
    JSON = "json"
    WECOM = "wecom"  # 企业微信群机器人
    DINGTALK = "dingtalk"  # 钉钉机器人


@dataclass(frozen=True)
class AlertEvent:
    """One thing worth telling a person about, for one school (``school`` is its org_id)."""

    kind: AlertKind
    school: str
    source: str | None
    summary: str
    details: tuple[tuple[str, str], ...] = ()
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class AlertMessage:
    title: str
    text: str
    state: str


# kind -> (state word for machines, title for people)
_KINDS: Mapping[AlertKind, tuple[str, str]] = {
    AlertKind.SOURCE_FAILING: ("failing", "source {source} is failing (数据源同步失败)"),
    AlertKind.SOURCE_RECOVERED: ("ok", "source {source} has recovered (数据源已恢复)"),
    AlertKind.SOURCE_STALE: (
        "stale",
        "source {source} has not been polled for too long (数据过期)",
    ),
    AlertKind.DELETIONS_HELD: ("held", "deletions held for approval (删除待批准)"),
    AlertKind.DEAD_LETTERED: ("dead_lettered", "operations dead-lettered (操作失败已搁置)"),
    AlertKind.ACCOUNT_REFUSED: ("refused", "Chengjiyun refuses the account (成绩云拒绝账号)"),
    AlertKind.CHENGJIYUN_UNREACHABLE: ("unreachable", "Chengjiyun is unreachable (成绩云无法访问)"),
    AlertKind.CHENGJIYUN_RECOVERED: ("ok", "Chengjiyun is reachable again (成绩云已恢复)"),
    AlertKind.CONFIG_INVALID: (
        "invalid",
        "the school's configuration file is invalid; it is not syncing (配置无效)",
    ),
    AlertKind.SCHOOL_NOT_STARTED: (
        "not_started",
        "the school could not start; it is not syncing (学校未能启动)",
    ),
}


def render(event: AlertEvent) -> AlertMessage:
    """Title and plain/markdown-friendly text of ``event``."""
    state, title = _KINDS[event.kind]
    title = f"syncd {event.school}: " + title.format(source=event.source or "-")
    lines = [event.summary] if event.summary else []
    lines += [f"- {key}: {value}" for key, value in event.details]
    lines.append(f"- time: {event.at.isoformat(timespec='seconds')}")
    return AlertMessage(title=title, text="\n".join(lines), state=state)


def webhook_payload(event: AlertEvent, message: AlertMessage, fmt: WebhookFormat) -> dict[str, Any]:
    """The JSON body a webhook of format ``fmt`` expects."""
    if fmt is WebhookFormat.WECOM:
        return {
            "msgtype": "markdown",
            "markdown": {"content": f"**{message.title}**\n{message.text}"},
        }
    if fmt is WebhookFormat.DINGTALK:
        return {
            "msgtype": "markdown",
            "markdown": {"title": message.title, "text": f"### {message.title}\n{message.text}"},
        }
    return {
        "event": str(event.kind),
        "school": event.school,
        "source": event.source,
        "state": message.state,
        "title": message.title,
        "text": message.text,
        "time": event.at.isoformat(),
    }


class Condition(StrEnum):
    """What an observation is about; each has its own state per source."""

    SOURCE_HEALTH = "source_health"  # bad: the source's poll failed
    SOURCE_FRESHNESS = "source_freshness"  # bad: no successful poll for too long
    CHENGJIYUN_REACH = "chengjiyun_reach"  # bad: Chengjiyun unreachable
    CHENGJIYUN_ACCOUNT = "chengjiyun_account"  # bad: Chengjiyun refuses platform/key/org
    DELETIONS_HELD = "deletions_held"  # count: deletions waiting for approval
    DEAD_LETTERS = "dead_letters"  # count: operations dead-lettered


# condition -> (kind when it goes bad, kind when it is good again or None for a silent reset)
_TRANSITIONS: Mapping[Condition, tuple[AlertKind, AlertKind | None]] = {
    Condition.SOURCE_HEALTH: (AlertKind.SOURCE_FAILING, AlertKind.SOURCE_RECOVERED),
    Condition.SOURCE_FRESHNESS: (AlertKind.SOURCE_STALE, None),
    Condition.CHENGJIYUN_REACH: (AlertKind.CHENGJIYUN_UNREACHABLE, AlertKind.CHENGJIYUN_RECOVERED),
    Condition.CHENGJIYUN_ACCOUNT: (AlertKind.ACCOUNT_REFUSED, None),
    Condition.DELETIONS_HELD: (AlertKind.DELETIONS_HELD, None),
    Condition.DEAD_LETTERS: (AlertKind.DEAD_LETTERED, None),
}
_COUNTED = frozenset({Condition.DELETIONS_HELD, Condition.DEAD_LETTERS})


@dataclass(frozen=True)
class Observation:
    """What one cycle saw about one condition.

    For failure conditions ``bad`` says whether it is wrong now. For counted conditions
    (held deletions, dead letters) ``count`` is the current number; ``bad`` is ignored.
    """

    condition: Condition
    source: str | None = None
    bad: bool = False
    count: int = 0
    summary: str = ""
    details: tuple[tuple[str, str], ...] = ()


_Key = tuple[Condition, str | None]


@dataclass(frozen=True)
class AlertState:
    """Last known level per (condition, source): 0 = good, >0 = bad (or the count alerted)."""

    levels: Mapping[_Key, int] = field(default_factory=lambda: MappingProxyType({}))

    def level(self, condition: Condition, source: str | None = None) -> int | None:
        """None when nothing has been observed yet (e.g. right after start)."""
        return self.levels.get((condition, source))

    def to_json(self) -> list[list[Any]]:
        """Storage form, so ``--run-once`` from a timer remembers what it already announced."""
        return [
            [str(condition), source, level] for (condition, source), level in self.levels.items()
        ]

    @classmethod
    def from_json(cls, data: Any) -> AlertState:
        """The stored form back; anything unreadable is forgotten (at worst one repeat)."""
        levels: dict[_Key, int] = {}
        for item in data if isinstance(data, list) else ():
            try:
                condition, source, level = item
                levels[(Condition(condition), source)] = int(level)
            except (TypeError, ValueError):
                continue
        return cls(MappingProxyType(levels))


def observe(
    state: AlertState, observation: Observation, *, school: str, at: datetime | None = None
) -> tuple[AlertState, AlertEvent | None]:
    """The next state, and the event to send if ``observation`` is a change worth one message.

    A failure is announced when it starts (also when it is the first thing seen) and, where the
    condition has a recovery message, once when it ends; a good first observation says nothing.
    Counts are announced when they rise (new held deletions, new dead letters), and reset quietly
    when they fall, so a standing backlog is not announced again every cycle.
    """
    key = (observation.condition, observation.source)
    previous = state.levels.get(key)
    if observation.condition in _COUNTED:
        level = max(0, observation.count)
        changed_to_bad = level > (previous or 0)
    else:
        level = 1 if observation.bad else 0
        changed_to_bad = level == 1 and previous != 1
    recovered = level == 0 and previous is not None and previous > 0
    levels = dict(state.levels)
    levels[key] = level
    next_state = AlertState(MappingProxyType(levels))
    bad_kind, good_kind = _TRANSITIONS[observation.condition]
    kind = bad_kind if changed_to_bad else good_kind if recovered else None
    if kind is None:
        return next_state, None
    event = AlertEvent(
        kind=kind,
        school=school,
        source=observation.source,
        summary=observation.summary,
        details=observation.details,
        at=at or datetime.now(UTC),
    )
    return next_state, event
