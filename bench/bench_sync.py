"""First sync of 20,000 pupils at 50 requests/s in batches of 100, then a no-change cycle and a
1%-changed cycle, against the sandbox fakes on 127.0.0.1 (in one process).

The pupils belong to 4 parent accounts (5,000 each), so Chengjiyun receives 20,004 users: the
pupils plus the 4 parent users.
Run: .venv/bin/python bench/bench_sync.py
"""

from __future__ import annotations

import asyncio
import math
import sys
import tempfile
import time
from pathlib import Path

from syncd.clients.chengjiyun import client_from_config
from syncd.config import load_config
from syncd.engine.cycle import run_cycle
from syncd.engine.drain import worker_from_config
from syncd.log import configure_logging
from syncd.sandbox.chengjiyun import FakeChengjiyun
from syncd.sandbox.classcharts import FakeClassCharts
from syncd.store import Store

PUPILS = 20_000
PARENTS = 4
RATE = 50
BATCH = 100


async def cycle(config_path: Path, fake: FakeChengjiyun) -> tuple[float, float, dict[str, int]]:
    config = load_config(config_path)
    before = len(fake.pushes)
    async with await Store.open(config.store.path) as store:
        started = time.perf_counter()
        await run_cycle(config, store, ["classcharts"], command="bench")
        polled = time.perf_counter()
        async with client_from_config(config) as client:
            await worker_from_config(config, store, client).drain()
        drained = time.perf_counter()
    counts: dict[str, int] = {}
    for push in fake.pushes[before:]:
        counts[push.endpoint] = counts.get(push.endpoint, 0) + 1
    return polled - started, drained - polled, counts


async def main() -> None:
    configure_logging(level="WARNING", stream=sys.stderr)
    classcharts, chengjiyun = FakeClassCharts(), FakeChengjiyun()
    for n in range(PUPILS):
        classcharts.add_pupil(100_000 + n, "Pupil", str(n))
    per_parent = PUPILS // PARENTS
    for p in range(PARENTS):
        ids = list(range(100_000 + p * per_parent, 100_000 + (p + 1) * per_parent))
        classcharts.add_parent(
            p + 1, f"Parent {p}", f"parent{p}@bench.invalid", "bench-password", ids
        )
    cc_url, cjy_url = await classcharts.start(), await chengjiyun.start()
    with tempfile.TemporaryDirectory() as directory:
        config_path = Path(directory) / "syncd.toml"
        parents = "".join(
            f'[[classcharts.parents]]\nemail = "parent{p}@bench.invalid"\npassword = "bench-password"\n'
            for p in range(PARENTS)
        )
        config_path.write_text(
            f'[store]\npath = "{directory}/syncd.db"\n'
            f'[chengjiyun]\nbase_url = "{cjy_url}"\nplatform = "{chengjiyun.platform}"\nkey = "{chengjiyun.key}"\n'
            f'org_id = "{chengjiyun.org_id}"\nrequests_per_second = {RATE}\nbatch_size = {BATCH}\n'
            f'[classcharts]\nbase_url = "{cc_url}"\n{parents}',
            encoding="utf-8",
        )
        users = PUPILS + PARENTS
        poll_s, drain_s, counts = await cycle(config_path, chengjiyun)
        requests = counts.get("addUser", 0)
        ideal_s = requests / RATE
        print(
            f"first sync: {users:,} users -> {requests} addUser requests (expected ceil({users}/{BATCH}) = {math.ceil(users / BATCH)})"
        )
        print(
            f"  poll+map+diff+enqueue {poll_s:.2f} s; drain {drain_s:.2f} s vs requests/rate {ideal_s:.2f} s "
            f"({(drain_s / ideal_s - 1) * 100:+.1f}%, target within ±10%)"
        )

        poll_s, drain_s, counts = await cycle(config_path, chengjiyun)
        print(
            f"no-change cycle: {sum(counts.values())} requests sent (target 0), {poll_s + drain_s:.2f} s in all (target < 3 s)"
        )

        changed = PUPILS // 100
        for n in range(changed):
            classcharts.rename_pupil(100_000 + n * 97 % PUPILS, "Renamed", str(n))
        poll_s, drain_s, counts = await cycle(config_path, chengjiyun)
        print(
            f"1%-changed cycle: {changed} renamed -> {counts.get('updateUser', 0)} updateUser requests "
            f"(expected ceil({changed}/{BATCH}) = {math.ceil(changed / BATCH)}), other requests: "
            f"{sum(v for k, v in counts.items() if k != 'updateUser')}, {poll_s + drain_s:.2f} s"
        )
    await classcharts.stop()
    await chengjiyun.stop()


if __name__ == "__main__":
    asyncio.run(main())
