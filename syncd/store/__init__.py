"""Everything syncd keeps in its SQLite file; the only package that holds SQL.

``Store`` opens the file and hands out one repository per group of tables: ``snapshot`` (what
Chengjiyun holds and what the last cycle wanted), ``outbox`` (operations waiting and dead
letters) and ``journal`` (cycles, source health, history) and ``exams`` (imported exam results). Its own methods are the few units of
work that touch several groups in one transaction: a cycle's state with its operations, a claim,
an acknowledgement, a dead letter.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd.core.diff import SourceDiff
from syncd.core.kinds import KIND_ORDER, OperationKind
from syncd.core.model import ClassStatus, User
from syncd.core.plan import dumps, needs_notify, plan_operations
from syncd.exceptions import StoreError
from syncd.store.database import Database, GroupCommit
from syncd.store.exams import Exams
from syncd.store.journal import Journal
from syncd.store.outbox import Outbox, QueuedOperation
from syncd.store.schema import MIGRATIONS, SCHEMA_VERSION
from syncd.store.snapshot import NOTIFIED_DIGEST_KEY, Snapshot

__all__ = [
    "IN_FLIGHT_WAIT_S",
    "MIGRATIONS",
    "NOTIFIED_DIGEST_KEY",
    "SCHEMA_VERSION",
    "Claim",
    "QueuedOperation",
    "Store",
    "StoreError",
]


# A claim's wait when everything left of the current kind is in flight: no time makes more due.
IN_FLIGHT_WAIT_S = math.inf
# The most rows one query of Store.claims takes (more batches take another query): their ids
# become SQL parameters, and a SQLite built with its defaults allows no more than 999 before
# 3.32.
CLAIM_ROWS_MAX = 999


@dataclass(frozen=True, slots=True)
class Claim:
    """The drain's next step: a batch to send, or how long to wait, or (neither) nothing left."""

    batch: tuple[QueuedOperation, ...] = ()
    wait_s: float | None = None
    digest: str | None = None  # the class-status set a notify announces

    @property
    def empty(self) -> bool:
        return not self.batch and self.wait_s is None


@dataclass(frozen=True, slots=True)
class _Acknowledgement:
    claim: Claim
    answer: str
    code: int | None


class Store:
    """The open database and its repositories."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self.snapshot = Snapshot(database)
        self.outbox = Outbox(database)
        self.journal = Journal(database)
        self.exams = Exams(database)
        self._acknowledgements = GroupCommit(database, self._record_acknowledgements)

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        readonly: bool = False,
        backup: Path | None = None,
        fresh: bool = True,
    ) -> Store:
        """Open the database. With ``backup`` and not ``fresh``, a missing or empty database
        whose backup exists is refused: a silent new first sync would re-add everybody and never
        delete the pupils who left meanwhile."""
        path = Path(path)
        if not readonly and not fresh and backup is not None:
            _refuse_silent_fresh_start(path, backup)
        return cls(await Database.open(path, readonly=readonly, backup=backup))

    @property
    def path(self) -> Path:
        return self._database.path

    @property
    def readonly(self) -> bool:
        return self._database.readonly

    async def close(self) -> None:
        await self._database.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def backup_to(self, target: Path, *, unless_from: float | None = None) -> bool:
        return await self._database.backup_to(target, unless_from=unless_from)

    # --- units of work -----------------------------------------------------------------------

    async def commit_cycle(
        self,
        diff: SourceDiff,
        desired: Mapping[str, User],
        *,
        may_delete_orphans: bool,
        full: bool = False,
    ) -> dict[str, int]:
        """Write one source's new desired state and the operations it implies in ONE transaction.

        Operations identical to a dead letter are not queued again until ``retry-dead`` or until
        the record changes. ``may_delete_orphans``: the poll was complete, so adds in doubt for
        users no longer wanted are deleted. ``full``: a full reconcile, every unchanged user is
        re-sent as addUser and the class statuses are announced again. Returns counts of what
        was queued, by kind.
        """
        async with self._database.write() as db:
            await self.snapshot.write_cycle_state(db, diff, desired)
            orphans = (
                await self.snapshot.unacknowledged_in_doubt(db, diff.source)
                if may_delete_orphans
                else frozenset()
            )
            plan = plan_operations(
                diff,
                dead=await self.outbox.dead_keys(db, diff.source),
                orphans=orphans - desired.keys(),
                reconcile=[desired[i] for i in sorted(diff.unchanged_ids)] if full else (),
            )
            queued = await self.outbox.replace_pending(db, plan)
            if needs_notify(
                changed=diff.class_status_changed or (full and diff.class_statuses is not None),
                current_digest=await self.snapshot.current_digest(db),
                notified_digest=await self.snapshot.notified_digest(db),
            ):
                queued[OperationKind.NOTIFY] = await self.outbox.queue_notify(db, diff.source)
        return queued

    async def claim(self, batch_size: int, *, in_flight: Collection[QueuedOperation] = ()) -> Claim:
        """The next batch in drain order (addUser, updateUser, classStatus, deleteUser).

        Rows the snapshot already reflects are dropped instead of sent: in the daemon a cycle
        may re-queue an operation whose request is on the wire. Adds are marked *in doubt* before
        they leave, so one whose answer is lost is still deleted if its user goes away.

        ``in_flight`` are the rows of requests sent and not yet answered. They are never claimed
        again, and they hold their kind's phase: while any is unanswered no later kind is
        claimed, and the claim says to wait (``wait_s`` is ``IN_FLIGHT_WAIT_S``, infinite: only an
        answer can change anything) when nothing else of that kind is due.
        """
        return (await self.claims(batch_size, 1, in_flight=in_flight))[0]

    async def claims(
        self, batch_size: int, count: int, *, in_flight: Collection[QueuedOperation] = ()
    ) -> list[Claim]:
        """Up to ``count`` claims as :meth:`claim` makes them, in ONE transaction and with one
        query per kind, so a window's worth of batches costs one commit; each batch counts those
        before it as in flight. Every claim but the last holds a batch; the last may instead say
        to wait, or (empty) that nothing is left."""
        claimed: list[Claim] = []
        busy = list(in_flight)
        async with self._database.write() as db:
            while len(claimed) < count:
                found = await self._next_claims(db, batch_size, count - len(claimed), busy)
                claimed.extend(found)
                if found and not found[-1].batch:
                    break
                busy.extend(row for claim in found for row in claim.batch)
        return claimed

    async def _next_claims(
        self, db: Any, batch_size: int, count: int, in_flight: Collection[QueuedOperation]
    ) -> list[Claim]:
        for kind in KIND_ORDER:
            claims = await self._claim_kind(db, kind, batch_size, count, in_flight)
            if claims is not None:
                return claims
        return [Claim()]

    async def _claim_kind(
        self,
        db: Any,
        kind: OperationKind,
        batch_size: int,
        count: int,
        in_flight: Collection[QueuedOperation],
    ) -> list[Claim] | None:
        """Up to ``count`` batches of ``kind``, or one claim saying to wait; None when the kind
        has nothing left, [] when everything looked at was stale (and is gone: look again)."""
        busy = any(row.kind is kind for row in in_flight)
        if busy and kind is OperationKind.NOTIFY:
            return [Claim(wait_s=IN_FLIGHT_WAIT_S)]  # one notify announces everything
        limit = batch_size if kind.batched else 1
        batches = max(1, min(count, CLAIM_ROWS_MAX // limit)) if kind.batched else 1
        rows, wait_s = await self.outbox.due(db, kind, limit * batches, in_flight=in_flight)
        if wait_s is None:
            return [Claim(wait_s=IN_FLIGHT_WAIT_S)] if busy else None
        if not rows:
            return [Claim(wait_s=wait_s)]
        if kind is OperationKind.NOTIFY:
            return [Claim(batch=tuple(rows), digest=await self.snapshot.current_digest(db))]
        ids = [row.record_id for row in rows if row.record_id is not None]
        acked = await self.snapshot.acknowledged_hashes(db, ids)
        doubtful = await self.snapshot.in_doubt_among(db, ids)
        if kind is OperationKind.DELETE:
            stale = [r for r in rows if r.record_id not in acked and r.record_id not in doubtful]
        else:
            stale = [r for r in rows if not r.force and acked.get(r.record_id or "") == r.hash]
        await self.outbox.remove(db, stale)
        stale_seqs = {row.seq for row in stale}
        fresh = [row for row in rows if row.seq not in stale_seqs]
        if kind is OperationKind.ADD and fresh:
            await self.snapshot.mark_in_doubt(
                db, [(row.record_id or "", row.source or "") for row in fresh]
            )
        return [Claim(batch=tuple(fresh[i : i + limit])) for i in range(0, len(fresh), limit)]

    async def acknowledge(
        self, claim: Claim, *, answer: str = "success", code: int | None = 0
    ) -> None:
        """Chengjiyun confirmed the batch: record it in the snapshot and leave the outbox.

        Acknowledgements that arrive while another is being committed share the next
        transaction (:class:`GroupCommit`); each returns once its own is committed.
        """
        await self._acknowledgements.submit(_Acknowledgement(claim, answer, code))

    async def _record_acknowledgements(
        self, db: Any, acknowledgements: list[_Acknowledgement]
    ) -> None:
        """A group's acknowledgements with one statement per table, not one per request: each
        statement is a trip to SQLite's thread."""
        rows = [row for acknowledgement in acknowledgements for row in acknowledgement.claim.batch]
        await self.outbox.remove(db, rows)
        users = [
            (row.record_id or "", row.source or "", row.record or "{}", row.hash or "")
            for row in rows
            if row.kind in (OperationKind.ADD, OperationKind.UPDATE)
        ]
        if users:
            await self.snapshot.record_acknowledged_users(db, users)
        deleted = [row.record_id or "" for row in rows if row.kind is OperationKind.DELETE]
        if deleted:
            await self.snapshot.record_deleted_users(db, deleted)
        answers: dict[tuple[int | None, str], list[QueuedOperation]] = {}
        for acknowledgement in acknowledgements:
            if acknowledgement.claim.batch[0].kind is OperationKind.NOTIFY:
                await self.snapshot.record_notified(db, acknowledgement.claim.digest or "")
            key = (acknowledgement.code, acknowledgement.answer)
            answers.setdefault(key, []).extend(acknowledgement.claim.batch)
        for (code, answer), answered in answers.items():
            await self.journal.record_sent(
                db, _entries(answered), outcome="sent", code=code, answer=answer
            )

    async def dead_letter(
        self, rows: Iterable[QueuedOperation], *, code: int | None, reason: str
    ) -> None:
        """Chengjiyun refused these records for good: keep them, with the reason, for the admin."""
        rows = tuple(rows)
        async with self._database.write() as db:
            await self.outbox.move_to_dead_letters(db, rows, code=code, reason=reason)
            if rows and rows[0].kind is OperationKind.ADD:
                # A refused add was not applied: it cannot be an orphan at Chengjiyun.
                await self.snapshot.clear_in_doubt(db, [row.record_id or "" for row in rows])
            await self.journal.record_sent(
                db, _entries(rows), outcome="dead", code=code, answer=reason
            )

    async def retry_later(
        self, rows: Iterable[QueuedOperation], *, delay_s: float, code: int | None, reason: str
    ) -> None:
        rows = tuple(rows)
        async with self._database.write() as db:
            await self.outbox.retry_later(db, rows, delay_s=delay_s, error=reason)
            await self.journal.record_sent(
                db, _entries(rows), outcome="retried", code=code, answer=reason
            )

    async def record_acknowledged(
        self, users: Iterable[User], statuses: Iterable[ClassStatus] = ()
    ) -> None:
        """Record users (and class statuses) as held by Chengjiyun without sending anything:
        for importing a known state, such as a school that was synced by other means."""
        async with self._database.write() as db:
            await self.snapshot.record_acknowledged_users(
                db, [(u.id, u.source, dumps(u.to_json()), u.content_hash()) for u in users]
            )
            await self.snapshot.add_class_statuses(db, statuses)

    # --- reads the pull API, status and health use -------------------------------------------

    async def served_users(self, role: str | None = None) -> list[dict[str, Any]]:
        return await self.snapshot.served_users(role)

    async def served_class_statuses(self) -> list[dict[str, Any]]:
        return await self.snapshot.served_class_statuses()

    async def snapshot_generation(self) -> int:
        return await self.snapshot.generation()

    async def queue_depth(self) -> dict[str, int]:
        return await self.outbox.depth()

    async def held_deletions(self) -> list[dict[str, Any]]:
        return await self.snapshot.held_deletions()

    async def dead_letters(self) -> list[dict[str, Any]]:
        return await self.outbox.dead_letters()

    async def source_states(self) -> dict[str, dict[str, Any]]:
        return await self.journal.source_states()

    async def recent_cycles(self, limit: int = 10) -> list[dict[str, Any]]:
        return await self.journal.recent_cycles(limit)


def _refuse_silent_fresh_start(path: Path, backup: Path) -> None:
    try:
        missing = not path.exists() or path.stat().st_size == 0
    except OSError:
        return  # Database.open reports an unreadable file with its own message
    if missing and backup.exists():
        raise StoreError(
            f"database {path} is missing or empty, but a backup exists at {backup}: restore it "
            "with `syncd restore-backup`, or start a new first sync anyway with --fresh (users "
            "who left since the backup then stay at Chengjiyun)"
        )


def _entries(rows: Iterable[QueuedOperation]) -> list[tuple[str, str | None, Any]]:
    return [(str(row.kind), row.record_id, row.payload) for row in rows]
