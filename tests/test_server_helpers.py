"""A real pull API server on 127.0.0.1 (``start_server``, its connection limits included), raw
socket helpers, and a log capture for what the server writes."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from test_server import STATUS, USERS, make_config

from store_helpers import acknowledge
from syncd.log import configure_logging
from syncd.server.answers import AnswerCache
from syncd.server.app import SERVED_KEY, listening_port, start_server
from syncd.store import Store


@dataclass
class Served:
    port: int
    store: Store
    runner: web.AppRunner

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def answers(self) -> AnswerCache:
        (school,) = self.runner.app[SERVED_KEY].schools.values()
        return school.answers


@asynccontextmanager
async def served(tmp_path: Path, **server: Any) -> AsyncIterator[Served]:
    config = make_config(tmp_path, base_path="/cjy", **server)
    store = await Store.open(config.store.path)
    await acknowledge(store, USERS, [STATUS])
    runner = await start_server(config, store)
    try:
        yield Served(listening_port(runner), store, runner)
    finally:
        await runner.cleanup()
        await store.close()


async def raw_exchange(port: int, data: bytes, *, timeout_s: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()


def parse_response(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return status, headers, json.loads(body)


class LogCapture:
    """Everything logged while active, as JSON lines (the daemon's production format)."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self._saved: tuple[list[logging.Handler], int] | None = None

    def __enter__(self) -> LogCapture:
        root = logging.getLogger()
        self._saved = (list(root.handlers), root.level)
        configure_logging(json_output=True, stream=self.stream, level="DEBUG")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._saved is not None
        root = logging.getLogger()
        root.handlers[:], level = self._saved
        root.setLevel(level)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]
