"""Connection discipline on a real listener: idle keep-alive and slow headers are dropped, and
beyond the connection cap clients wait in the backlog yet are answered once others close."""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from pathlib import Path

import aiohttp
from test_server import KEY, ORG, USERS, make_config, signed
from test_server_helpers import LogCapture, parse_response, served

from conftest import subprocess_env, syncd_command
from store_helpers import acknowledge
from syncd.server.app import listening_port
from syncd.server.connections import ConnectionLimits, LimitedSite, raise_open_files_limit
from syncd.store import Store


def _request(path: str = "/healthz") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


async def _closed_after_s(reader: asyncio.StreamReader, *, limit_s: float) -> float:
    """Seconds until the server closes the connection (reading and discarding what it sends)."""
    started = time.monotonic()
    while await asyncio.wait_for(reader.read(65536), limit_s):
        pass
    return time.monotonic() - started


def test_the_defaults_are_the_documented_limits(tmp_path: Path) -> None:
    limits = ConnectionLimits.from_config(make_config(tmp_path).server)
    assert limits == ConnectionLimits(
        max_connections=256, listen_backlog=1024, keepalive_timeout_s=15, header_timeout_s=10
    )


async def test_idle_keepalive_and_slow_headers_are_dropped_with_the_defaults(
    tmp_path: Path,
) -> None:
    async with served(tmp_path) as api:
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", api.port)
        idle_writer.write(_request())
        head = await asyncio.wait_for(idle_reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")

        async def slowloris() -> float:
            reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
            started = time.monotonic()
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            try:
                for n in range(30):  # one header line every second, never the blank line
                    await asyncio.sleep(1)
                    writer.write(b"X-Drip-%d: 1\r\n" % n)
                    await writer.drain()
                    if reader.at_eof():
                        break
                    try:
                        if await asyncio.wait_for(reader.read(1), 0.01) == b"":
                            break
                    except TimeoutError:
                        pass
            except ConnectionError:
                pass
            finally:
                writer.close()
            return time.monotonic() - started

        idle_s, slow_s = await asyncio.gather(_closed_after_s(idle_reader, limit_s=25), slowloris())
        idle_writer.close()
    assert 14 <= idle_s <= 20, idle_s
    assert 9 <= slow_s <= 12.5, slow_s


async def test_small_timeouts_from_config(tmp_path: Path) -> None:
    async with served(tmp_path, keepalive_timeout_s=0.5, header_timeout_s=0.5) as api:
        # A connection that never sends anything is idle too.
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        assert await _closed_after_s(reader, limit_s=5) < 2
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        assert await _closed_after_s(reader, limit_s=5) < 2
        writer.close()


async def test_beyond_the_cap_a_signed_pull_waits_and_is_answered(tmp_path: Path) -> None:
    cap = 4
    with LogCapture() as logs:
        async with served(tmp_path, max_connections=cap) as api:
            site = next(s for s in api.runner.sites if isinstance(s, LimitedSite))
            # Each held connection has started a request, so none is idle (idle ones get closed
            # at the cap); the header deadline (10 s) is far off.
            held = [await asyncio.open_connection("127.0.0.1", api.port) for _ in range(3 * cap)]
            for _, writer in held:
                writer.write(b"GET /healthz HTTP/1.1\r\n")
            await asyncio.sleep(0.3)
            assert site.open_connections == cap

            async def pull() -> dict[str, object]:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(
                        f"{api.base}/cjy/queryUsers",
                        params=signed({}),
                        timeout=aiohttp.ClientTimeout(total=10),
                    ) as response,
                ):
                    body: dict[str, object] = await response.json()
                    return body

            waiting = asyncio.create_task(pull())
            await asyncio.sleep(2)
            assert not waiting.done(), "answered while the cap was reached"
            for _, writer in held:
                writer.close()
            body = await asyncio.wait_for(waiting, 10)
            assert body["code"] == 0
            for _ in range(50):  # every slot comes back once the clients have gone
                if site.open_connections == 0:
                    break
                await asyncio.sleep(0.1)
            assert site.open_connections == 0
    assert "Too many open files" not in logs.text
    assert not [line for line in logs.lines() if line.get("level") in ("error", "critical")]


async def test_many_connections_beyond_the_cap_are_all_served(tmp_path: Path) -> None:
    async with served(tmp_path, max_connections=8) as api:

        async def one() -> int:
            reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            status, _, _ = parse_response(await asyncio.wait_for(reader.read(), 10))
            writer.close()
            return status

        assert set(await asyncio.gather(*(one() for _ in range(200)))) == {200}


def test_the_open_files_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY and soft == hard and hard > 64:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard // 2, hard))
        raised = raise_open_files_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == raised
        if hard != resource.RLIM_INFINITY:
            assert raised == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_listening_port_needs_a_pull_site(tmp_path: Path) -> None:
    async with served(tmp_path) as api:
        assert listening_port(api.runner) == api.port


async def test_at_the_cap_idle_connections_make_room(tmp_path: Path) -> None:
    """Connections that send nothing (or sit idle after an answer) are closed once the cap is
    reached, so a client waiting in the backlog is answered without anyone letting go."""
    async with served(tmp_path, max_connections=4) as api:
        held = [await asyncio.open_connection("127.0.0.1", api.port) for _ in range(4)]
        reader, writer = held[0]
        writer.write(_request())
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # answered, now idle
        started = time.monotonic()
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{api.base}/cjy/queryUsers",
                params=signed({}),
                timeout=aiohttp.ClientTimeout(total=10),
            ) as response,
        ):
            assert (await response.json())["code"] == 0
        assert time.monotonic() - started < 5
        for _, writer in held:
            writer.close()


SERVE_CONFIG = """\
[store]
path = "{db}"

[chengjiyun]
platform = "p"
key = "{key}"
org_id = "{org}"

[server]
listen = "127.0.0.1:{port}"
base_path = "/cjy"

[epaas]
suite_id = "s"
suite_secret = "s-secret"
suite_ticket = "t-ticket"
auth_corpid = "c"
permanent_code = "p-code"
"""


def _low_descriptor_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))


async def test_out_of_descriptors_is_survived_and_logged_once(tmp_path: Path) -> None:
    """`syncd serve` with 48 descriptors (below the connection cap): accept() fails with
    EMFILE while the connections are held, is retried quietly, and a pull is answered after."""
    db = tmp_path / "syncd.db"
    async with await Store.open(db) as store:
        await acknowledge(store, USERS)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "syncd.toml"
    config.write_text(SERVE_CONFIG.format(db=db, key=KEY, org=ORG, port=port))
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        server = await asyncio.create_subprocess_exec(
            *syncd_command("--config", str(config), "serve"),
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            env=subprocess_env(),
            preexec_fn=_low_descriptor_limit,
        )
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(100):
            try:
                held.append(await asyncio.open_connection("127.0.0.1", port))
                break
            except OSError:
                await asyncio.sleep(0.05)
        held += [await asyncio.open_connection("127.0.0.1", port) for _ in range(80)]
        await asyncio.sleep(2)  # accept() keeps failing meanwhile
        assert server.returncode is None
        for _, writer in held:
            writer.close()
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{port}/cjy/queryUsers",
                params=signed({}),
                timeout=aiohttp.ClientTimeout(total=20),
            ) as response,
        ):
            assert (await response.json())["code"] == 0
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 20)
    text = log_path.read_text(errors="replace")
    assert "Too many open files" not in text
    assert text.count("out of descriptors") == 1, text
    assert "Traceback" not in text
