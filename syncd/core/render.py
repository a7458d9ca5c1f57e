"""Reports rendered into the text the CLI prints: pure functions from records to strings."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from syncd.core.diff import SourceDiff
from syncd.core.kinds import SourceOutcome
from syncd.core.model import ADMIN_SOURCE
from syncd.core.report import CycleReport, DrainReport, SourceReport

__all__ = [
    "Palette",
    "plan_json",
    "render_cycle",
    "render_drain",
    "render_plan",
    "render_school_lines",
    "render_status",
    "source_label",
    "when",
]


class Palette:
    """ANSI colours for a terminal; the plain one (no colour) for pipes and ``NO_COLOR``."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled

    def _paint(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self._enabled else text

    def green(self, text: str) -> str:
        return self._paint("32", text)

    def yellow(self, text: str) -> str:
        return self._paint("33", text)

    def red(self, text: str) -> str:
        return self._paint("31", text)

    def bold(self, text: str) -> str:
        return self._paint("1", text)


PLAIN = Palette(False)


def when(timestamp: float | None) -> str:
    """A stored time as local time with its zone, e.g. ``2026-11-30 14:05:09 +0800``."""
    if not timestamp:
        return "never"
    return dt.datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def _counts(diff: SourceDiff | None) -> tuple[int, int, int, int]:
    if diff is None:
        return 0, 0, 0, 0
    updates = sum(1 for u in diff.updates if u.sends)
    return len(diff.adds), updates, len(diff.deletes), len(diff.held)


# --- a cycle (--run-once) --------------------------------------------------------------------


def source_label(source: str) -> str:
    """A source as the admin reads it; ``config`` holds the admins of ``[[admins]]``."""
    return "config ([[admins]] of their own)" if source == ADMIN_SOURCE else source


def render_cycle(report: CycleReport) -> str:
    lines: list[str] = []
    for name, sr in report.sources.items():
        source = source_label(name)
        adds, updates, deletes, held = _counts(sr.diff)
        if sr.outcome is SourceOutcome.FAILED:
            lines.append(f"{source}: FAILED — nothing sent or deleted for it this cycle")
        else:
            statuses = f", {sr.classes} class statuses" if sr.classes else ""
            notify = ", class status notify" if sr.diff and sr.diff.class_status_changed else ""
            lines.append(
                f"{source}: {sr.outcome} — {sr.users} users{statuses}; "
                f"queued {adds} add, {updates} update, {deletes} delete{notify}"
            )
        lines.extend(f"  error: {error}" for error in sr.errors)
        if sr.warnings:
            first = sr.warnings[0]
            more = f" (and {len(sr.warnings) - 1} more: `syncd plan` lists them)"
            lines.append(f"  warning: {first}" + (more if len(sr.warnings) > 1 else ""))
        if held:
            lines.append(
                f"  {held} deletion(s) HELD by the [safety] limits: see `syncd status`, "
                "release with `syncd approve-deletes`"
            )
    return "".join(line + "\n" for line in lines)


def render_drain(drain: DrainReport) -> str:
    sent = ", ".join(f"{n} {kind}" for kind, n in drain.sent.items() if n) or "nothing"
    lines = [f"sent: {sent} in {drain.requests} request(s)"]
    for dead in drain.dead:
        lines.append(f"  DEAD LETTER {dead['kind']} {dead['record_id'] or ''}: {dead['reason']}")
    if drain.refused is not None:
        lines.append(
            f"Chengjiyun refused the account ({drain.refused}): {drain.refused_hint or 'check [chengjiyun]'}. "
            "Nothing was dead-lettered; fix it and run again."
        )
    if drain.remaining:
        why = f" ({drain.stopped})" if drain.stopped else ""
        cause = f"; last failure: {drain.last_transient}" if drain.last_transient else ""
        lines.append(
            f"{drain.remaining} operation(s) still queued{why}{cause}; the next run sends them"
        )
    return "".join(line + "\n" for line in lines)


# --- plan ------------------------------------------------------------------------------------


def plan_json(report: CycleReport) -> dict[str, Any]:
    sources: dict[str, Any] = {}
    for source, sr in report.sources.items():
        diff = sr.diff
        sources[source] = {
            "outcome": str(sr.outcome),
            "errors": list(sr.errors),
            "warnings": list(sr.warnings),
            "addUser": [u.pushed() for u in diff.adds] if diff else [],
            "updateUser": [dict(u.changes) for u in diff.updates if u.sends] if diff else [],
            "deleteUser": [u.id for u in diff.deletes] if diff else [],
            "held": [{"id": u.id, "name": u.name, "reason": r} for u, r in diff.held]
            if diff
            else [],
            "missing": dict(diff.missing) if diff else {},
            "classStatusChanged": bool(diff and diff.class_status_changed),
        }
    return {"sources": sources}


def _plan_source(sr: SourceReport, delete_after_cycles: int, paint: Palette) -> list[str]:
    diff = sr.diff
    if diff is None:
        return [paint.red(f"{sr.source}: FAILED — {'; '.join(sr.errors)}")]
    lines = [f"{sr.source}: {sr.outcome}, {sr.users} users"]
    lines.extend(paint.red(f"  error: {error}") for error in sr.errors)
    lines.extend(paint.yellow(f"  warning: {warning}") for warning in sr.warnings)
    for user in diff.adds:
        lines.append(paint.green(f"  + {user.id}  {user.name} ({', '.join(user.roles)})"))
    for update in diff.updates:
        if not update.sends:
            continue
        old = sr.acknowledged[update.user.id].user.pushed()
        changes = ", ".join(
            f"{k}: {old.get(k)!r} → {v!r}" for k, v in update.changes.items() if k != "id"
        )
        lines.append(paint.yellow(f"  ~ {update.user.id}  {changes}"))
    for user in diff.deletes:
        lines.append(paint.red(f"  - {user.id}  {user.name}"))
    for user, reason in diff.held:
        lines.append(paint.red(f"  ! {user.id}  {user.name}: held — {reason}"))
    shown = {user.id for user, _ in diff.held} | {user.id for user in diff.deletes}
    for user_id, count in sorted(diff.missing.items()):
        if user_id not in shown:
            left = delete_after_cycles - count
            lines.append(
                f"    {user_id} missing from {count} complete poll(s) in a row; "
                f"deleted after {left} more"
            )
    if diff.class_status_changed:
        lines.append(paint.yellow("  ~ class statuses changed: update/classStatus sent once"))
    if diff.is_empty and not diff.held:
        lines.append("  nothing to send")
    return lines


def render_plan(report: CycleReport, *, delete_after_cycles: int, paint: Palette = PLAIN) -> str:
    """Every change a cycle would send, then one summary line (``+`` add, ``~`` change,
    ``-`` delete, ``!`` held)."""
    lines: list[str] = []
    totals = [0, 0, 0, 0]
    for sr in report.sources.values():
        lines.extend(_plan_source(sr, delete_after_cycles, paint))
        for index, value in enumerate(_counts(sr.diff)):
            totals[index] += value
    adds, updates, deletes, held = totals
    summary = f"Plan: {adds} to add, {updates} to change, {deletes} to delete, {held} held."
    lines.append(paint.bold(summary))
    return "".join(line + "\n" for line in lines)


# --- status ----------------------------------------------------------------------------------


def _grouped(items: Iterable[Mapping[str, Any]], key: str, ids: str, limit: int = 5) -> list[str]:
    groups: dict[str, list[str]] = defaultdict(list)
    for item in items:
        groups[str(item[key])].append(str(item[ids] or "-"))
    lines = []
    for reason, members in sorted(groups.items(), key=lambda pair: -len(pair[1])):
        sample = ", ".join(members[:limit]) + (", …" if len(members) > limit else "")
        lines.append(f"  {len(members):>5} × {reason}: {sample}")
    return lines


def _status_head(status: Mapping[str, Any]) -> list[str]:
    lines = [f"database: {status['database']}"]
    daemon = status.get("daemon")
    if daemon:
        lines.append(
            f"syncing process: pid {daemon['pid']} ({daemon.get('command') or 'sync'}), "
            f"since {when(daemon.get('since'))}"
        )
    else:
        lines.append("syncing process: none running")
    lines.append(f"health: {'OK' if status['healthy'] else 'NEEDS ATTENTION'}")
    lines += ["", "users (last poll / acknowledged by Chengjiyun):"]
    for source, counts in status["users"].items():
        lines.append(f"  {source:<12} {counts['desired']} / {counts['acknowledged']}")
    return lines


def _status_sources(
    sources: Mapping[str, Mapping[str, Any]], next_poll: Mapping[str, float]
) -> list[str]:
    lines = ["", "sources:"]
    if not sources:
        lines.append("  (no poll yet)")
    for name, state in sources.items():
        line = (
            f"  {name:<12} {state['state']:<8} last success {when(state['last_success_at'])}, "
            f"last attempt {when(state['last_attempt_at'])}"
        )
        if name in next_poll:
            line += f", next poll {when(next_poll[name])}"
        if state["consecutive_failures"]:
            line += f", {state['consecutive_failures']} failure(s) in a row: {state['last_error']}"
        lines.append(line)
    return lines


def _status_cycles(cycles: Iterable[Mapping[str, Any]]) -> list[str]:
    lines = ["", "last cycles:"]
    for cycle in cycles:
        per_source = "; ".join(
            f"{source} {info['outcome']} (+{info['adds']} ~{info['updates']} -{info['deletes']}"
            + (f" held {info['held']}" if info["held"] else "")
            + ")"
            for source, info in cycle["sources"].items()
        )
        lines.append(
            f"  #{cycle['id']:<5} {when(cycle['started_at'])} {cycle['command']:<9} "
            f"{cycle['outcome'] or 'running'}: {per_source}"
        )
    return lines if len(lines) > 2 else [*lines, "  (none)"]


def _status_waiting(status: Mapping[str, Any]) -> list[str]:
    """Queue, dead letters and what is held: each group with what to do about it."""
    queue: Mapping[str, int] = status["queue"]
    by_kind = f" ({', '.join(f'{n} {kind}' for kind, n in queue.items())})" if queue else ""
    lines = ["", f"queue: {sum(queue.values())} operation(s) waiting{by_kind}"]
    dead = status["dead_letters"]
    hint = " — requeue with `syncd retry-dead` once the cause is fixed" if dead else ""
    lines += ["", f"dead letters: {len(dead)}{hint}", *_grouped(dead, "reason", "record_id")]
    held = status["held_deletions"]
    hint = " — review, then `syncd approve-deletes`" if held else ""
    lines += ["", f"held deletions: {len(held)}{hint}"]
    approved = sum(1 for item in held if item["approved"])
    if approved:
        lines.append(f"  {approved} approved: deleted on the next cycle of their source")
    lines += _grouped((item for item in held if not item["approved"]), "reason", "id")
    statuses = status.get("held_class_statuses")
    if statuses:
        state = "approved: sent on the next epaas cycle" if statuses["approved"] else "held"
        lines += [
            "",
            f"class statuses: a change removing {len(statuses['keys'])} of them is {state} — "
            f"{statuses['reason']}",
        ]
    return lines


def render_status(status: Mapping[str, Any]) -> str:
    """The ``status`` command's answer to "is it all right?", with what to do when it is not."""
    lines = [
        *_status_head(status),
        *_status_sources(status["sources"], status.get("next_poll", {})),
        *_status_cycles(status["cycles"]),
        *_status_waiting(status),
    ]
    return "".join(line + "\n" for line in lines)


def render_school_lines(
    statuses: Mapping[str, Mapping[str, Any]],
    unavailable: Mapping[str, str],
    invalid: Sequence[tuple[str, str]],
) -> str:
    """``status`` of a directory: one line per school (state, last success, queue, dead letters,
    held deletions), then the schools that cannot be read and the files that do not validate."""
    lines = [
        f"{'school':<20} {'state':<9} {'last success':<25} {'queue':>6} {'dead':>5} {'held':>5}"
    ]
    for org_id, status in statuses.items():
        successes = [s.get("last_success_at") for s in status["sources"].values()]
        known = [t for t in successes if t]
        # The oldest source's success: the school is as fresh as its stalest source.
        last = min(known) if known and len(known) == len(successes) else None
        held = len(status["held_deletions"]) + (1 if status["held_class_statuses"] else 0)
        lines.append(
            f"{org_id:<20} {'ok' if status['healthy'] else 'ATTENTION':<9} {when(last):<25} "
            f"{sum(status['queue'].values()):>6} {len(status['dead_letters']):>5} {held:>5}"
        )
    for org_id, reason in unavailable.items():
        lines.append(f"{org_id:<20} {'ATTENTION':<9} {reason}")
    for name, problem in invalid:
        lines.append(f"{name:<20} {'INVALID':<9} {problem}")
    attention = sum(1 for s in statuses.values() if not s["healthy"]) + len(unavailable)
    if attention or invalid:
        lines.append(
            f"{attention + len(invalid)} school(s) need attention: "
            "`syncd status --school ORG_ID` tells what and what to do"
            + ("; `syncd check-config --config DIR` lists every file's problems" if invalid else "")
        )
    else:
        lines.append(f"all {len(statuses)} school(s) healthy")
    return "".join(line + "\n" for line in lines)
