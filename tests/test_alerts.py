"""Alerts: one message per state change, real webhook and SMTP receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from conftest import REPO
from syncd.alerts import Alerter, MailChannel, MailSettings
from syncd.config import AlertsConfig, parse_config
from syncd.core.alerts import (
    AlertEvent,
    AlertKind,
    AlertState,
    Condition,
    Observation,
    WebhookFormat,
    observe,
    render,
    webhook_payload,
)
from syncd.exceptions import ConfigError
from syncd.log import configure_logging, register_secret

SCHOOL = "org-4242"
AT = datetime(2026, 12, 1, 21, 0, tzinfo=UTC)


# --- receivers ---------------------------------------------------------------------------------


@dataclass
class Webhook:
    base: str
    bodies: list[Any] = field(default_factory=list)
    answer: dict[str, Any] = field(default_factory=lambda: {"errcode": 0, "errmsg": "ok"})
    hang: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self) -> str:
        return f"{self.base}/cgi-bin/webhook/send?key=wh-{secrets.token_hex(12)}"


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    hook = Webhook(base="")

    async def receive(request: web.Request) -> web.Response:
        hook.bodies.append(await request.json())
        if hook.hang:
            await hook.release.wait()
        return web.json_response(hook.answer)

    app = web.Application()
    app.router.add_post("/cgi-bin/webhook/send", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    hook.base = f"http://127.0.0.1:{port}"
    yield hook
    hook.release.set()
    await runner.cleanup()


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[_Inbox, int]]:
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's own chatter
    inbox = _Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(json_output=True, stream=stream, level="DEBUG")
    yield stream
    logging.getLogger().handlers.clear()


def _config(**keys: Any) -> AlertsConfig:
    return AlertsConfig.model_validate(keys)


def _mail_keys(port: int) -> dict[str, Any]:
    return {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_starttls": False,
        "mail_from": "syncd@school.example",
        "mail_to": ["it@school.example", "head@school.example"],
    }


def _event(kind: AlertKind = AlertKind.SOURCE_FAILING, summary: str = "HTTP 503") -> AlertEvent:
    return AlertEvent(kind, SCHOOL, "classcharts", summary, (("account", "parent:a@b.c"),), AT)


# --- end to end --------------------------------------------------------------------------------


async def test_three_failures_then_recovery_send_one_message_each_on_both_channels(
    webhook: Webhook, smtp: tuple[_Inbox, int], log_stream: io.StringIO
) -> None:
    inbox, port = smtp
    alerter = Alerter.from_config(
        _config(webhook_url=webhook.url(), timeout_s=5, **_mail_keys(port)), school=SCHOOL
    )
    failing = Observation(Condition.SOURCE_HEALTH, "classcharts", bad=True, summary="HTTP 503")
    events = [await alerter.observe(failing, at=AT) for _ in range(3)]
    assert [e.kind if e else None for e in events] == [AlertKind.SOURCE_FAILING, None, None]
    recovered = await alerter.observe(Observation(Condition.SOURCE_HEALTH, "classcharts"))
    assert recovered is not None and recovered.kind is AlertKind.SOURCE_RECOVERED
    await alerter.aclose()

    assert [body["event"] for body in webhook.bodies] == ["source_failing", "source_recovered"]
    assert [body["state"] for body in webhook.bodies] == ["failing", "ok"]
    assert len(inbox.messages) == 2
    first = inbox.messages[0]
    assert first["Subject"] == webhook.bodies[0]["title"]
    assert "classcharts" in str(first["Subject"]) and SCHOOL in str(first["Subject"])
    assert "HTTP 503" in first.get_content()
    assert inbox.envelopes[0] == (
        "syncd@school.example",
        ["it@school.example", "head@school.example"],
    )
    sent = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert sum(1 for e in sent if e["event"] == "alert sent") == 4


@pytest.mark.parametrize("fmt", list(WebhookFormat))
async def test_each_webhook_format_has_its_json_shape(webhook: Webhook, fmt: WebhookFormat) -> None:
    alerter = Alerter.from_config(
        _config(webhook_url=webhook.url(), webhook_format=str(fmt)), school=SCHOOL
    )
    await alerter.send(_event())
    await alerter.aclose()
    (body,) = webhook.bodies
    title = render(_event()).title
    if fmt is WebhookFormat.JSON:
        assert set(body) == {"event", "school", "source", "state", "title", "text", "time"}
        assert body["event"] == "source_failing" and body["school"] == SCHOOL
        assert body["source"] == "classcharts" and body["title"] == title
        assert body["time"] == AT.isoformat()
        assert "HTTP 503" in body["text"] and "parent:a@b.c" in body["text"]
    elif fmt is WebhookFormat.WECOM:
        assert body["msgtype"] == "markdown" and set(body["markdown"]) == {"content"}
        assert title in body["markdown"]["content"]
    else:
        assert body["msgtype"] == "markdown" and set(body["markdown"]) == {"title", "text"}
        assert body["markdown"]["title"] == title and "HTTP 503" in body["markdown"]["text"]


async def test_a_closed_port_is_logged_once_naming_the_channel_and_never_blocks(
    log_stream: io.StringIO,
) -> None:
    url = f"http://127.0.0.1:{_free_port()}/hook?access_token=dt-{secrets.token_hex(12)}"
    alerter = Alerter.from_config(_config(webhook_url=url, timeout_s=1), school=SCHOOL)
    start = time.monotonic()
    await alerter.send(_event())
    assert time.monotonic() - start < 0.05
    await alerter.aclose(timeout_s=5)
    assert time.monotonic() - start < 1.5
    output = log_stream.getvalue()
    (warning,) = [e for e in map(json.loads, output.splitlines()) if e["level"] != "debug"]
    assert warning["event"] == "alert not sent" and warning["channel"] == "webhook"
    assert warning["level"] == "warning"
    assert url not in output and url.partition("access_token=")[2] not in output


async def test_a_hanging_webhook_costs_at_most_its_timeout(
    webhook: Webhook, smtp: tuple[_Inbox, int], log_stream: io.StringIO
) -> None:
    inbox, port = smtp
    webhook.hang = True
    url = webhook.url()
    alerter = Alerter.from_config(
        _config(webhook_url=url, timeout_s=0.5, **_mail_keys(port)), school=SCHOOL
    )
    start = time.monotonic()
    await alerter.send(_event())
    assert time.monotonic() - start < 0.05
    await alerter.aclose()
    assert time.monotonic() - start < 1.5
    assert len(webhook.bodies) == 1 and len(inbox.messages) == 1  # e-mail went out regardless
    output = log_stream.getvalue()
    warnings = [json.loads(line) for line in output.splitlines() if '"warning"' in line]
    assert [(w["channel"], w["error"]) for w in warnings] == [("webhook", "no answer within 0.5 s")]
    assert url not in output and url.partition("key=")[2] not in output


async def test_aclose_gives_up_on_sends_still_running_after_its_timeout(webhook: Webhook) -> None:
    webhook.hang = True
    alerter = Alerter.from_config(_config(webhook_url=webhook.url(), timeout_s=30), school=SCHOOL)
    await alerter.send(_event())
    start = time.monotonic()
    await alerter.aclose(timeout_s=0.3)
    assert time.monotonic() - start < 1.0
    assert alerter.in_flight == 0


async def test_a_robot_answering_an_errcode_is_a_failure(
    webhook: Webhook, log_stream: io.StringIO
) -> None:
    webhook.answer = {"errcode": 93000, "errmsg": "invalid webhook url"}
    alerter = Alerter.from_config(
        _config(webhook_url=webhook.url(), webhook_format="wecom"), school=SCHOOL
    )
    await alerter.send(_event())
    await alerter.aclose()
    events = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    (warning,) = [e for e in events if e["level"] == "warning"]
    assert warning["channel"] == "webhook" and "errcode 93000" in warning["error"]


async def test_secrets_in_an_alert_text_are_masked(webhook: Webhook) -> None:
    password = f"pw-{secrets.token_hex(6)}!"
    register_secret(password)
    alerter = Alerter.from_config(_config(webhook_url=webhook.url()), school=SCHOOL)
    await alerter.send(_event(summary=f"login refused for password {password}"))
    await alerter.aclose()
    assert password not in json.dumps(webhook.bodies)
    assert "password ***" in webhook.bodies[0]["text"]


async def test_no_alerts_section_gives_an_alerter_that_sends_nothing() -> None:
    alerter = Alerter.from_config(None, school=SCHOOL)
    assert not alerter.enabled
    assert await alerter.observe(Observation(Condition.SOURCE_HEALTH, "epaas", bad=True))
    assert alerter.in_flight == 0
    await alerter.aclose()


# --- configuration -----------------------------------------------------------------------------

BASE = {"chengjiyun": {"platform": "p", "key": "k-123456", "org_id": SCHOOL}}


def test_alerts_config_resolves_the_webhook_url_as_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc-123-secret"
    monkeypatch.setenv("SYNCD_ALERT_WEBHOOK", url)
    config = parse_config(
        {**BASE, "alerts": {"webhook_url": "env:SYNCD_ALERT_WEBHOOK", "webhook_format": "wecom"}}
    )
    assert config.alerts is not None and config.alerts.webhook_url is not None
    assert config.alerts.webhook_url.reveal() == url
    assert url not in repr(config.alerts)
    assert config.alerts.timeout_s == 10 and config.alerts.smtp_port == 587
    assert config.alerts.smtp_starttls is True
    assert parse_config(BASE).alerts is None
    assert parse_config(BASE).log.format == "auto" and parse_config(BASE).log.level == "info"


@pytest.mark.parametrize(
    ("alerts", "key", "reason"),
    [
        ({"webhook_url": "ftp://x?key=hidden-value"}, "alerts.webhook_url", "http:// or https://"),
        ({"webhook_url": "https://x", "webhook_format": "slack"}, "alerts.webhook_format", ""),
        ({"mail_to": ["a@b.c"]}, "alerts", "no smtp_host"),
        ({"smtp_host": "mail.example"}, "alerts", "mail_from and mail_to"),
        ({}, "alerts", "neither webhook_url nor smtp_host"),
    ],
)
def test_bad_alerts_config_names_the_key(alerts: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "alerts": alerts})
    assert info.value.key == key
    assert reason in str(info.value)
    assert "hidden-value" not in str(info.value)


def test_log_config_accepts_known_formats_and_levels() -> None:
    config = parse_config({**BASE, "log": {"format": "journal", "level": "WARNING"}})
    assert config.log.format == "journal" and config.log.level == "warning"
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "log": {"format": "xml"}})
    assert info.value.key == "log.format"


# --- de-duplication (pure) ---------------------------------------------------------------------


def _run(observations: list[Observation]) -> list[AlertKind | None]:
    state = AlertState()
    kinds: list[AlertKind | None] = []
    for observation in observations:
        state, event = observe(state, observation, school=SCHOOL, at=AT)
        kinds.append(event.kind if event else None)
    return kinds


def test_a_good_start_says_nothing_and_each_change_says_once() -> None:
    ok = Observation(Condition.CHENGJIYUN_REACH)
    down = Observation(Condition.CHENGJIYUN_REACH, bad=True)
    assert _run([ok, ok, down, down, ok, ok, down]) == [
        None,
        None,
        AlertKind.CHENGJIYUN_UNREACHABLE,
        None,
        AlertKind.CHENGJIYUN_RECOVERED,
        None,
        AlertKind.CHENGJIYUN_UNREACHABLE,
    ]


def test_sources_are_tracked_separately() -> None:
    assert _run(
        [
            Observation(Condition.SOURCE_HEALTH, "classcharts", bad=True),
            Observation(Condition.SOURCE_HEALTH, "epaas", bad=True),
            Observation(Condition.SOURCE_HEALTH, "classcharts", bad=True),
            Observation(Condition.SOURCE_HEALTH, "epaas"),
        ]
    ) == [AlertKind.SOURCE_FAILING, AlertKind.SOURCE_FAILING, None, AlertKind.SOURCE_RECOVERED]


def test_counts_alert_when_they_rise_and_reset_quietly() -> None:
    held = [Observation(Condition.DELETIONS_HELD, "epaas", count=n) for n in (0, 12, 12, 12, 0, 3)]
    assert _run(held) == [
        None,
        AlertKind.DELETIONS_HELD,
        None,
        None,
        None,
        AlertKind.DELETIONS_HELD,
    ]
    dead = [Observation(Condition.DEAD_LETTERS, count=n) for n in (2, 2, 5, 4, 4)]
    assert _run(dead) == [AlertKind.DEAD_LETTERED, None, AlertKind.DEAD_LETTERED, None, None]


def test_stale_and_refused_reset_without_a_message() -> None:
    stale = Observation(Condition.SOURCE_FRESHNESS, "epaas", bad=True)
    fresh = Observation(Condition.SOURCE_FRESHNESS, "epaas")
    refused = Observation(Condition.CHENGJIYUN_ACCOUNT, bad=True)
    accepted = Observation(Condition.CHENGJIYUN_ACCOUNT)
    assert _run([stale, stale, fresh, stale, refused, accepted]) == [
        AlertKind.SOURCE_STALE,
        None,
        None,
        AlertKind.SOURCE_STALE,
        AlertKind.ACCOUNT_REFUSED,
        None,
    ]


def test_rendering_names_school_source_and_details() -> None:
    message = render(_event(AlertKind.DELETIONS_HELD, "60 deletions exceed max_deletes = 50"))
    assert message.title.startswith(f"syncd {SCHOOL}: deletions held")
    assert message.state == "held"
    assert message.text.splitlines() == [
        "60 deletions exceed max_deletes = 50",
        "- account: parent:a@b.c",
        "- time: 2026-12-01T21:00:00+00:00",
    ]
    body = webhook_payload(_event(), render(_event()), WebhookFormat.JSON)
    assert json.loads(json.dumps(body, ensure_ascii=False)) == body


def test_the_commented_example_alerts_section_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SYNCD_ALERT_WEBHOOK", "https://oapi.dingtalk.com/robot/send?access_token=t0"
    )
    monkeypatch.setenv("SYNCD_SMTP_PASSWORD", "smtp-password-1")
    text = (REPO / "config" / "syncd.example.toml").read_text(encoding="utf-8")
    block = text[text.index("# [alerts]") :].splitlines()
    data = tomllib.loads("\n".join(line.removeprefix("# ") for line in block))
    config = AlertsConfig.model_validate(data["alerts"])
    assert config.smtp_host == "mail.school.example" and config.timeout_s == 10


# --- STARTTLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a throw-away certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


class _Login:
    def __init__(self) -> None:
        self.logins: list[tuple[bytes, bytes]] = []

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        self.logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"smtp-pass-9x7")


async def test_mail_over_starttls_with_login(
    certificate: tuple[Path, Path], log_stream: io.StringIO
) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    inbox, login, port = _Inbox(), _Login(), _free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_tls,
        require_starttls=True,
        authenticator=login,
        auth_require_tls=True,
    )
    controller.start()
    try:
        settings = MailSettings(
            host="127.0.0.1",
            port=port,
            starttls=True,
            user="syncd@school.example",
            password="smtp-pass-9x7",
            mail_from="syncd@school.example",
            mail_to=("it@school.example",),
        )
        channel = MailChannel(settings, timeout_s=5, tls_context=client_tls)
        alerter = Alerter([channel], school=SCHOOL)
        await alerter.send(_event())
        await alerter.aclose()
    finally:
        controller.stop()
    assert login.logins == [(b"syncd@school.example", b"smtp-pass-9x7")]
    assert len(inbox.messages) == 1
    assert "smtp-pass-9x7" not in log_stream.getvalue()


async def test_starttls_required_but_not_offered_sends_nothing(
    smtp: tuple[_Inbox, int], log_stream: io.StringIO
) -> None:
    inbox, port = smtp
    keys = {**_mail_keys(port), "smtp_starttls": True}
    alerter = Alerter.from_config(_config(**keys), school=SCHOOL)
    await alerter.send(_event())
    await alerter.aclose()
    assert inbox.messages == []
    events = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    (warning,) = [e for e in events if e["level"] == "warning"]
    assert warning["channel"] == "email" and "STARTTLS" in warning["error"]
