"""What every fake shares: start/stop on a loopback port, a request log, injectable faults."""

from __future__ import annotations

import abc
import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["Fault", "FakeServer", "Faults", "RecordedRequest"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Fault:
    """One injected misbehaviour, applied to requests whose path ends with ``path`` (or all).

    kind: ``"status"`` answers HTTP ``value`` (e.g. 503); ``"delay"`` sleeps ``value`` seconds
    before handling; ``"malformed"`` answers 200 with a body that is not JSON; anything else is
    for the fake itself to interpret through :meth:`Faults.take` (busy codes, expired tokens...).
    ``times`` is how many requests it hits (``None``: until cleared).
    """

    kind: str
    path: str | None = None
    times: int | None = 1
    value: object = None

    def matches(self, path: str) -> bool:
        return self.path is None or path.endswith(self.path)


@dataclass
class Faults:
    """A list of pending faults plus an optional random transient-failure rate."""

    pending: list[Fault] = field(default_factory=list)
    transient_fraction: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(1234))

    def add(
        self, kind: str, *, path: str | None = None, times: int | None = 1, value: object = None
    ) -> None:
        self.pending.append(Fault(kind, path, times, value))

    def clear(self) -> None:
        self.pending.clear()
        self.transient_fraction = 0.0

    def take(self, path: str, kinds: tuple[str, ...]) -> Fault | None:
        """Consume and return the first pending fault of one of ``kinds`` that matches ``path``."""
        for fault in self.pending:
            if fault.kind in kinds and fault.matches(path):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.pending.remove(fault)
                return fault
        return None

    def roll_transient(self) -> bool:
        return self.transient_fraction > 0 and self.rng.random() < self.transient_fraction


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: bytes


class FakeServer(abc.ABC):
    """Base of the three fakes: subclasses add routes in :meth:`setup_routes`."""

    def __init__(self) -> None:
        self.faults = Faults()
        self.requests: list[RecordedRequest] = []
        self.app = web.Application(middlewares=[self._record_and_inject])
        self.setup_routes(self.app)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    @abc.abstractmethod
    def setup_routes(self, app: web.Application) -> None:
        """Add the service's routes to ``app``."""

    @web.middleware
    async def _record_and_inject(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.query), body)
        )
        delay = self.faults.take(request.path, ("delay",))
        if delay is not None:
            await asyncio.sleep(float(delay.value or 0))
        status = self.faults.take(request.path, ("status",))
        if status is not None:
            code = int(status.value or 503)
            headers = {"Retry-After": "1"} if code == 429 else None
            return web.Response(status=code, text=f"injected HTTP {code}", headers=headers)
        if self.faults.take(request.path, ("malformed",)) is not None:
            return web.Response(status=200, text="<html>not json", content_type="application/json")
        return await handler(request)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 = any free port) and return the base URL."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = site._server.sockets if site._server else ()  # noqa: SLF001 - aiohttp has no public getter
        bound_port = sockets[0].getsockname()[1]
        self.base_url = f"http://{host}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def requests_to(self, suffix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith(suffix)]
