"""The named kinds and states syncd talks about, as StrEnums (their values are what the
database, the logs and ``--json`` outputs spell)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["KIND_ORDER", "OperationKind", "SourceName", "SourceOutcome", "SourceState"]


class OperationKind(StrEnum):
    """One outbound operation; the values are Chengjiyun's endpoint names."""

    ADD = "addUser"
    UPDATE = "updateUser"
    NOTIFY = "classStatus"
    DELETE = "deleteUser"

    @property
    def batched(self) -> bool:
        """The user endpoints take arrays; the class-status notify has no body."""
        return self is not OperationKind.NOTIFY


# Order within a drain: a class status never names a teacher Chengjiyun does not know yet, and
# deletions go last.
KIND_ORDER = (OperationKind.ADD, OperationKind.UPDATE, OperationKind.NOTIFY, OperationKind.DELETE)


class SourceName(StrEnum):
    CLASSCHARTS = "classcharts"
    EPAAS = "epaas"


class SourceOutcome(StrEnum):
    """How one poll of one source went."""

    OK = "ok"
    PARTIAL = "partial"  # answered, but an account failed or the answer was incomplete
    FAILED = "failed"  # nothing usable: no operations at all from it this cycle


class SourceState(StrEnum):
    """A source's health across polls."""

    OK = "ok"
    ERRORING = "erroring"  # the last poll failed
    FAILING = "failing"  # several polls in a row failed: polled with back-off, alerted
