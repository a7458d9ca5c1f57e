"""Desired records vs what Chengjiyun has acknowledged → what to send. Pure and O(n).

Modelled on kopf's ``structs/diffs.py``: both sides are normalised snapshots, the result is an
immutable value, and nothing here touches the network or the database. The safety rules live
here, so they are tested as plain functions:

* a source (or one account) that failed this cycle contributes no deletions for what it owns;
* a user is deleted only once it has been missing from ``delete_after_cycles`` consecutive
  complete polls; if it comes back first, nothing is sent;
* deletions over ``max_deletes`` / ``max_delete_fraction`` are held (unless approved), and so is
  a class-status change that would make too many class statuses vanish at once;
* a change updateUser cannot carry is sent another way or reported, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from syncd.core.model import PUSHED_USER_FIELDS, ClassStatus, User

__all__ = [
    "CLEARABLE_FIELDS",
    "AckedUser",
    "SafetyLimits",
    "SourceDiff",
    "UserUpdate",
    "diff_source",
    "field_changes",
    "unclearable_fields",
]


class SafetyLimits(Protocol):
    """The ``[safety]`` settings the deletion rules need (the config's section satisfies it)."""

    @property
    def delete_after_cycles(self) -> int: ...
    @property
    def max_deletes(self) -> int: ...
    @property
    def max_delete_fraction(self) -> float: ...


_UPDATABLE = tuple(f for f in PUSHED_USER_FIELDS if f not in ("id", "roleList"))

# Fields updateUser can clear, and the value that clears them (gender accepts "").
CLEARABLE_FIELDS: Mapping[str, Any] = MappingProxyType({"gender": ""})


@dataclass(frozen=True, slots=True)
class AckedUser:
    """A user as Chengjiyun acknowledged it, with how many complete polls it has been missing from."""

    user: User
    missing_cycles: int = 0


@dataclass(frozen=True, slots=True)
class UserUpdate:
    """``changed`` holds the pushed fields that differ, as (field, new value) pairs.

    No pairs means the change is in fields Chengjiyun does not take (studentList, owners):
    store it, send nothing.
    """

    user: User
    changed: tuple[tuple[str, Any], ...] = ()

    @property
    def changes(self) -> dict[str, Any]:
        """The updateUser element, ``{"id": …}`` plus the changed fields (a fresh dict each time)."""
        return {"id": self.user.id, **dict(self.changed)}

    @property
    def sends(self) -> bool:
        return bool(self.changed)


def _no_missing() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True)
class SourceDiff:
    """What one source's cycle sends and stores.

    ``unclearable``: (user id, field) pairs whose value became unknown at the source but which
    Chengjiyun keeps, as the protocol cannot clear them. ``class_statuses_held``: keys that would
    have vanished when the safety limits held the whole class-status change (then
    ``class_statuses`` is the stored set and nothing is announced).
    """

    source: str
    adds: tuple[User, ...] = ()
    updates: tuple[UserUpdate, ...] = ()
    deletes: tuple[User, ...] = ()
    held: tuple[tuple[User, str], ...] = ()
    missing: Mapping[str, int] = field(default_factory=_no_missing)
    unchanged_ids: frozenset[str] = frozenset()
    class_statuses: Mapping[str, ClassStatus] | None = None
    class_status_changed: bool = False
    warnings: tuple[str, ...] = ()
    unclearable: tuple[tuple[str, str], ...] = ()
    class_statuses_held: tuple[str, ...] = ()
    class_statuses_held_reason: str | None = None

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

    A cleared gender is sent as ``""``; other fields that become unknown cannot be cleared
    through updateUser, so they are left out (see ``unclearable_fields``).
    """
    before, after = old.pushed(), new.pushed()
    changes: dict[str, Any] = {"id": new.id}
    for name in _UPDATABLE:
        if name in after:
            if before.get(name) != after[name]:
                changes[name] = after[name]
        elif name in before and name in CLEARABLE_FIELDS:
            changes[name] = CLEARABLE_FIELDS[name]
    return changes


def unclearable_fields(old: User, new: User) -> tuple[str, ...]:
    """Pushed fields known in ``old``, unknown in ``new``, that updateUser cannot clear."""
    before, after = old.pushed(), new.pushed()
    return tuple(
        name
        for name in _UPDATABLE
        if name in before and name not in after and name not in CLEARABLE_FIELDS
    )


@dataclass(frozen=True, slots=True)
class _UserChanges:
    adds: list[User]
    updates: list[UserUpdate]
    unchanged: set[str]
    unclearable: list[tuple[str, str]]
    warnings: list[str]


def _user_changes(
    desired: Mapping[str, User], acknowledged: Mapping[str, AckedUser]
) -> _UserChanges:
    """Adds, updates and what cannot be sent. A role change is an add of the whole record:
    updateUser has no roleList, and addUser of an existing id replaces it."""
    out = _UserChanges([], [], set(), [], [])
    for user_id, user in desired.items():
        known = acknowledged.get(user_id)
        if known is None or known.user.roles != user.roles:
            out.adds.append(user)
        elif known.user != user or known.user.owners != user.owners:
            changed = field_changes(known.user, user)
            del changed["id"]
            out.updates.append(UserUpdate(user, tuple(changed.items())))
            for name in unclearable_fields(known.user, user):
                out.unclearable.append((user_id, name))
                out.warnings.append(
                    f"{user_id}: {name} is no longer known at the source, but updateUser cannot "
                    f"clear it, so Chengjiyun keeps {known.user.pushed()[name]!r}"
                )
        else:
            out.unchanged.add(user_id)
    return out


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
    class_statuses_approved: bool = False,
    claimed_elsewhere: Set[str] = frozenset(),
) -> SourceDiff:
    """One source's diff. ``claimed_elsewhere``: ids another source desires this cycle; they
    are handed over (never deleted nor counted missing here), so an id moving between sources
    (a config admin who appears in epaas) is not deleted at Chengjiyun by its old owner.
    ``class_statuses_approved`` releases a class-status change held by the safety limits."""
    changes = _user_changes(desired, acknowledged)
    due: list[User] = []
    missing: dict[str, int] = {}
    for user_id, known in acknowledged.items():
        if user_id in desired or user_id in claimed_elsewhere:
            continue
        protected = not complete or bool(known.user.owners & failed_owners)
        count = known.missing_cycles if protected else known.missing_cycles + 1
        if not protected and count >= safety.delete_after_cycles:
            due.append(known.user)
        # Due ones keep their counter too, so a queued, held or dead-lettered deletion is not
        # withdrawn by the next cycle resetting it to zero.
        missing[user_id] = count

    deletes, held = _apply_safety(due, approved_ids, safety, population=len(acknowledged))
    statuses = _class_statuses(
        desired_class_statuses,
        stored_class_statuses,
        complete=complete,
        approved=class_statuses_approved,
        safety=safety,
    )
    warnings = changes.warnings + ([statuses.reason] if statuses.reason else [])
    return SourceDiff(
        source=source,
        adds=tuple(sorted(changes.adds, key=lambda u: u.id)),
        updates=tuple(sorted(changes.updates, key=lambda u: u.user.id)),
        deletes=tuple(sorted(deletes, key=lambda u: u.id)),
        held=tuple(sorted(held, key=lambda pair: pair[0].id)),
        missing=MappingProxyType(missing),
        unchanged_ids=frozenset(changes.unchanged),
        class_statuses=statuses.statuses,
        class_status_changed=statuses.changed,
        warnings=tuple(warnings),
        unclearable=tuple(sorted(changes.unclearable)),
        class_statuses_held=statuses.held,
        class_statuses_held_reason=statuses.reason,
    )


@dataclass(frozen=True, slots=True)
class _StatusOutcome:
    statuses: Mapping[str, ClassStatus] | None
    changed: bool = False
    held: tuple[str, ...] = ()
    reason: str | None = None


def _class_statuses(
    desired: Mapping[str, ClassStatus] | None,
    stored: Mapping[str, ClassStatus],
    *,
    complete: bool,
    approved: bool,
    safety: SafetyLimits,
) -> _StatusOutcome:
    """The class statuses to store. A partial poll never makes a class disappear; too many
    vanishing at once (a broken upstream, a wrong school) hold the whole change until approved."""
    if desired is None:
        return _StatusOutcome(None)
    statuses = dict(desired)
    if not complete:
        for key, status in stored.items():
            statuses.setdefault(key, status)
    vanishing = tuple(sorted(set(stored) - set(statuses)))
    limit = _over_limits(len(vanishing), len(stored), safety)
    if limit and not approved:
        reason = (
            f"{len(vanishing)} of {len(stored)} class statuses would vanish in one cycle, "
            f"over {limit}; the class-status change is held until approved"
        )
        return _StatusOutcome(MappingProxyType(dict(stored)), held=vanishing, reason=reason)
    changed = {k: s.content_hash() for k, s in statuses.items()} != {
        k: s.content_hash() for k, s in stored.items()
    }
    return _StatusOutcome(MappingProxyType(statuses), changed=changed)


def _over_limits(count: int, population: int, safety: SafetyLimits) -> str | None:
    """Which safety limit ``count`` removals out of ``population`` exceed, or None."""
    if count > safety.max_deletes:
        return f"max_deletes = {safety.max_deletes}"
    if population > 0 and count / population > safety.max_delete_fraction:
        return f"max_delete_fraction = {safety.max_delete_fraction:g}"
    return None


def _apply_safety(
    due: list[User], approved_ids: frozenset[str], safety: SafetyLimits, *, population: int
) -> tuple[list[User], list[tuple[User, str]]]:
    """Hold every due deletion that is not approved when there are too many of them at once."""
    limit = _over_limits(len(due), population, safety)
    if limit is None:
        return due, []
    reason = (
        f"{len(due)} deletions in one cycle of {population} users exceeds {limit}"
        "; run `syncd approve-deletes` to release them"
    )
    deletes = [user for user in due if user.id in approved_ids]
    held = [(user, reason) for user in due if user.id not in approved_ids]
    return deletes, held
