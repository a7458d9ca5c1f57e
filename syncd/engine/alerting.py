"""What the engine tells the ``[alerts]`` channels: it turns a school's facts after each cycle
and each request to Chengjiyun into observations; the pure de-duplicator decides which are a
change of state worth one message."""

from __future__ import annotations

import time

from syncd.alerts import Alerter
from syncd.clients.chengjiyun import PushOutcome, PushResult
from syncd.core.alerts import Condition, Observation
from syncd.core.kinds import SourceState
from syncd.core.report import CycleReport
from syncd.engine.cycle import School
from syncd.server.app import stale_after_s

__all__ = ["UNREACHABLE_AFTER", "SchoolAlerts"]

UNREACHABLE_AFTER = 3  # transient failures in a row before Chengjiyun counts as unreachable


class SchoolAlerts:
    def __init__(self, school: School, alerter: Alerter) -> None:
        self._school = school
        self._alerter = alerter
        self._transient_in_row = 0

    async def after_cycle(self, report: CycleReport) -> None:
        school, now = self._school, time.time()
        for source in report.sources:
            if source not in school.health:
                continue
            record = await school.health[source].record()
            await self._alerter.observe(
                Observation(
                    Condition.SOURCE_HEALTH,
                    source,
                    bad=record.state is SourceState.FAILING,
                    summary=record.last_error or "",
                )
            )
            last = record.last_success_at
            stale = last is not None and now - last > stale_after_s(school.config, source)
            await self._alerter.observe(Observation(Condition.SOURCE_FRESHNESS, source, bad=stale))
        held = len(await school.store.snapshot.held_deletions())
        await self._alerter.observe(Observation(Condition.DELETIONS_HELD, count=held))
        dead = await school.store.outbox.dead_letter_count()
        await self._alerter.observe(Observation(Condition.DEAD_LETTERS, count=dead))

    async def after_request(self, result: PushResult) -> None:
        """Called by the outbound worker after every answer (or failure to get one)."""
        refused = result.outcome is PushOutcome.ACCOUNT_REFUSED
        await self._alerter.observe(
            Observation(
                Condition.CHENGJIYUN_ACCOUNT,
                bad=refused,
                summary=f"{result.message}; {result.hint or ''}".strip("; "),
            )
        )
        if result.outcome is PushOutcome.TRANSIENT:
            self._transient_in_row += 1
        elif not refused:
            self._transient_in_row = 0
        await self._alerter.observe(
            Observation(
                Condition.CHENGJIYUN_REACH,
                bad=self._transient_in_row >= UNREACHABLE_AFTER,
                summary=result.message,
            )
        )
