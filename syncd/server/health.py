"""``/healthz`` and the gauges ``/metrics`` refreshes on each scrape.

Health reports states only, never error text: an upstream's message can echo a secret or a
token, and the endpoint is reachable without a sign. ``syncd status`` shows the errors locally.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from syncd.config import Config
from syncd.cron import interval_s
from syncd.metrics import (
    DEAD_LETTERS,
    HELD_DELETIONS,
    LAST_SUCCESS,
    QUEUE_DEPTH,
    SECONDS_SINCE_SUCCESS,
)
from syncd.store import Store

__all__ = ["SourceHealth", "health", "refresh_gauges", "stale_after_s"]


class SourceHealth(StrEnum):
    OK = "ok"
    FAILING = "failing"
    STALE = "stale"
    WAITING = "waiting for first poll"


def stale_after_s(config: Config, source: str) -> float:
    """``[safety] stale_after_s``, or three times the source's schedule interval."""
    if config.safety.stale_after_s:
        return float(config.safety.stale_after_s)
    return 3 * interval_s(getattr(config.schedule, source))


async def health(config: Config, store: Store, *, now: float) -> dict[str, Any]:
    """Liveness plus, per enabled source, its state and last success; unhealthy if failing or stale."""
    states = await store.source_states()
    sources: dict[str, Any] = {}
    healthy = True
    for source in config.enabled_sources:
        state = states.get(source, {})
        last_success = state.get("last_success_at")
        limit = stale_after_s(config, source)
        stale = last_success is not None and now - last_success > limit
        failing = state.get("state") == "failing"
        if failing:
            status = SourceHealth.FAILING
        elif stale:
            status = SourceHealth.STALE
        elif last_success:
            status = SourceHealth.OK
        else:
            status = SourceHealth.WAITING
        healthy = healthy and not failing and not stale
        sources[source] = {
            "status": str(status),
            "last_success_at": last_success,
            "consecutive_failures": state.get("consecutive_failures", 0),
            "stale_after_s": limit,
        }
    dead = len(await store.dead_letters())
    held = len(await store.held_deletions())
    return {
        "healthy": healthy,
        "sources": sources,
        "queue": await store.queue_depth(),
        # Counts and states only: they need the admin, but restarting syncd would not help.
        "dead_letters": {"count": dead, "status": "attention" if dead else "ok"},
        "held_deletions": {"count": held, "status": "attention" if held else "ok"},
    }


async def refresh_gauges(config: Config, store: Store, *, now: float) -> None:
    """One school's gauges, labelled with its ``org_id``."""
    org_id = config.chengjiyun.org_id
    depth = await store.queue_depth()
    for kind in ("addUser", "updateUser", "classStatus", "deleteUser"):
        QUEUE_DEPTH.labels(org_id=org_id, kind=kind).set(depth.get(kind, 0))
    HELD_DELETIONS.labels(org_id=org_id).set(len(await store.held_deletions()))
    DEAD_LETTERS.labels(org_id=org_id).set(len(await store.dead_letters()))
    for source, state in (await store.source_states()).items():
        if state.get("last_success_at"):
            last = state["last_success_at"]
            LAST_SUCCESS.labels(org_id=org_id, source=source).set(last)
            SECONDS_SINCE_SUCCESS.labels(org_id=org_id, source=source).set(now - last)
