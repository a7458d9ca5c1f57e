"""The daemon's alerts end to end: a source failing three polls in a row produces exactly one
webhook call and one e-mail, its recovery one more of each (real receivers on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_alerts import Webhook, _Inbox, smtp, webhook  # noqa: F401 - fixtures

from sandbox_helpers import Sandbox, run_syncd, start_sandbox, stop_sandbox
from syncd.alerts import Alerter
from syncd.clients.chengjiyun import client_from_config
from syncd.config import load_config
from syncd.engine.alerting import SchoolAlerts
from syncd.engine.cycle import School
from syncd.engine.drain import worker_from_config
from syncd.engine.service import SchoolService
from syncd.store import Store


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    box = await start_sandbox(tmp_path)
    yield box
    await stop_sandbox(box)


async def settle(alerter: Alerter) -> None:
    for _ in range(200):  # deliveries run in the background; bounded wait for them
        if not alerter.in_flight:
            return
        await asyncio.sleep(0.01)


async def test_a_failing_source_alerts_once_and_once_more_when_it_recovers(
    sandbox: Sandbox,
    webhook: Webhook,  # noqa: F811 - the fixture imported above
    smtp: tuple[_Inbox, int],  # noqa: F811
) -> None:
    inbox, port = smtp
    config_path = sandbox.config()
    config_path.write_text(
        config_path.read_text(encoding="utf-8")
        + f'[alerts]\nwebhook_url = "{webhook.url()}"\nwebhook_format = "wecom"\n'
        f'smtp_host = "127.0.0.1"\nsmtp_port = {port}\nsmtp_starttls = false\n'
        'mail_from = "syncd@school.example"\nmail_to = ["it@school.example"]\n',
        encoding="utf-8",
    )
    config = load_config(config_path)
    sandbox.epaas.corp["permanent_code"] = "revoked"
    clock = [time.time()]
    daemon = SchoolService(config, clock=lambda: clock[0])
    async with await Store.open(config.store.path) as store, client_from_config(config) as client:
        daemon.school = School(config, store)
        daemon.alerter = Alerter.from_config(config.alerts, school=config.chengjiyun.org_id)
        daemon.alerts = SchoolAlerts(daemon.school, daemon.alerter)
        daemon.worker = worker_from_config(config, store, client)
        for _ in range(3):
            await daemon._poll("epaas")
            await settle(daemon.alerter)
        assert len(webhook.bodies) == 1 and len(inbox.messages) == 1
        assert webhook.bodies[0]["msgtype"] == "markdown"
        assert "epaas" in webhook.bodies[0]["markdown"]["content"]
        clock[0] += 2 * 3600 + 1  # past the back-off
        sandbox.epaas.corp["permanent_code"] = "sandbox-permanent"
        await daemon._poll("epaas")
        await daemon._poll("epaas")
        await settle(daemon.alerter)
        await daemon.alerter.aclose()
    assert len(webhook.bodies) == 2 and len(inbox.messages) == 2
    assert "revoked" not in str(webhook.bodies) + "".join(str(m) for m in inbox.messages)


async def test_run_once_from_a_timer_alerts_once_per_change_of_state(
    sandbox: Sandbox,
    webhook: Webhook,  # noqa: F811 - the fixture imported above
) -> None:
    """``--run-once`` remembers in the database what it announced, so a timer layout gets one
    message when a source starts failing and one when it recovers, not one per run."""
    config = sandbox.config()
    config.write_text(
        config.read_text(encoding="utf-8") + f'[alerts]\nwebhook_url = "{webhook.url()}"\n',
        encoding="utf-8",
    )
    sandbox.epaas.corp["permanent_code"] = "revoked"
    for _ in range(4):
        assert (await run_syncd(config, "--run-once")).returncode == 1
    kinds = [body["event"] for body in webhook.bodies]
    assert kinds == ["source_failing"], webhook.bodies
    sandbox.epaas.corp["permanent_code"] = "sandbox-permanent"
    assert (await run_syncd(config, "--run-once")).returncode == 0
    assert [body["event"] for body in webhook.bodies] == ["source_failing", "source_recovered"]
