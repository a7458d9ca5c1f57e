"""Malformed HTTP and odd parameters still get the JSON envelope, and a flood of them logs one
throttled WARNING line without a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import pytest
from test_server import signed
from test_server_helpers import LogCapture, parse_response, raw_exchange, served

from syncd.server.throttle import ThrottledWarning

REQUEST = b"GET /cjy/queryUsers HTTP/1.1\r\nHost: 127.0.0.1\r\n"

MALFORMED = {
    "request-line-too-long": b"GET /cjy/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header-too-long": REQUEST + b"X-Long: " + b"a" * 9000 + b"\r\n\r\n",
    "too-many-headers": REQUEST + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n",
    "bad-header-name": REQUEST + b"Bad Name\x01: v\r\n\r\n",
    "bad-method": b"G@T /cjy/queryUsers HTTP/1.1\r\nHost: x\r\n\r\n",
    "not-http": b"hello there\r\n\r\n",
    "length-and-chunked": b"POST /cjy/queryUsers HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two-content-lengths": b"POST /cjy/queryUsers HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    b"Content-Length: 6\r\n\r\nhello!",
    "tls-client-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    + os.urandom(32)
    + b"\x00" * 64,
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_http_is_answered_400_in_json(tmp_path: Path, raw: bytes) -> None:
    with LogCapture() as logs:
        async with served(tmp_path) as api:
            answer = await raw_exchange(api.port, raw)
    status, headers, body = parse_response(answer)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert body == {"code": 30002, "msg": "参数解析错误"}
    assert "Traceback" not in logs.text
    warnings = [line for line in logs.lines() if line.get("level") == "warning"]
    assert len(warnings) == 1 and "malformed" in warnings[0]["event"]


async def test_a_flood_of_malformed_requests_logs_one_line(tmp_path: Path) -> None:
    with LogCapture() as logs:
        async with served(tmp_path) as api:
            for _ in range(50):
                status, _, body = parse_response(
                    await raw_exchange(api.port, MALFORMED["header-too-long"])
                )
                assert (status, body["code"]) == (400, 30002)
            # A signed pull still works after the flood.
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{api.base}/cjy/queryUsers", params=signed({})) as response,
            ):
                assert (await response.json())["code"] == 0
    lines = [line for line in logs.lines() if "malformed" in line.get("event", "")]
    assert len(lines) == 1
    assert "Traceback" not in logs.text and "exception" not in lines[0]


async def test_odd_timestamps_are_a_format_error_not_a_crash(tmp_path: Path) -> None:
    async with served(tmp_path) as api, aiohttp.ClientSession() as session:
        for timestamp in ("9" * 4000, "1e9", "١٧٠٠٠٠٠٠٠٠", " 1700000000", ""):
            params = {**signed({}), "timestamp": timestamp}
            async with session.get(f"{api.base}/cjy/queryUsers", params=params) as response:
                body = await response.json()
                expected = 30002 if timestamp == "" else 30003
                assert (response.status, body["code"]) == (200, expected), timestamp


async def test_unknown_paths_and_methods_answer_json(tmp_path: Path) -> None:
    async with served(tmp_path) as api, aiohttp.ClientSession() as session:
        for method, path, status, code in (
            ("GET", "/", 404, 30001),
            ("GET", "/cjy/queryNothing", 404, 30001),
            ("DELETE", "/cjy/queryUsers", 405, 30001),
            ("POST", "/healthz", 405, 30001),
        ):
            async with session.request(method, f"{api.base}{path}") as response:
                assert response.status == status, path
                assert response.content_type == "application/json"
                assert (await response.json())["code"] == code


class _Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, object]]] = []

    def warning(self, event: str, **fields: object) -> None:
        self.lines.append((event, fields))


def test_throttled_warning_counts_what_it_suppressed() -> None:
    now = [0.0]
    recorder = _Recorder()
    throttled = ThrottledWarning(recorder, interval_s=10, clock=lambda: now[0])
    for second in range(25):
        now[0] = float(second)
        throttled.warn("malformed", n=second)
    assert recorder.lines == [
        ("malformed", {"suppressed": 0, "n": 0}),
        ("malformed", {"suppressed": 9, "n": 10}),
        ("malformed", {"suppressed": 9, "n": 20}),
    ]
