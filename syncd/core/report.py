"""What a cycle and a drain produced, as plain records that renderers and ``--json`` read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from syncd.core.diff import AckedUser, SourceDiff
from syncd.core.kinds import KIND_ORDER, SourceOutcome

__all__ = ["CycleReport", "DrainReport", "SourceReport"]


@dataclass(frozen=True)
class SourceReport:
    source: str
    outcome: SourceOutcome
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    users: int = 0
    classes: int = 0
    diff: SourceDiff | None = None
    acknowledged: Mapping[str, AckedUser] = field(default_factory=dict)
    duration_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Per-source totals, as the cycle history and the daemon's log line keep them."""
        diff = self.diff
        return {
            "outcome": str(self.outcome),
            "errors": list(self.errors),
            "warnings": len(self.warnings),
            "users": self.users,
            "classes": self.classes,
            "adds": len(diff.adds) if diff else 0,
            "updates": sum(1 for u in diff.updates if u.sends) if diff else 0,
            "deletes": len(diff.deletes) if diff else 0,
            "held": len(diff.held) if diff else 0,
            "class_status_changed": bool(diff and diff.class_status_changed),
            "duration_s": round(self.duration_s, 3),
        }


@dataclass(frozen=True)
class CycleReport:
    sources: Mapping[str, SourceReport]

    @property
    def failed(self) -> bool:
        """Something needs the admin: a source (or one of its accounts) did not answer fully."""
        return any(report.outcome is not SourceOutcome.OK for report in self.sources.values())

    @property
    def outcome(self) -> SourceOutcome:
        outcomes = {report.outcome for report in self.sources.values()}
        if outcomes <= {SourceOutcome.OK}:
            return SourceOutcome.OK
        if outcomes == {SourceOutcome.FAILED}:
            return SourceOutcome.FAILED
        return SourceOutcome.PARTIAL


def _zero_counts() -> dict[str, int]:
    return dict.fromkeys(map(str, KIND_ORDER), 0)


@dataclass
class DrainReport:
    """Filled in as one drain goes (so not frozen); read once it is over."""

    sent: dict[str, int] = field(default_factory=_zero_counts)
    requests: int = 0
    retried: int = 0
    healed: int = 0
    dead: list[dict[str, Any]] = field(default_factory=list)
    remaining: int = 0
    stopped: str | None = None  # why it ended with operations still queued
    refused: str | None = None  # Chengjiyun's answer when it refused the whole account
    refused_hint: str | None = None
    last_transient: str | None = None  # the last transient failure's reason
