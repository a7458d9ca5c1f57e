"""`syncd run` as a subprocess against the sandbox: ready, a cycle, the pull API, a clean SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from conftest import subprocess_env, syncd_command
from sandbox_helpers import Sandbox, start_sandbox, stop_sandbox
from syncd.signing import sign
from syncd.store import Store


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    box = await start_sandbox(tmp_path)
    yield box
    await stop_sandbox(box)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for(condition, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_run_syncs_serves_and_stops_cleanly_on_sigterm(sandbox: Sandbox, tmp_path: Path) -> None:
    port = free_port()
    config = sandbox.config(listen=f"127.0.0.1:{port}")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.setblocking(False)
    messages: list[str] = []

    def drain_notify() -> list[str]:
        while True:
            try:
                messages.append(notify.recv(256).decode())
            except BlockingIOError:
                return messages

    process = await asyncio.create_subprocess_exec(
        *syncd_command("--config", str(config), "run"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=subprocess_env(NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="400000"),
    )
    try:
        await wait_for(lambda: "READY=1" in drain_notify())
        expected = sandbox.expected_user_ids()
        await wait_for(lambda: set(sandbox.chengjiyun.users) == expected and sandbox.chengjiyun.class_status_notifies == 1)

        params = {"orgId": sandbox.chengjiyun.org_id, "role": "教师", "timestamp": str(int(time.time()))}
        params["sign"] = sign(params, sandbox.chengjiyun.key)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/queryUsers", params=params) as response:
                body = await response.json()
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                health = await response.json()
        assert body["code"] == 0
        assert {u["id"] for u in body["data"]} == {u for u in expected if u.startswith("ep-")}
        assert health["healthy"] is True and set(health["sources"]) == {"classcharts", "epaas"}
        await wait_for(lambda: "WATCHDOG=1" in drain_notify())

        process.send_signal(signal.SIGTERM)
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    assert "STOPPING=1" in drain_notify()
    events = [json.loads(line)["event"] for line in stdout.decode().splitlines() if line.startswith("{")]
    assert "syncd started" in events and "syncd stopped" in events
    async with await Store.open(sandbox.database, readonly=True) as store:
        assert await store.queue_depth() == {}
        assert await store.dead_letters() == []
