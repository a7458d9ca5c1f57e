"""The drain's achieved request rate against the fake Chengjiyun on 127.0.0.1, at 5, 50 and 200
requests/s, with Chengjiyun answering at once and 100 ms away (the fake's ``delay`` fault).

Each case queues enough single-user addUser operations (batch_size 1, so one operation is one
request) for about three seconds of sending at the configured rate, drains them with
``max_in_flight`` requests on the wire at most, and prints the achieved rate and its share of the
configured one. The achieved rate is the steady one Chengjiyun sees: requests answered at the fake
over the second half of the drain (from the middle answer to the last, divided by the time
between them), so neither the first request, which goes alone (the window opens on its
acknowledgement), nor the start-up counts. The drain's whole elapsed time, which includes them,
is printed beside, and so is the ceiling check: the most requests answered in any one second.
The pipeline can reach the configured rate only when rate x latency (the requests that must be
on the wire at once) is at most max_in_flight.

``client_from_config`` gives the client one connection per request in flight
(``max(4, max_in_flight)``); ``--connections`` sets it here (default: max_in_flight), and
``--connections 4`` shows what a pool of 4 would allow.

Run: .venv/bin/python bench/bench_drain.py [--max-in-flight 32 (the default)] [--connections N] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import math
import random
import sys
import tempfile
import time
from pathlib import Path

from syncd.clients.chengjiyun import ChengjiyunClient
from syncd.config import ChengjiyunConfig, SafetyConfig
from syncd.core.diff import diff_source
from syncd.core.model import User
from syncd.engine.drain import OutboxWorker
from syncd.log import configure_logging
from syncd.sandbox.chengjiyun import FakeChengjiyun
from syncd.store import Store

RATES_PER_S = (5.0, 50.0, 200.0)
LATENCIES_S = (0.0, 0.1)


async def enqueue(store: Store, n: int) -> None:
    desired = {f"cc-{i}": User(f"cc-{i}", f"Pupil {i}", ("学生",), "classcharts") for i in range(n)}
    diff = diff_source(
        source="classcharts",
        desired=desired,
        acknowledged={},
        complete=True,
        failed_owners=frozenset(),
        approved_ids=frozenset(),
        safety=SafetyConfig(),
        desired_class_statuses=None,
        stored_class_statuses={},
    )
    await store.commit_cycle(diff, desired, may_delete_orphans=True)


async def one_case(
    rate_per_s: float,
    latency_s: float,
    *,
    max_in_flight: int,
    connections: int,
    seconds: float,
    directory: Path,
) -> tuple[int, float, float, int]:
    """Drain ``rate x seconds`` requests; return (requests, elapsed seconds, achieved rate, the
    most requests answered in any one second)."""
    requests = max(10, math.ceil(rate_per_s * seconds))
    fake = FakeChengjiyun()
    await fake.start()
    if latency_s > 0:
        fake.faults.add("delay", times=None, value=latency_s)
    path = directory / f"drain-{rate_per_s:g}-{latency_s:g}.db"
    try:
        async with await Store.open(path) as store:
            await enqueue(store, requests)
            async with ChengjiyunClient(
                connections=connections,
                base_url=fake.base_url,
                platform=fake.platform,
                key=fake.key,
                org_id=fake.org_id,
            ) as client:
                worker = OutboxWorker(
                    store,
                    client,
                    batch_size=1,
                    requests_per_second=rate_per_s,
                    max_in_flight=max_in_flight,
                    rng=random.Random(1),
                )
                started = time.perf_counter()
                report = await worker.drain(timeout_s=120.0)
                elapsed_s = time.perf_counter() - started
            if report.remaining or report.requests != requests:
                raise SystemExit(f"drain incomplete: {report}")
    finally:
        await fake.stop()
    answered = sorted(push.at for push in fake.pushes)
    steady = answered[len(answered) // 2 :]
    peak = max(bisect.bisect_left(answered, at + 1.0) - i for i, at in enumerate(answered))
    return requests, elapsed_s, (len(steady) - 1) / (steady[-1] - steady[0]), peak


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--max-in-flight", type=int, default=ChengjiyunConfig.model_fields["max_in_flight"].default
    )
    parser.add_argument("--connections", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    connections = args.connections or args.max_in_flight
    configure_logging(level="WARNING", stream=sys.stderr)
    print(
        f"max_in_flight={args.max_in_flight}, connections={connections}, batch_size=1, "
        f"~{args.seconds:g} s per case"
    )
    print(
        f"{'rate/s':>7} {'latency':>8} {'requests':>9} {'elapsed':>8} {'achieved/s':>11} {'%':>6} "
        f"{'peak 1 s':>9}"
    )
    with tempfile.TemporaryDirectory() as directory:
        for latency_s in LATENCIES_S:
            for rate_per_s in RATES_PER_S:
                requests, elapsed_s, achieved_per_s, peak = await one_case(
                    rate_per_s,
                    latency_s,
                    max_in_flight=args.max_in_flight,
                    connections=connections,
                    seconds=args.seconds,
                    directory=Path(directory),
                )
                share = 100.0 * achieved_per_s / rate_per_s
                needed = rate_per_s * latency_s
                note = "" if needed <= args.max_in_flight else "  (rate x latency > max_in_flight)"
                print(
                    f"{rate_per_s:>7g} {latency_s * 1000:>6.0f}ms {requests:>9} "
                    f"{elapsed_s:>7.2f}s {achieved_per_s:>11.1f} {share:>5.0f}% {peak:>9}{note}"
                )


if __name__ == "__main__":
    asyncio.run(main())
