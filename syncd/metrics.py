"""Prometheus metrics. One registry per process, so tests can read values directly; every metric
carries the school's ``org_id``, since one process may sync several schools."""

from __future__ import annotations

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "CYCLE_DURATION",
    "DEAD_LETTERS",
    "PUSH_ANSWERS",
    "CYCLES",
    "HELD_DELETIONS",
    "LAST_SUCCESS",
    "OPERATIONS",
    "QUEUE_DEPTH",
    "REGISTRY",
    "SECONDS_SINCE_SUCCESS",
    "UPSTREAM_LATENCY",
    "school_label",
]

REGISTRY = CollectorRegistry(auto_describe=True)

CYCLES = Counter(
    "syncd_cycles",
    "Source polls by outcome (ok, partial, failed, skipped)",
    ["org_id", "source", "outcome"],
    registry=REGISTRY,
)
OPERATIONS = Counter(
    "syncd_operations",
    "Outbound Chengjiyun operations by kind (addUser, updateUser, classStatus, deleteUser) and "
    "result (sent, retried, dead)",
    ["org_id", "kind", "result"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "syncd_queue_depth", "Operations waiting in the outbox", ["org_id", "kind"], registry=REGISTRY
)
HELD_DELETIONS = Gauge(
    "syncd_held_deletions",
    "Deletions held by the [safety] limits",
    ["org_id"],
    registry=REGISTRY,
)
DEAD_LETTERS = Gauge(
    "syncd_dead_letters",
    "Operations Chengjiyun refused for good, waiting for the admin",
    ["org_id"],
    registry=REGISTRY,
)
CYCLE_DURATION = Histogram(
    "syncd_cycle_duration_seconds",
    "How long one source's poll, mapping and diff took",
    ["org_id", "source"],
    registry=REGISTRY,
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
PUSH_ANSWERS = Counter(
    "syncd_chengjiyun_answers",
    "Requests to Chengjiyun by endpoint and answer (its code, HTTP status, or 'none')",
    ["org_id", "endpoint", "answer"],
    registry=REGISTRY,
)
LAST_SUCCESS = Gauge(
    "syncd_last_success_timestamp_seconds",
    "Unix time of the last successful poll of each source",
    ["org_id", "source"],
    registry=REGISTRY,
)
UPSTREAM_LATENCY = Histogram(
    "syncd_upstream_request_seconds",
    "Latency of requests to each upstream service",
    ["org_id", "service"],
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SECONDS_SINCE_SUCCESS = Gauge(
    "syncd_seconds_since_last_success",
    "Seconds since the last successful poll of each source",
    ["org_id", "source"],
    registry=REGISTRY,
)


def school_label() -> str:
    """The ``org_id`` of the school whose work is running: the daemon binds it to the context of
    each school's tasks (it also names the school in every log line), so the clients need not
    carry it."""
    return str(structlog.contextvars.get_contextvars().get("org_id", ""))
