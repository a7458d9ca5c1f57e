"""First sync of 20,000 pupils at 50 requests/s in batches of 100, then a no-change cycle and a
1%-changed cycle, against the sandbox fakes on 127.0.0.1 (in one process), for two account
shapes:

* ``4-parents``: the pupils belong to 4 parent accounts (5,000 each), so Chengjiyun receives
  20,004 users: the pupils plus the 4 parent users;
* ``realistic``: the sandbox generator's families (``generate_school``: about one parent
  account per 1.3 pupils, siblings share), so Chengjiyun receives the pupils plus ~15,400
  parent users, and a cycle logs into every one of those accounts.

Only ClassCharts is synced (no epaas, no student logins). Each cycle opens the store, builds a
``School`` and runs ``run_cycle`` then one drain, as ``--run-once`` does.
Run: .venv/bin/python bench/bench_sync.py [--shape 4-parents|realistic|both] [--pupils N]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from pathlib import Path

from syncd.clients.chengjiyun import client_from_config
from syncd.config import load_config
from syncd.engine.cycle import School, run_cycle
from syncd.engine.drain import worker_from_config
from syncd.log import configure_logging
from syncd.sandbox.chengjiyun import FakeChengjiyun
from syncd.sandbox.classcharts import FakeClassCharts
from syncd.sandbox.school import PARENT_PASSWORD, generate_school
from syncd.store import Store

PUPILS = 20_000
PARENTS = 4
RATE = 50
BATCH = 100
FIRST_PUPIL = 1001  # generate_school numbers pupils from 1001


async def cycle(config_path: Path, fake: FakeChengjiyun) -> tuple[float, float, dict[str, int]]:
    config = load_config(config_path)
    before = len(fake.pushes)
    async with await Store.open(config.store.path) as store:
        started = time.perf_counter()
        await run_cycle(School(config, store), ["classcharts"], command="bench")
        polled = time.perf_counter()
        async with client_from_config(config) as client:
            await worker_from_config(config, store, client).drain()
        drained = time.perf_counter()
    counts: dict[str, int] = {}
    for push in fake.pushes[before:]:
        counts[push.endpoint] = counts.get(push.endpoint, 0) + 1
    return polled - started, drained - polled, counts


def families(shape: str, pupils: int) -> dict[int, tuple[str, list[int]]]:
    """parent id -> (email, pupil ids)."""
    if shape == "realistic":
        school = generate_school(pupils, seed=7)
        return {pid: (email, ids) for pid, (_, email, ids) in school.parents.items()}
    per_parent = math.ceil(pupils / PARENTS)
    ids = list(range(FIRST_PUPIL, FIRST_PUPIL + pupils))
    return {
        p + 1: (f"parent{p}@bench.invalid", ids[p * per_parent : (p + 1) * per_parent])
        for p in range(PARENTS)
    }


async def run_shape(shape: str, pupils: int) -> dict[str, str]:
    classcharts, chengjiyun = FakeClassCharts(), FakeChengjiyun()
    for n in range(pupils):
        classcharts.add_pupil(FIRST_PUPIL + n, "Pupil", str(n))
    parents = families(shape, pupils)
    for parent_id, (email, ids) in parents.items():
        classcharts.add_parent(parent_id, f"Parent {parent_id}", email, PARENT_PASSWORD, ids)
    cc_url, cjy_url = await classcharts.start(), await chengjiyun.start()
    row: dict[str, str] = {"shape": shape, "accounts": f"{len(parents):,}"}
    try:
        with tempfile.TemporaryDirectory() as directory:
            config_path = Path(directory) / "syncd.toml"
            blocks = "".join(
                f'[[classcharts.parents]]\nemail = "{email}"\npassword = "{PARENT_PASSWORD}"\n'
                for email, _ in parents.values()
            )
            config_path.write_text(
                f'[store]\npath = "{directory}/syncd.db"\n'
                f'[chengjiyun]\nbase_url = "{cjy_url}"\nplatform = "{chengjiyun.platform}"\n'
                f'key = "{chengjiyun.key}"\norg_id = "{chengjiyun.org_id}"\n'
                f"requests_per_second = {RATE}\nbatch_size = {BATCH}\n"
                f'[classcharts]\nbase_url = "{cc_url}"\n{blocks}',
                encoding="utf-8",
            )
            users = pupils + len(parents)
            poll_s, drain_s, counts = await cycle(config_path, chengjiyun)
            requests = counts.get("addUser", 0)
            ideal_s = requests / RATE
            row["users"] = f"{users:,}"
            row["first: addUser req"] = f"{requests} (ideal {math.ceil(users / BATCH)})"
            row["first: cycle s"] = f"{poll_s:.2f}"
            row["first: drain s"] = (
                f"{drain_s:.2f} vs {ideal_s:.2f} ({(drain_s / ideal_s - 1) * 100:+.1f}%)"
            )
            row["first: exact"] = str(len(chengjiyun.users) == users)

            poll_s, drain_s, counts = await cycle(config_path, chengjiyun)
            row["no-change: requests"] = str(sum(counts.values()))
            row["no-change: s"] = f"{poll_s + drain_s:.2f} (cycle {poll_s:.2f})"

            changed = pupils // 100
            for n in range(changed):
                classcharts.rename_pupil(FIRST_PUPIL + n * 97 % pupils, "Renamed", str(n))
            poll_s, drain_s, counts = await cycle(config_path, chengjiyun)
            others = sum(v for k, v in counts.items() if k != "updateUser")
            row["1%: updateUser req"] = (
                f"{counts.get('updateUser', 0)} (ideal {math.ceil(changed / BATCH)}), other {others}"
            )
            row["1%: s"] = f"{poll_s + drain_s:.2f} (cycle {poll_s:.2f})"
    finally:
        await classcharts.stop()
        await chengjiyun.stop()
    return row


def print_table(rows: list[dict[str, str]]) -> None:
    keys = list(rows[0])
    width = max(len(k) for k in keys)
    cols = [max(len(r[k]) for k in keys) for r in rows]
    for key in keys:
        cells = "  ".join(r[key].ljust(c) for r, c in zip(rows, cols, strict=True))
        print(f"{key.ljust(width)}  {cells}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=("4-parents", "realistic", "both"), default="both")
    parser.add_argument("--pupils", type=int, default=PUPILS)
    args = parser.parse_args()
    configure_logging(level="WARNING", stream=sys.stderr)
    shapes = ("4-parents", "realistic") if args.shape == "both" else (args.shape,)
    rows = []
    for shape in shapes:
        rows.append(await run_shape(shape, args.pupils))
    print(
        f"{args.pupils:,} pupils, ClassCharts only, {RATE} requests/s, batches of {BATCH} "
        "(targets: drain within ±10% of requests/rate; no-change: 0 requests, < 3 s)"
    )
    print_table(rows)


if __name__ == "__main__":
    asyncio.run(main())
