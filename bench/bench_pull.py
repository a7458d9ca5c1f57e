"""The pull API under load: queryUsers for 20,000 and 100,000 users, served by `syncd serve` in
a subprocess on 127.0.0.1 (its own process, so its RSS is measured alone, from /proc).

Per school size: single-request latency (answer already built), response bytes plain and gzip,
requests/s with 16 concurrent clients, and the server's peak RSS (VmHWM) during 2,000
concurrent requests. Also the replay cache's memory per entry.

Targets: 2,000 concurrent queryUsers on a 20,000-user school keep the server's peak RSS under
150 MB; queryUsers of 100,000 users answers in under 100 ms from memory.
Run: .venv/bin/python bench/bench_pull.py [--sizes 20000,100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import aiohttp

from syncd.core.model import User
from syncd.core.signing import sign
from syncd.server.replay import ReplayCache
from syncd.store import Store

KEY = "bench-pull-key"
ORG = "bench-school"
CLIENTS = 16
BURST = 2000
SEQUENTIAL = 20
THROUGHPUT_REQUESTS = {20_000: 320, 100_000: 96}
CONFIG = """\
[store]
path = "{db}"

[chengjiyun]
platform = "bench"
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


class Signer:
    """Unique signed parameters: an extra ``n`` parameter keeps every sign distinct."""

    def __init__(self) -> None:
        self._n = 0

    def params(self) -> dict[str, str]:
        self._n += 1
        values = {"orgId": ORG, "timestamp": str(int(time.time())), "n": str(self._n)}
        return {**values, "sign": sign(values, KEY)}


def users(count: int) -> list[User]:
    return [
        User(
            f"cc-{100000 + n}",
            f"学生{n}",
            ("学生",),
            "classcharts",
            school_id=f"2025{n:06d}",
            gender="男" if n % 2 else "女",
            grade=7 + n % 6,
            class_no=1 + n % 12,
        )
        for n in range(count)
    ]


async def fill(db: Path, count: int) -> None:
    async with await Store.open(db) as store, store.write() as conn:
        await conn.executemany(
            "INSERT INTO users (id, source, record, hash, acked_at) VALUES (?, ?, ?, ?, ?)",
            [
                (
                    u.id,
                    u.source,
                    json.dumps(u.to_json(), ensure_ascii=False),
                    u.content_hash(),
                    time.time(),
                )
                for u in users(count)
            ],
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


async def fetch(
    session: aiohttp.ClientSession, url: str, params: dict[str, str], *, gzip: bool = False
) -> tuple[int, int]:
    """(status, body bytes), reading in chunks so the client holds no whole body."""
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    async with session.get(url, params=params, headers=headers) as response:
        size = 0
        async for chunk in response.content.iter_chunked(65536):
            size += len(chunk)
        return response.status, size


async def wait_listening(port: int, server: asyncio.subprocess.Process) -> None:
    for _ in range(200):
        if server.returncode is not None:
            raise RuntimeError("syncd serve exited early")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("syncd serve did not start listening")


async def bench_size(count: int, workdir: Path) -> dict[str, Any]:
    db = workdir / f"pull-{count}.db"
    await fill(db, count)
    port = free_port()
    config = workdir / f"pull-{count}.toml"
    config.write_text(CONFIG.format(db=db, key=KEY, org=ORG, port=port))
    log_path = workdir / f"serve-{count}.log"
    with log_path.open("wb") as log_file:
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "syncd",
            "--config",
            str(config),
            "serve",
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        await wait_listening(port, server)
        url = f"http://127.0.0.1:{port}/cjy/queryUsers"
        signer = Signer()
        result: dict[str, Any] = {"users": count}
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=CLIENTS), auto_decompress=False
        ) as session:
            started = time.perf_counter()
            _, result["plain_bytes"] = await fetch(session, url, signer.params())
            result["first_ms"] = (time.perf_counter() - started) * 1000  # includes the build
            _, result["gzip_bytes"] = await fetch(session, url, signer.params(), gzip=True)
            times = []
            for _ in range(SEQUENTIAL):
                started = time.perf_counter()
                status, _ = await fetch(session, url, signer.params())
                times.append((time.perf_counter() - started) * 1000)
                assert status == 200
            result["latency_ms_median"] = statistics.median(times)
            result["latency_ms_max"] = max(times)
            gz_times = []
            for _ in range(SEQUENTIAL):
                started = time.perf_counter()
                await fetch(session, url, signer.params(), gzip=True)
                gz_times.append((time.perf_counter() - started) * 1000)
            result["gzip_latency_ms_median"] = statistics.median(gz_times)

            total = THROUGHPUT_REQUESTS.get(count, 160)
            queue: asyncio.Queue[int] = asyncio.Queue()
            for n in range(total):
                queue.put_nowait(n)

            async def client() -> None:
                while not queue.empty():
                    queue.get_nowait()
                    status, _ = await fetch(session, url, signer.params())
                    assert status == 200

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(CLIENTS)))
            result["rps_16_clients"] = total / (time.perf_counter() - started)

        result["rss_before_burst_mb"] = proc_kib(server.pid, "VmRSS") / 1024
        result["peak_rss_before_burst_mb"] = proc_kib(server.pid, "VmHWM") / 1024
        async with aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=BURST), auto_decompress=False
        ) as session:
            peak_rss_kib = 0
            done = asyncio.Event()

            async def sample() -> None:
                nonlocal peak_rss_kib
                while not done.is_set():
                    peak_rss_kib = max(peak_rss_kib, proc_kib(server.pid, "VmRSS"))
                    await asyncio.sleep(0.01)

            sampler = asyncio.create_task(sample())
            started = time.perf_counter()
            statuses = await asyncio.gather(
                *(fetch(session, url, signer.params()) for _ in range(BURST))
            )
            result["burst_s"] = time.perf_counter() - started
            done.set()
            await sampler
        result["burst_ok"] = sum(1 for status, _ in statuses if status == 200)
        result["burst_peak_rss_mb"] = max(peak_rss_kib, proc_kib(server.pid, "VmRSS")) / 1024
        result["peak_rss_process_mb"] = proc_kib(server.pid, "VmHWM") / 1024
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)
    text = log_path.read_text(errors="replace")
    result["log_lines"] = len(text.splitlines())
    result["too_many_open_files"] = text.count("Too many open files")
    return result


def replay_entry_bytes(entries: int = 100_000) -> float:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache = ReplayCache(window_s=600, max_entries=entries)
    now = int(time.time())
    for n in range(entries):
        key = n.to_bytes(16, "big") + b"queryUsers"
        cache.admit(key, now - 600 + n % 1200, now)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(cache) == entries
    return used / entries


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="20000,100000")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the clients need descriptors too
    print(f"replay cache: {replay_entry_bytes():.0f} bytes per entry (100,000 entries)")
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in (int(size) for size in args.sizes.split(",")):
            r = await bench_size(count, Path(tmp))
            if count == 20_000:
                verdicts.append(
                    f"target: {BURST} concurrent on 20,000 users, server peak RSS "
                    f"{r['burst_peak_rss_mb']:.0f} MB (VmHWM {r['peak_rss_process_mb']:.0f} MB) "
                    f"< 150 MB: {'met' if r['peak_rss_process_mb'] < 150 else 'MISSED'}"
                )
            if count == 100_000:
                verdicts.append(
                    f"target: 100,000 users from memory, median {r['latency_ms_median']:.1f} ms "
                    f"(max {r['latency_ms_max']:.1f}) < 100 ms: "
                    f"{'met' if r['latency_ms_max'] < 100 else 'MISSED'}"
                )
            print(
                f"queryUsers {r['users']:,} users: "
                f"{r['plain_bytes'] / 1e6:.2f} MB plain, {r['gzip_bytes'] / 1e6:.2f} MB gzip; "
                f"first request (builds) {r['first_ms']:.0f} ms; "
                f"from memory median {r['latency_ms_median']:.1f} ms "
                f"(max {r['latency_ms_max']:.1f}), gzip median {r['gzip_latency_ms_median']:.1f} ms; "
                f"{r['rps_16_clients']:.1f} req/s with {CLIENTS} clients"
            )
            print(
                f"  {BURST} concurrent: {r['burst_ok']}/{BURST} answered 200 in "
                f"{r['burst_s']:.1f} s; server RSS {r['rss_before_burst_mb']:.0f} MB before, "
                f"peak {r['burst_peak_rss_mb']:.0f} MB during (process VmHWM "
                f"{r['peak_rss_process_mb']:.0f} MB, {r['peak_rss_before_burst_mb']:.0f} MB "
                f"before the burst); server log {r['log_lines']} lines, "
                f"'Too many open files' x{r['too_many_open_files']}"
            )
    for verdict in verdicts:
        print(verdict)


if __name__ == "__main__":
    asyncio.run(main())
