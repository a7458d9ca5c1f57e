"""What every fake shares: start/stop on a loopback port, a request log, injectable faults."""

from __future__ import annotations

import abc
import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["Fault", "FakeServer", "Faults", "RecordedRequest"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Fault:
    """One injected misbehaviour, applied to requests whose path ends with ``path`` (or all).

    Kinds every fake understands (applied before the fake's own handler runs):

    * ``"delay"``: sleep ``value`` seconds, then handle the request normally;
    * ``"status"``: answer HTTP ``value`` (e.g. 503; a 429 carries ``Retry-After: 1``), e.g.
      ``path="/parent/login", value=429`` for a rate-limited ClassCharts login;
    * ``"rate_limited"``: answer 429 with ``Retry-After: value`` (seconds or an HTTP-date);
    * ``"malformed"``: answer 200 with a body that is not JSON;
    * ``"huge"``: stream a valid JSON answer of ``value`` bytes in 1 MiB pieces, without a
      Content-Length (so only a reader counting as it goes can stop it), never holding it in
      memory; ``"huge_declared"``: the same, announcing its Content-Length first;
    * ``"deep"``: answer JSON nested ``value`` levels deep (``[[[...]]]``).

    Anything else is for the fake itself to interpret through :meth:`Faults.take` (busy codes,
    expired tokens...). ``times`` is how many requests it hits (``None``: until cleared).
    """

    kind: str
    path: str | None = None
    times: int | None = 1
    value: object = None

    def matches(self, path: str) -> bool:
        return self.path is None or path.endswith(self.path)

    def number(self, default: float) -> float:
        """``value`` as a number (``default`` when unset)."""
        if isinstance(self.value, int | float | str) and self.value != "":
            return float(self.value)
        return default


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
    peer_port: int | None = None  # the client's port: tells reused connections apart
    cookies: dict[str, str] = field(default_factory=dict)


HUGE_PIECE_BYTES = 1024 * 1024


async def _stream_huge(request: web.Request, size: int, *, declare: bool) -> web.StreamResponse:
    """A JSON answer of ``size`` bytes written piece by piece; one piece is ever in memory."""
    head, tail = b'{"errcode": 0, "errmsg": "', b'"}'
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    if declare:
        response.content_length = size
    await response.prepare(request)
    piece = b"x" * HUGE_PIECE_BYTES
    remaining = max(0, size - len(head) - len(tail))
    try:
        await response.write(head)
        while remaining > 0:
            chunk = piece if remaining >= len(piece) else piece[:remaining]
            await response.write(chunk)
            remaining -= len(chunk)
        await response.write(tail)
        await response.write_eof()
    except ConnectionError:
        pass  # the client hung up part-way, which is what a bounded reader does
    return response


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
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                dict(request.query),
                body,
                peer_port=int(peer[1]) if peer else None,
                cookies=dict(request.cookies),
            )
        )
        delay = self.faults.take(request.path, ("delay",))
        if delay is not None:
            await asyncio.sleep(delay.number(0.0))
        status = self.faults.take(request.path, ("status",))
        if status is not None:
            code = int(status.number(503))
            headers = {"Retry-After": "1"} if code == 429 else None
            return web.Response(status=code, text=f"injected HTTP {code}", headers=headers)
        limited = self.faults.take(request.path, ("rate_limited",))
        if limited is not None:
            return web.Response(
                status=429, text="injected HTTP 429", headers={"Retry-After": str(limited.value)}
            )
        if self.faults.take(request.path, ("malformed",)) is not None:
            return web.Response(status=200, text="<html>not json", content_type="application/json")
        huge = self.faults.take(request.path, ("huge", "huge_declared"))
        if huge is not None:
            size = int(huge.number(200 * 1024 * 1024))
            return await _stream_huge(request, size, declare=huge.kind == "huge_declared")
        deep = self.faults.take(request.path, ("deep",))
        if deep is not None:
            depth = int(deep.number(100_000))
            return web.Response(
                status=200, text="[" * depth + "]" * depth, content_type="application/json"
            )
        return await handler(request)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 = any free port) and return the base URL."""
        # A fake stops at once: a request held by a "delay" fault is not waited for.
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        # aiohttp has no public getter for the bound port.
        sockets: Any = getattr(site._server, "sockets", None) or ()  # noqa: SLF001
        bound_port = int(sockets[0].getsockname()[1])
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
