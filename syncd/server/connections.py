"""Connection discipline for the pull API listener.

No flood of pull connections may stop the sync or exhaust the process's file descriptors:

* at most ``max_connections`` are open at once; the listener stops accepting while at the cap,
  so the rest wait in the kernel's listen backlog (and are refused once that is full); while at
  the cap, answers close their connections and connections idle between requests are closed,
  so idle keep-alives cannot keep the waiting clients out;
* an idle keep-alive connection is closed after ``keepalive_timeout_s``;
* a request whose headers have not all arrived ``header_timeout_s`` after its first byte is
  dropped (slowloris);
* aiohttp's own refusals (oversized or malformed request line or headers, TLS on the plain
  port) are answered in the JSON envelope, logged as one throttled WARNING without traceback.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import resource
import socket
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from syncd.config import ServerConfig
from syncd.log import get_logger
from syncd.server.answers import envelope
from syncd.server.throttle import ThrottledWarning

__all__ = [
    "ConnectionLimits",
    "LimitedSite",
    "PullRequestHandler",
    "raise_open_files_limit",
]

log = get_logger(__name__)

# Out-of-descriptor errors from accept(): wait for a connection to close instead of spinning.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_RETRY_S = 0.1
# At the cap, connections idle between requests this long are closed so waiting clients get in.
REAP_INTERVAL_S = 0.25
IDLE_GRACE_S = 1.0
MAX_LINE_BYTES = 8190
MAX_FIELD_BYTES = 8190
MAX_HEADERS = 128

# HTTP status aiohttp chose -> (code, msg) of the envelope.
ERROR_CODES = {
    400: (30002, "参数解析错误"),
    500: (10001, "未知错误"),
    504: (10004, "操作超时"),
}


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (every held connection is a descriptor)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as err:
            log.warning("cannot raise the open files limit", soft=soft, hard=hard, error=str(err))
            return soft
        return hard
    return soft


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int = 256
    listen_backlog: int = 1024
    keepalive_timeout_s: float = 15.0
    header_timeout_s: float = 10.0

    @classmethod
    def from_config(cls, server: ServerConfig) -> ConnectionLimits:
        return cls(
            max_connections=server.max_connections,
            listen_backlog=server.listen_backlog,
            keepalive_timeout_s=server.keepalive_timeout_s,
            header_timeout_s=server.header_timeout_s,
        )

    def handler_args(self) -> dict[str, Any]:
        """The keyword arguments aiohttp's ``RequestHandler`` takes for these limits."""
        return {
            "keepalive_timeout": self.keepalive_timeout_s,
            "max_line_size": MAX_LINE_BYTES,
            "max_field_size": MAX_FIELD_BYTES,
            "max_headers": MAX_HEADERS,
            "lingering_time": 1.0,
        }


class _Refusals:
    """The throttled warnings one listener shares between its connections."""

    def __init__(self) -> None:
        self.malformed = ThrottledWarning(log)
        self.slow_headers = ThrottledWarning(log)
        self.accept_failures = ThrottledWarning(log)


class _Slots:
    """The cap on open connections. A slot is taken before ``accept()``, so at the cap the
    listener stops accepting; the connections holding slots are known, so idle ones can be
    closed when others wait."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0
        self.handlers: set[PullRequestHandler] = set()  # connections made and not yet lost
        self._freed = asyncio.Event()

    @property
    def full(self) -> bool:
        return self.taken >= self.limit

    def take(self) -> _Slot:
        self.taken += 1
        return _Slot(self)

    def give_back(self, handler: PullRequestHandler | None) -> None:
        self.taken -= 1
        if handler is not None:
            self.handlers.discard(handler)
        self._freed.set()

    async def wait_freed(self, timeout_s: float) -> bool:
        """Wait until a slot is given back; False if ``timeout_s`` passed first."""
        self._freed.clear()
        try:
            await asyncio.wait_for(self._freed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def close_idle(self, idle_s: float) -> int:
        """Close connections idle (between requests) for ``idle_s`` or more; how many."""
        closed = 0
        for handler in list(self.handlers):
            if handler.idle_for_s() >= idle_s:
                handler.force_close()
                closed += 1
        return closed


class _Slot:
    """One connection's place under the cap, given back exactly once."""

    __slots__ = ("_slots", "_handler")

    def __init__(self, slots: _Slots) -> None:
        self._slots: _Slots | None = slots
        self._handler: PullRequestHandler | None = None

    @property
    def crowded(self) -> bool:
        """Every slot is taken: a finished answer should close its connection for the next."""
        return self._slots is not None and self._slots.full

    def opened(self, handler: PullRequestHandler) -> None:
        if self._slots is not None and self._handler is None:
            self._handler = handler
            self._slots.handlers.add(handler)

    def release(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots.give_back(self._handler)
        self._handler = None


class PullRequestHandler(RequestHandler):
    """aiohttp's protocol with a header deadline, JSON refusals and a slot given back on close."""

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        header_timeout_s: float,
        refusals: _Refusals,
        slot: _Slot | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None
        self._refusals = refusals
        self._slot = slot
        self._idle_since: float | None = None

    @property
    def crowded(self) -> bool:
        """The listener is at its cap, so this connection should not be kept alive."""
        return self._slot is not None and self._slot.crowded

    def idle_for_s(self) -> float:
        """Seconds since this connection last finished an answer (or opened) with nothing new."""
        if self._idle_since is None or self._request_in_progress or self._messages:
            return 0.0
        return self._loop.time() - self._idle_since

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._idle_since = self._loop.time()

    def data_received(self, data: bytes) -> None:
        self._idle_since = None
        super().data_received(data)
        # Headers are complete once a message is queued (or being handled); until then the
        # first byte of a request starts its deadline.
        if self._messages or self._request_in_progress:
            self._cancel_header_timer()
        elif self._header_timer is None and self.transport is not None:
            self._header_timer = self._loop.call_later(
                self._header_timeout_s, self._headers_too_slow
            )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._slot is not None:
            self._slot.opened(self)
        self._idle_since = self._loop.time()
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_timer()
        if self._slot is not None:
            self._slot.release()
        super().connection_lost(exc)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        self._refusals.slow_headers.warn(
            "pull API connection dropped: request headers too slow",
            timeout_s=self._header_timeout_s,
        )
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer aiohttp's own refusals in the JSON envelope; log one throttled line, no traceback."""
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already under way; the connection is closed")
        code, msg = ERROR_CODES.get(
            status, (30002, "参数解析错误") if status < 500 else (10001, "未知错误")
        )
        self._refusals.malformed.warn(
            "pull API refused a malformed request" if status < 500 else "pull API request failed",
            status=status,
            reason=type(exc).__name__ if exc is not None else "unknown",
        )
        response = web.Response(
            status=status,
            body=envelope(code, msg),
            content_type="application/json",
            charset="utf-8",
        )
        response.force_close()
        return response


class LimitedSite(web.BaseSite):
    """A TCP listener that accepts at most ``max_connections`` at once.

    While at the cap it does not call ``accept()``, so further clients wait in the backlog;
    an accept failing for lack of descriptors is retried shortly, logged throttled.
    """

    __slots__ = ("_host", "_port", "_limits", "_sock", "_accepting", "_refusals", "_slots")

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, limits: ConnectionLimits
    ) -> None:
        super().__init__(runner, backlog=limits.listen_backlog)
        self._host = host
        self._port = port
        self._limits = limits
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._refusals = _Refusals()
        self._slots = _Slots(limits.max_connections)

    @property
    def name(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def port(self) -> int:
        if self._sock is not None:
            return int(self._sock.getsockname()[1])
        return self._port

    @property
    def open_connections(self) -> int:
        """Connections accepted and not yet closed."""
        return len(self._slots.handlers)

    async def start(self) -> None:
        await super().start()
        infos = await asyncio.get_running_loop().getaddrinfo(
            self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(self._backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._accepting = asyncio.create_task(self._accept_loop(sock))

    async def stop(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            try:
                await self._accepting
            except asyncio.CancelledError:
                pass
            self._accepting = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        await super().stop()

    def _protocol(self, slot: _Slot) -> PullRequestHandler:
        server = self._runner.server
        assert server is not None, "the runner is set up before its site starts"
        return PullRequestHandler(
            server,
            loop=asyncio.get_running_loop(),
            header_timeout_s=self._limits.header_timeout_s,
            refusals=self._refusals,
            slot=slot,
            access_log=None,
            **self._limits.handler_args(),
        )

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self._slots.full:
                if not await self._slots.wait_freed(REAP_INTERVAL_S):
                    self._slots.close_idle(IDLE_GRACE_S)
            slot = self._slots.take()
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as err:
                slot.release()
                if err.errno in RESOURCE_ERRNOS:
                    self._refusals.accept_failures.warn(
                        "pull API cannot accept: out of descriptors", errno=err.errno
                    )
                    await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            except BaseException:
                slot.release()
                raise
            try:
                # The protocol gives the slot back in connection_lost.
                await loop.connect_accepted_socket(functools.partial(self._protocol, slot), conn)
            except OSError:
                conn.close()
                slot.release()
