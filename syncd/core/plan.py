"""From a diff to the operations to queue: the policy half of the transactional outbox.

Pure: the store reads what it needs (dead letters, adds in doubt, the notified class-status
fingerprint), calls these functions inside its transaction and writes what they return.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from syncd.core.diff import SourceDiff
from syncd.core.kinds import OperationKind
from syncd.core.model import User

__all__ = [
    "DeadKey",
    "Operation",
    "SourcePlan",
    "class_status_digest",
    "dumps",
    "needs_notify",
    "orphan_ids",
    "plan_operations",
]

DeadKey = tuple[str, str | None, str]  # (kind, record id, fingerprint) of a dead letter


def dumps(value: Any) -> str:
    """The one JSON spelling syncd stores: sorted keys, raw UTF-8, no spaces."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Operation:
    """One element to send. ``user`` is the whole record stored on acknowledgement."""

    kind: OperationKind
    record_id: str | None
    payload: Any
    user: User | None = None
    force: bool = False  # a full reconcile: sent even if Chengjiyun acknowledged this content

    @property
    def fingerprint(self) -> str:
        """What makes two operations the same, so a dead letter is not re-sent every cycle."""
        if self.user is not None:
            return self.user.content_hash()
        return f"{self.kind}:{self.record_id}"

    @property
    def dead_key(self) -> DeadKey:
        return (str(self.kind), self.record_id, self.fingerprint)


@dataclass(frozen=True, slots=True)
class SourcePlan:
    """What one source's cycle queues, and which of its dead letters are no longer wanted."""

    source: str
    operations: tuple[Operation, ...]
    skipped_as_dead: int
    dead_to_forget: frozenset[DeadKey]


def plan_operations(
    diff: SourceDiff,
    *,
    dead: Iterable[DeadKey],
    orphans: Iterable[str] = (),
    reconcile: Iterable[User] = (),
) -> SourcePlan:
    """The operations a diff implies, minus those identical to a dead letter.

    ``orphans`` are ids whose addUser was sent without an answer and that are no longer wanted:
    Chengjiyun may hold them, so they are deleted all the same (a delete of an unknown id is
    harmless). ``reconcile`` (a full reconcile) are users re-sent as addUser although nothing
    changed, so drift at Chengjiyun is repaired. A dead letter stays only while the very same operation is still wanted; one whose
    record changed, or that is no longer needed, is forgotten (the history keeps its story).
    """
    wanted = [
        *(Operation(OperationKind.ADD, u.id, u.pushed(), u) for u in diff.adds),
        *(
            Operation(OperationKind.UPDATE, u.user.id, dict(u.changes), u.user)
            for u in diff.updates
            if u.sends
        ),
        *(Operation(OperationKind.ADD, u.id, u.pushed(), u, force=True) for u in reconcile),
        *(Operation(OperationKind.DELETE, u.id, u.id) for u in diff.deletes),
        *(Operation(OperationKind.DELETE, user_id, user_id) for user_id in sorted(orphans)),
    ]
    dead_keys = frozenset(dead)
    wanted_keys = {op.dead_key for op in wanted}
    kept = tuple(op for op in wanted if op.dead_key not in dead_keys)
    return SourcePlan(
        source=diff.source,
        operations=kept,
        skipped_as_dead=len(wanted) - len(kept),
        dead_to_forget=frozenset(key for key in dead_keys if key not in wanted_keys),
    )


def orphan_ids(
    in_doubt: Iterable[str], *, desired: Iterable[str], acknowledged: Iterable[str]
) -> frozenset[str]:
    """Adds in doubt for users who are neither wanted any more nor known as acknowledged."""
    return frozenset(in_doubt) - frozenset(desired) - frozenset(acknowledged)


def class_status_digest(hashes: Iterable[tuple[str, str]]) -> str:
    """One fingerprint of a whole set of class statuses, to tell whether Chengjiyun has seen it."""
    text = ",".join(f"{key}={value}" for key, value in sorted(hashes))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def needs_notify(*, changed: bool, current_digest: str, notified_digest: str | None) -> bool:
    """Chengjiyun re-reads class statuses only when told: tell it when the set differs from the
    one it was last told about (a notify lost to a crash is sent again)."""
    return changed or current_digest != (notified_digest or class_status_digest(()))
