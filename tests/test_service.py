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
from syncd.core.signing import sign
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


async def test_run_syncs_serves_and_stops_cleanly_on_sigterm(
    sandbox: Sandbox, tmp_path: Path
) -> None:
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
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=subprocess_env(NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="400000"),
    )
    try:
        await wait_for(lambda: "READY=1" in drain_notify())
        expected = sandbox.expected_user_ids()
        await wait_for(
            lambda: (
                set(sandbox.chengjiyun.users) == expected
                and sandbox.chengjiyun.class_status_notifies == 1
            )
        )

        params = {
            "orgId": sandbox.chengjiyun.org_id,
            "role": "教师",
            "timestamp": str(int(time.time())),
        }
        params["sign"] = sign(params, sandbox.chengjiyun.key)
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"http://127.0.0.1:{port}/queryUsers", params=params
            ) as response:
                body = await response.json()
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                health = await response.json()
        assert body["code"] == 0
        assert {u["id"] for u in body["data"]} == {u for u in expected if u.startswith("ep-")}
        assert health["healthy"] is True and set(health["sources"]) == {"classcharts", "epaas"}
        await wait_for(lambda: "WATCHDOG=1" in drain_notify())
        status = await asyncio.create_subprocess_exec(
            *syncd_command("--config", str(config), "status"),
            stdout=asyncio.subprocess.PIPE,
            env=subprocess_env(),
        )
        shown = (await status.communicate())[0].decode()
        assert f"syncing process: pid {process.pid} (run)" in shown, shown
        assert "next poll" in shown and status.returncode == 0
        locked = await asyncio.create_subprocess_exec(
            *syncd_command("--config", str(config), "--run-once"),
            stderr=asyncio.subprocess.PIPE,
            env=subprocess_env(),
        )
        refusal = (await locked.communicate())[1].decode()
        assert locked.returncode == 75 and f"pid {process.pid}" in refusal

        drain_notify()  # room in the socket's queue (about ten datagrams) for STOPPING=1
        process.send_signal(signal.SIGTERM)
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    assert "STOPPING=1" in drain_notify()
    events = [
        json.loads(line)["event"] for line in stdout.decode().splitlines() if line.startswith("{")
    ]
    assert "syncd started" in events and "syncd stopped" in events
    async with await Store.open(sandbox.database, readonly=True) as store:
        assert await store.queue_depth() == {}
        assert await store.dead_letters() == []


async def test_a_pause_range_means_no_polling_and_no_pushing(sandbox: Sandbox) -> None:
    today = time.strftime("%Y-%m-%d")
    pause = f"pause = [ {{ start = {today}, end = {today} }} ]\n"
    config = sandbox.config(listen=f"127.0.0.1:{free_port()}")
    config.write_text(config.read_text(encoding="utf-8") + f"[schedule]\n{pause}", encoding="utf-8")

    process = await asyncio.create_subprocess_exec(
        *syncd_command("--config", str(config), "--log-level", "debug", "run"),
        stdout=asyncio.subprocess.PIPE,
        env=subprocess_env(),
    )
    assert process.stdout is not None
    skipped: set[str] = set()
    lines: list[str] = []
    while skipped != {"classcharts", "epaas"}:  # both polls at start-up came and went
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        assert line, "".join(lines)
        lines.append(line)
        if "poll skipped inside a pause range" in line:
            skipped.add(json.loads(line)["job"])
    process.send_signal(signal.SIGTERM)
    stdout = "".join(lines) + (await process.communicate())[0].decode()
    assert process.returncode == 0
    assert "pause range begins" in stdout
    assert (
        sandbox.classcharts.requests == []
        and sandbox.epaas.requests == []
        and sandbox.chengjiyun.requests == []
    )

    once = await asyncio.create_subprocess_exec(
        *syncd_command("--config", str(config), "--run-once"),
        stdout=asyncio.subprocess.PIPE,
        env=subprocess_env(),
    )
    out, _ = await once.communicate()
    assert once.returncode == 0 and "pause range" in out.decode()
    assert sandbox.chengjiyun.requests == []


async def test_serve_answers_and_stops_cleanly(sandbox: Sandbox) -> None:
    port = free_port()
    config = sandbox.config(listen=f"127.0.0.1:{port}")
    process = await asyncio.create_subprocess_exec(
        *syncd_command("--config", str(config), "serve"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=subprocess_env(),
    )
    try:
        body = None
        for _ in range(100):
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{port}/healthz") as response,
                ):
                    body = await response.json()
                break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
        assert body is not None and "sources" in body
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    assert sandbox.chengjiyun.requests == [], "serve alone never pushes"


async def test_a_failing_source_is_logged_once_per_state_change_and_backs_off(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    import io
    import logging

    from syncd.clients.chengjiyun import client_from_config
    from syncd.config import load_config
    from syncd.engine.cycle import School
    from syncd.engine.drain import worker_from_config
    from syncd.engine.service import SchoolService
    from syncd.log import configure_logging

    config = load_config(sandbox.config())
    sandbox.epaas.corp["permanent_code"] = "revoked"
    clock = [time.time()]
    daemon = SchoolService(config, clock=lambda: clock[0])
    stream = io.StringIO()
    configure_logging(json_output=True, stream=stream, level="INFO")
    try:
        async with (
            await Store.open(config.store.path) as store,
            client_from_config(config) as client,
        ):
            daemon.school = School(config, store)
            daemon.worker = worker_from_config(config, store, client)
            for _ in range(3):
                await daemon._poll("epaas")
            token_calls = len(sandbox.epaas.requests)
            await daemon._poll("epaas")  # backing off: not even tried
            assert len(sandbox.epaas.requests) == token_calls
            clock[0] += 2 * 3600 + 1
            sandbox.epaas.corp["permanent_code"] = "sandbox-permanent"
            await daemon._poll("epaas")
            await daemon._poll("epaas")
    finally:
        logging.getLogger().handlers.clear()
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    about_epaas = [
        (e["level"], e["event"])
        for e in events
        if e.get("source") == "epaas" and e["event"].startswith("source")
    ]
    skipped = [e for e in events if e["event"] == "record skipped or adjusted"]
    assert len(skipped) == len({e["detail"] for e in skipped}), (
        "a skipped record is reported once, not every poll"
    )
    assert about_epaas == [
        ("warning", "source failed; retrying on its schedule"),
        ("error", "source is failing; polling it with back-off until it recovers"),
        ("info", "source recovered"),
    ]
    assert "revoked" not in stream.getvalue()


async def test_a_flood_of_held_pull_connections_does_not_stop_the_sync(
    sandbox: Sandbox,
) -> None:
    """More idle connections than the pull API's cap, held while the daemon's first cycle
    polls and pushes, in a process that may open only 512 files."""
    import resource

    port = free_port()
    config = sandbox.config(listen=f"127.0.0.1:{port}")

    def few_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))

    # Slow logins keep the first cycle polling for a few seconds, long enough to flood it.
    sandbox.classcharts.faults.add("delay", path="/parent/login", times=None, value=0.5)
    process = await asyncio.create_subprocess_exec(
        *syncd_command("--config", str(config), "run"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=subprocess_env(),
        preexec_fn=few_files,
    )
    held: list[socket.socket] = []
    try:
        await wait_for(lambda: _listening(port))
        for _ in range(300):  # the cap is 256: the rest wait in the listen backlog
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        assert not sandbox.chengjiyun.users, "the flood is held while the cycle still polls"
        await wait_for(lambda: set(sandbox.chengjiyun.users) == sandbox.expected_user_ids())
        assert sandbox.chengjiyun.class_status_notifies == 1
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        for sock in held:
            sock.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    assert b"Too many open files" not in output


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
