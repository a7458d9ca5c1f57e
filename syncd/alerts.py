"""Sending alerts: a webhook POST (json, 企业微信, 钉钉) and/or an e-mail, fire and forget.

A failing alert channel must never hold up or break the sync: :meth:`Alerter.send` only starts a
background task per channel and returns; each task is bounded by the channel timeout, and a
failure becomes one warning naming the channel (redacted: the webhook URL is a secret).

Use from the engine::

    alerter = Alerter.from_config(config.alerts, school=config.chengjiyun.org_id)
    await alerter.observe(Observation(Condition.SOURCE_HEALTH, "classcharts", bad=True, ...))
    await alerter.send(AlertEvent(...))   # or send an event directly
    await alerter.aclose()                # at shutdown: waits for in-flight sends, bounded
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import aiosmtplib

from syncd.config import AlertsConfig
from syncd.core.alerts import (
    AlertEvent,
    AlertMessage,
    AlertState,
    Observation,
    WebhookFormat,
    observe,
    render,
    webhook_payload,
)
from syncd.log import get_logger, redact, register_secret

__all__ = ["Alerter", "Channel", "MailChannel", "WebhookChannel"]

log = get_logger(__name__)

CLOSE_TIMEOUT_S = 15.0  # aclose() waits this long for in-flight sends, then cancels them


class ChannelError(Exception):
    """A channel answered, but not with success."""


class Channel(Protocol):
    name: str
    timeout_s: float

    async def deliver(self, event: AlertEvent, message: AlertMessage) -> None: ...

    async def aclose(self) -> None: ...


class WebhookChannel:
    """POST the event as JSON; 企业微信 and 钉钉 answer 200 with ``errcode`` != 0 on failure."""

    name = "webhook"

    def __init__(self, url: str, fmt: WebhookFormat, *, timeout_s: float) -> None:
        self._url = url
        self._fmt = fmt
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        # The whole URL is registered by the config; its query values (key=, access_token=) too,
        # so an error text that quotes only part of the URL still shows none of it.
        register_secret(url)
        for _, value in parse_qsl(urlsplit(url).query):
            register_secret(value)

    async def deliver(self, event: AlertEvent, message: AlertMessage) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        body = webhook_payload(event, message, self._fmt)
        async with self._session.post(self._url, json=body, allow_redirects=False) as response:
            text = await response.text()
            if response.status // 100 != 2:
                raise ChannelError(f"HTTP {response.status}")
        if self._fmt is not WebhookFormat.JSON:
            try:
                answer = json.loads(text)
            except ValueError as err:
                raise ChannelError("answer is not JSON") from err
            if isinstance(answer, dict) and answer.get("errcode", 0) != 0:
                raise ChannelError(f"errcode {answer.get('errcode')}: {answer.get('errmsg', '')}")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


@dataclass(frozen=True)
class MailSettings:
    host: str
    port: int
    starttls: bool
    user: str | None
    password: str | None
    mail_from: str
    mail_to: tuple[str, ...]


class MailChannel:
    """One e-mail per event through an SMTP relay.

    With ``starttls`` the relay must offer STARTTLS and present a valid certificate, or nothing
    (in particular no password) is sent.
    """

    name = "email"

    def __init__(
        self, settings: MailSettings, *, timeout_s: float, tls_context: ssl.SSLContext | None = None
    ) -> None:
        self._settings = settings
        self.timeout_s = timeout_s
        self._tls_context = tls_context  # None: the system's trusted CAs

    async def deliver(self, event: AlertEvent, message: AlertMessage) -> None:
        mail = EmailMessage()
        mail["From"] = self._settings.mail_from
        mail["To"] = ", ".join(self._settings.mail_to)
        mail["Subject"] = message.title
        mail.set_content(message.text)
        s = self._settings
        await aiosmtplib.send(
            mail,
            hostname=s.host,
            port=s.port,
            start_tls=s.starttls,
            username=s.user,
            password=s.password,
            timeout=self.timeout_s,
            tls_context=self._tls_context,
        )

    async def aclose(self) -> None:
        return None


class Alerter:
    """Sends each event to every configured channel in the background; never raises.

    Also keeps the de-duplication state for :meth:`observe`, so the engine can report every
    cycle's observations and only state changes go out.
    """

    def __init__(
        self, channels: Sequence[Channel], *, school: str, state: AlertState | None = None
    ) -> None:
        self._channels = tuple(channels)
        self.school = school
        self._state = state or AlertState()
        self._tasks: set[asyncio.Task[None]] = set()
        # One delivery at a time per channel, so "failing" never arrives after "recovered".
        self._in_order = {id(channel): asyncio.Lock() for channel in self._channels}

    @classmethod
    def from_config(
        cls, config: AlertsConfig | None, *, school: str, state: AlertState | None = None
    ) -> Alerter:
        """The alerter ``[alerts]`` describes; one that sends nothing when it is absent.
        ``state``: what was already announced (``--run-once`` keeps it in the database)."""
        if config is None:
            return cls((), school=school, state=state)
        channels: list[Channel] = []
        if config.webhook_url is not None:
            channels.append(
                WebhookChannel(
                    config.webhook_url.reveal(),
                    WebhookFormat(config.webhook_format),
                    timeout_s=config.timeout_s,
                )
            )
        if config.smtp_host is not None and config.mail_from:
            settings = MailSettings(
                host=config.smtp_host,
                port=config.smtp_port,
                starttls=config.smtp_starttls,
                user=config.smtp_user,
                password=config.smtp_password.reveal() if config.smtp_password else None,
                mail_from=config.mail_from,
                mail_to=tuple(config.mail_to),
            )
            channels.append(MailChannel(settings, timeout_s=config.timeout_s))
        return cls(channels, school=school, state=state)

    @property
    def enabled(self) -> bool:
        return bool(self._channels)

    @property
    def state(self) -> AlertState:
        return self._state

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def observe(
        self, observation: Observation, *, at: datetime | None = None
    ) -> AlertEvent | None:
        """Record ``observation``; send (and return) an event if it is a change of state."""
        self._state, event = observe(self._state, observation, school=self.school, at=at)
        if event is not None:
            await self.send(event)
        return event

    async def send(self, event: AlertEvent) -> None:
        """Start delivering ``event`` on every channel and return at once."""
        if not self._channels:
            return
        try:
            rendered = render(event)
            message = AlertMessage(
                title=redact(rendered.title), text=redact(rendered.text), state=rendered.state
            )
        except Exception as err:  # a bad event must not break the caller either
            log.warning("alert not rendered", alert=str(event.kind), error=redact(repr(err)))
            return
        for channel in self._channels:
            task = asyncio.create_task(self._deliver(channel, event, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, channel: Channel, event: AlertEvent, message: AlertMessage) -> None:
        try:
            async with self._in_order[id(channel)], asyncio.timeout(channel.timeout_s):
                await channel.deliver(event, message)
        except Exception as err:  # an alert channel must never break the sync
            log.warning(
                "alert not sent",
                channel=channel.name,
                alert=str(event.kind),
                error=redact(_describe(err, channel.timeout_s)),
            )
        else:
            log.info("alert sent", channel=channel.name, alert=str(event.kind))

    async def aclose(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Wait up to ``timeout_s`` for in-flight sends, cancel the rest, release connections."""
        pending = set(self._tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
                log.warning("alerts abandoned at shutdown", count=len(late))
        for channel in self._channels:
            try:
                await channel.aclose()
            except Exception as err:  # closing must not fail the shutdown
                log.warning(
                    "alert channel close failed", channel=channel.name, error=redact(repr(err))
                )


def _describe(err: BaseException, timeout_s: float) -> str:
    if isinstance(err, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
