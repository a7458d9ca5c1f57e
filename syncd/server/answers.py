"""Pull answers built once per snapshot change and served from memory.

``queryUsers`` (per role) and ``queryClassStatus`` are the same for every caller until the served
snapshot changes, so each is serialised (and gzip-compressed) once per ``snapshot_generation``
and kept as bytes. Requests arriving during a rebuild wait for that one build. Bodies are written
in chunks that wait for the socket to drain, so many slow readers share one copy of the body
instead of each holding its own in a transport buffer.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = [
    "Answer",
    "AnswerCache",
    "accepts_gzip",
    "envelope",
    "send_answer",
]

CHUNK_BYTES = 64 * 1024
GZIP_LEVEL = 6
JSON_CONTENT_TYPE = "application/json; charset=utf-8"


# Bookkeeping kept with a stored record that Chengjiyun is not sent.
PRIVATE_KEYS = ("source", "owners")


def shape_users(records: Iterable[str], role: str | None = None) -> list[dict[str, Any]]:
    """Stored user records in queryUsers shape, optionally only those holding ``role`` (the
    same rule as ``Snapshot.served_users``; run in a worker thread for a large school)."""
    users = []
    for text in records:
        record = json.loads(text)
        if role is None or role in record["roleList"]:
            for key in PRIVATE_KEYS:
                record.pop(key, None)
            users.append(record)
    return users


def envelope(code: int, msg: str, data: Any = None) -> bytes:
    """``{"code", "msg"}`` plus ``data`` on success, UTF-8 JSON with Chinese kept as text."""
    body: dict[str, Any] = {"code": code, "msg": msg}
    if code == 0:
        body["data"] = data
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Answer:
    """One serialised success answer, plain and gzip-compressed, for one snapshot generation."""

    generation: int
    plain: bytes
    gzipped: bytes

    @classmethod
    def build(cls, generation: int, data: Any) -> Answer:
        plain = envelope(0, "success", data)
        return cls(generation, plain, gzip.compress(plain, compresslevel=GZIP_LEVEL, mtime=0))


class AnswerCache:
    """Answers by key (endpoint and parameters), each rebuilt when the generation moves."""

    def __init__(self) -> None:
        self._answers: dict[str, Answer] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.builds = 0

    async def get(
        self,
        key: str,
        generation: int,
        load: Callable[[], Awaitable[Any]],
        shape: Callable[[Any], Any] | None = None,
    ) -> Answer:
        """The answer for ``key`` at ``generation``; ``load`` fetches its data when it must be
        built, ``shape`` (if given) turns that into the answer's ``data`` in a worker thread,
        along with the serialising and compressing.

        ``generation`` is read by the caller before ``load`` runs, so data newer than its tag is
        possible (rebuilt once more next time), data older than its tag is not.
        """
        answer = self._answers.get(key)
        if answer is not None and answer.generation >= generation:
            return answer
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            answer = self._answers.get(key)
            if answer is not None and answer.generation >= generation:
                return answer
            loaded = await load()
            answer = await asyncio.to_thread(_build, generation, loaded, shape)
            self.builds += 1
            self._answers[key] = answer
            return answer


def _build(generation: int, loaded: Any, shape: Callable[[Any], Any] | None) -> Answer:
    return Answer.build(generation, loaded if shape is None else shape(loaded))


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value allows gzip (``gzip;q=0`` refuses it)."""
    for item in accept_encoding.split(","):
        name, _, params = item.partition(";")
        if name.strip().lower() not in ("gzip", "x-gzip"):
            continue
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


async def send_answer(request: web.Request, answer: Answer) -> web.StreamResponse:
    """Write a cached answer, gzip if the client asks for it, in drained chunks."""
    gzipped = accepts_gzip(request.headers.get("Accept-Encoding", ""))
    body = answer.gzipped if gzipped else answer.plain
    headers = {"Content-Type": JSON_CONTENT_TYPE, "Vary": "Accept-Encoding"}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    if len(body) <= CHUNK_BYTES or request.method == "HEAD":  # aiohttp omits a HEAD's body
        return web.Response(body=body, headers=headers)
    response = web.StreamResponse(headers=headers)
    response.content_length = len(body)
    await response.prepare(request)
    view = memoryview(body)
    for start in range(0, len(body), CHUNK_BYTES):
        await response.write(view[start : start + CHUNK_BYTES])
    await response.write_eof()
    return response
