"""Prometheus metrics (issue 4). One registry per process, so tests can read values directly."""

from __future__ import annotations

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
]

REGISTRY = CollectorRegistry(auto_describe=True)

CYCLES = Counter(
    "syncd_cycles",
    "Source polls by outcome (ok, partial, failed, skipped)",
    ["source", "outcome"],
    registry=REGISTRY,
)
OPERATIONS = Counter(
    "syncd_operations",
    "Outbound Chengjiyun operations by kind (addUser, updateUser, classStatus, deleteUser) and "
    "result (sent, retried, dead)",
    ["kind", "result"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "syncd_queue_depth", "Operations waiting in the outbox", ["kind"], registry=REGISTRY
)
HELD_DELETIONS = Gauge(
    "syncd_held_deletions", "Deletions held by the [safety] limits", registry=REGISTRY
)
DEAD_LETTERS = Gauge(
    "syncd_dead_letters",
    "Operations Chengjiyun refused for good, waiting for the admin",
    registry=REGISTRY,
)
CYCLE_DURATION = Histogram(
    "syncd_cycle_duration_seconds",
    "How long one source's poll, mapping and diff took",
    ["source"],
    registry=REGISTRY,
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
PUSH_ANSWERS = Counter(
    "syncd_chengjiyun_answers",
    "Requests to Chengjiyun by endpoint and answer (its code, HTTP status, or 'none')",
    ["endpoint", "answer"],
    registry=REGISTRY,
)
LAST_SUCCESS = Gauge(
    "syncd_last_success_timestamp_seconds",
    "Unix time of the last successful poll of each source",
    ["source"],
    registry=REGISTRY,
)
UPSTREAM_LATENCY = Histogram(
    "syncd_upstream_request_seconds",
    "Latency of requests to each upstream service",
    ["service"],
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SECONDS_SINCE_SUCCESS = Gauge(
    "syncd_seconds_since_last_success",
    "Seconds since the last successful poll of each source",
    ["source"],
    registry=REGISTRY,
)
