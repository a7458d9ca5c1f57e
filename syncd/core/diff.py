"""Desired records vs what Chengjiyun has acknowledged → what to send. Pure and O(n).

Modelled on kopf's ``structs/diffs.py``: both sides are normalised snapshots, the result is an
immutable value, and nothing here touches the network or the database. The safety rules of
DESIGN "Invariants" live here, so they are tested as plain functions:

* a source (or one account) that failed this cycle contributes no deletions for what it owns;
* a user is deleted only once it has been missing from ``delete_after_cycles`` consecutive
  complete polls; if it comes back first, nothing is sent;
* deletions over ``max_deletes`` / ``max_delete_fraction`` are held (unless approved).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from syncd.core.model import PUSHED_USER_FIELDS, ClassStatus, User

__all__ = ["AckedUser", "SourceDiff", "UserUpdate", "diff_source", "field_changes"]


class SafetyLimits(Protocol):
    """The ``[safety]`` settings the deletion rules need (the config's section satisfies it)."""

    @property
    def delete_after_cycles(self) -> int: ...
    @property
    def max_deletes(self) -> int: ...
    @property
    def max_delete_fraction(self) -> float: ...


_UPDATABLE = tuple(f for f in PUSHED_USER_FIELDS if f not in ("id", "roleList"))


@dataclass(frozen=True, slots=True)
class AckedUser:
    """A user as Chengjiyun acknowledged it, with how many complete polls it has been missing from."""

    user: User
    missing_cycles: int = 0


@dataclass(frozen=True, slots=True)
class UserUpdate:
    """``changes`` is the updateUser element: ``{"id": …}`` plus the pushed fields that changed.

    Only ``{"id"}`` means the change is in fields Chengjiyun does not take (studentList, owners):
    store it, send nothing.
    """

    user: User
    changes: dict[str, Any]

    @property
    def sends(self) -> bool:
        return len(self.changes) > 1


@dataclass(frozen=True)
class SourceDiff:
    source: str
    adds: tuple[User, ...] = ()
    updates: tuple[UserUpdate, ...] = ()
    deletes: tuple[User, ...] = ()
    held: tuple[tuple[User, str], ...] = ()
    missing: Mapping[str, int] = None  # type: ignore[assignment]  # filled in __post_init__
    unchanged_ids: frozenset[str] = frozenset()
    class_statuses: Mapping[str, ClassStatus] | None = None
    class_status_changed: bool = False
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.missing is None:
            object.__setattr__(self, "missing", {})

    @property
    def is_empty(self) -> bool:
        """Nothing to send (store-only updates and missing counters may still change)."""
        return not (
            self.adds
            or any(u.sends for u in self.updates)
            or self.deletes
            or self.class_status_changed
        )


def field_changes(old: User, new: User) -> dict[str, Any]:
    """The updateUser element for ``old`` → ``new``: id plus every pushed field that differs.

    A field that becomes unknown cannot be unset through updateUser (the seed has no way to say
    "no grade"), so it is left out.
    """
    before, after = old.pushed(), new.pushed()
    changes: dict[str, Any] = {"id": new.id}
    for name in _UPDATABLE:
        if name in after and before.get(name) != after[name]:
            changes[name] = after[name]
    return changes


def diff_source(
    *,
    source: str,
    desired: Mapping[str, User],
    acknowledged: Mapping[str, AckedUser],
    complete: bool,
    failed_owners: frozenset[str],
    approved_ids: frozenset[str],
    safety: SafetyLimits,
    desired_class_statuses: Mapping[str, ClassStatus] | None,
    stored_class_statuses: Mapping[str, ClassStatus],
) -> SourceDiff:
    adds: list[User] = []
    updates: list[UserUpdate] = []
    unchanged: set[str] = set()
    warnings: list[str] = []
    for user_id, user in desired.items():
        known = acknowledged.get(user_id)
        if known is None:
            adds.append(user)
        elif (
            known.user != user or known.user.owners != user.owners
        ):  # field equality: no hashing needed
            if known.user.roles != user.roles:
                warnings.append(
                    f"{user_id}: roles changed {list(known.user.roles)} → {list(user.roles)}; "
                    "updateUser cannot change roles, so Chengjiyun keeps the old ones"
                )
            updates.append(UserUpdate(user, field_changes(known.user, user)))
        else:
            unchanged.add(user_id)

    due: list[User] = []
    missing: dict[str, int] = {}
    for user_id, known in acknowledged.items():
        if user_id in desired:
            continue
        protected = not complete or bool(known.user.owners & failed_owners)
        count = known.missing_cycles if protected else known.missing_cycles + 1
        if not protected and count >= safety.delete_after_cycles:
            due.append(known.user)
        # Due ones keep their counter too, so a queued, held or dead-lettered deletion is not
        # withdrawn by the next cycle resetting it to zero.
        missing[user_id] = count

    deletes, held = _apply_safety(due, approved_ids, safety, population=len(acknowledged))

    statuses: dict[str, ClassStatus] | None = None
    changed = False
    if desired_class_statuses is not None:
        statuses = dict(desired_class_statuses)
        if not complete:  # a partial poll never makes a class disappear
            for key, status in stored_class_statuses.items():
                statuses.setdefault(key, status)
        changed = {k: s.content_hash() for k, s in statuses.items()} != {
            k: s.content_hash() for k, s in stored_class_statuses.items()
        }

    return SourceDiff(
        source=source,
        adds=tuple(sorted(adds, key=lambda u: u.id)),
        updates=tuple(sorted(updates, key=lambda u: u.user.id)),
        deletes=tuple(sorted(deletes, key=lambda u: u.id)),
        held=tuple(sorted(held, key=lambda pair: pair[0].id)),
        missing=missing,
        unchanged_ids=frozenset(unchanged),
        class_statuses=statuses,
        class_status_changed=changed,
        warnings=tuple(warnings),
    )


def _apply_safety(
    due: list[User], approved_ids: frozenset[str], safety: SafetyLimits, *, population: int
) -> tuple[list[User], list[tuple[User, str]]]:
    """Hold every due deletion that is not approved when there are too many of them at once."""
    over_count = len(due) > safety.max_deletes
    over_fraction = population > 0 and len(due) / population > safety.max_delete_fraction
    if not (over_count or over_fraction):
        return due, []
    reason = (
        f"{len(due)} deletions in one cycle of {population} users exceeds "
        + (
            f"max_deletes = {safety.max_deletes}"
            if over_count
            else f"max_delete_fraction = {safety.max_delete_fraction:g}"
        )
        + "; run `syncd approve-deletes` to release them"
    )
    deletes = [user for user in due if user.id in approved_ids]
    held = [(user, reason) for user in due if user.id not in approved_ids]
    return deletes, held
