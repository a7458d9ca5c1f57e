"""The no-change cycle, measured in its own process against the sandbox fakes (127.0.0.1).

The fakes (ClassCharts, epaas, Chengjiyun) run in this process, populated by
``generate_school`` (about one parent account per 1.3 pupils, a teacher per ~15 pupils). The
first sync is done by the real CLI (``python -m syncd --config ... --run-once``). Then a child
process (this file with ``--child``) does what the daemon does: one ``Store``, one ``School``,
one Chengjiyun client and worker; each cycle is ``run_cycle(school, every source,
daemon=True)``, a drain and ``backup_if_due``. The child measures each cycle itself:

* wall seconds and CPU seconds (``time.process_time`` of the child: syncd alone, the fakes'
  CPU is this process's);
* peak RSS during the cycle (VmHWM, reset before each cycle through /proc/self/clear_refs) and
  RSS after it (VmRSS);
* connections opened per cycle: distinct client ports the three fakes saw during the cycle
  (``RecordedRequest.peer_port``), counted here between the child's per-cycle reports.

Part 1: one no-change cycle for each school size (default 2,000, 20,000 and 30,000 pupils).
100,000 pupils is scaled down to 30,000: a cycle costs ~2.4 ms of syncd CPU per ClassCharts
parent account (login, ping, pupils), so 100,000 pupils (~77,000 accounts) would take ~6 min
for the set-up sync and as long again for the measured cycle; ``--sizes 100000`` runs it anyway.
``--accounts K`` gives each school's pupils to K parent accounts instead (the other shape: a few
accounts that each see thousands of pupils).
Part 2: 50 consecutive no-change cycles in one child for a 2,000-pupil school (``--long-pupils``):
CPU seconds of the first and of the last cycle and the median of each tenth of the run (target:
the last within 10% of the first), RSS before/after. On shared cores one cycle's CPU varies by ±20% with identical
work, so part 2 also prints that noise (a fixed workload timed before each cycle) and, with
``--count-calls``, the work itself: Python function calls per cycle (cProfile), which noise does
not change.
Run: .venv/bin/python bench/bench_cycle.py [--sizes 2000,20000,30000] [--cycles 50] [--quick]
     [--count-calls] [--accounts K] [--long-pupils N]
(the default run took 11 min on 2 shared cores; --quick: 2,000 pupils and 10 cycles, ~2 min)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# --- the child: syncd alone in its process ----------------------------------------------------


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _reference_cpu_s() -> float:
    """CPU seconds of a fixed pure-Python workload: how fast this machine is right now.

    Identical work, so its spread over a run is the machine's own noise (shared cores, CPU
    frequency), against which a change in the cycles' CPU has to be read.
    """
    started = time.process_time()
    total = 0
    for n in range(400_000):  # short-lived objects only: it must not change the RSS measured
        total += hash(str(n)) & 0xFF
    return time.process_time() - started


async def child(
    config_path: Path, cycles: int, profile: Path | None = None, count_calls: bool = False
) -> None:
    from syncd.clients.chengjiyun import client_from_config
    from syncd.config import load_config
    from syncd.engine.cycle import School, backup_if_due, run_cycle
    from syncd.engine.drain import worker_from_config
    from syncd.log import configure_logging
    from syncd.store import Store

    configure_logging(level="WARNING", stream=sys.stderr)
    config = load_config(config_path)

    def say(entry: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(entry) + "\n")
        sys.stdout.flush()

    async with await Store.open(config.store.path, backup=config.store.backup) as store:
        school = School(config, store)
        async with client_from_config(config) as client:
            worker = worker_from_config(config, store, client)
            say({"ready": True, "rss_kb": _status_kb("VmRSS")})
            profiler = None
            if profile is not None:
                profiler = cProfile.Profile()
                profiler.enable()
            for n in range(1, cycles + 1):
                reference_s = _reference_cpu_s()
                resettable = _reset_peak()
                counter = cProfile.Profile() if count_calls else None
                wall, cpu = time.perf_counter(), time.process_time()
                if counter is not None:
                    counter.enable()
                report = await run_cycle(school, config.enabled_sources, command="run", daemon=True)
                drain = await worker.drain()
                await backup_if_due(school, report, today=dt.date.today())
                if counter is not None:
                    counter.disable()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                say(
                    {
                        "cycle": n,
                        "wall_s": wall,
                        "cpu_s": cpu,
                        "peak_kb": _status_kb("VmHWM"),
                        "peak_is_cycle": resettable,
                        "rss_kb": _status_kb("VmRSS"),
                        "outcome": str(report.outcome),
                        "requests": drain.requests,
                        "queued": drain.remaining,
                        "reference_s": reference_s,
                        "calls": (
                            sum(entry.callcount for entry in counter.getstats())
                            if counter is not None
                            else None
                        ),
                    }
                )
            if profiler is not None and profile is not None:
                profiler.disable()
                profiler.dump_stats(profile)


# --- the parent: the fakes, the set-up sync, the child -----------------------------------------


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}


async def _set_up(
    pupils: int, directory: Path, limit_s: float, accounts: int | None = None
) -> tuple[Any, list[Any], Path]:
    from syncd.sandbox.chengjiyun import FakeChengjiyun
    from syncd.sandbox.classcharts import FakeClassCharts
    from syncd.sandbox.epaas import FakeEpaas
    from syncd.sandbox.school import generate_school, populate, shaped, write_config

    school = shaped(generate_school(pupils, seed=7, today=dt.date.today()), accounts)
    fakes = [FakeClassCharts(), FakeEpaas(), FakeChengjiyun()]
    populate(school, fakes[0], fakes[1])
    urls = [await fake.start() for fake in fakes]
    config = write_config(
        directory / "syncd.toml",
        school=school,
        database=directory / "syncd.db",
        classcharts_url=urls[0],
        epaas_url=urls[1],
        chengjiyun=fakes[2],
        chengjiyun_url=urls[2],
    )
    # The set-up sync is not what is measured: send it fast.
    text = config.read_text(encoding="utf-8")
    text = text.replace("requests_per_second = 200", "requests_per_second = 1000")
    config.write_text(text.replace("batch_size = 100", "batch_size = 1000"), encoding="utf-8")
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncd",
        "--config",
        str(config),
        "--run-once",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=limit_s)
    if process.returncode != 0:
        raise SystemExit(f"set-up --run-once exited {process.returncode}: {stderr[-2000:]!r}")
    print(
        f"  set-up: {pupils:,} pupils, {len(school.parents):,} parent accounts, "
        f"{len(fakes[2].users):,} users at Chengjiyun, first sync {time.monotonic() - started:.1f} s",
        flush=True,
    )
    return school, fakes, config


def _ports(fakes: list[Any], marks: list[int]) -> str:
    """Distinct client ports per fake since ``marks``: "total (ClassCharts/epaas/Chengjiyun)"."""
    each = [
        len({r.peer_port for r in fake.requests[mark:] if r.peer_port is not None})
        for fake, mark in zip(fakes, marks, strict=True)
    ]
    return f"{sum(each)} ({'/'.join(map(str, each))})"


async def _measure(
    fakes: list[Any],
    config: Path,
    cycles: int,
    limit_s: float,
    profile: Path | None = None,
    count_calls: bool = False,
) -> tuple[int, list[dict[str, Any]]]:
    """Run the child; return its RSS when ready and one entry per cycle (with connections)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--child",
        str(config),
        "--cycles",
        str(cycles),
        *(["--profile", str(profile)] if profile else []),
        *(["--count-calls"] if count_calls else []),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    assert process.stdout is not None and process.stderr is not None
    stderr_task = asyncio.ensure_future(process.stderr.read())
    entries: list[dict[str, Any]] = []
    ready_kb = 0
    deadline = time.monotonic() + limit_s
    marks = [len(fake.requests) for fake in fakes]
    try:
        while True:
            line = await asyncio.wait_for(
                process.stdout.readline(), timeout=max(1.0, deadline - time.monotonic())
            )
            if not line:
                break
            entry = json.loads(line)
            if entry.get("ready"):
                ready_kb = entry["rss_kb"]
            else:
                entry["connections"] = _ports(fakes, marks)
                entry["http_requests"] = sum(
                    len(f.requests) - m for f, m in zip(fakes, marks, strict=True)
                )
                entries.append(entry)
            marks = [len(fake.requests) for fake in fakes]
    except TimeoutError:
        process.kill()
        raise SystemExit(f"child did not finish within {limit_s} s (bench bound)") from None
    await process.wait()
    stderr = await stderr_task
    if process.returncode != 0 or len(entries) != cycles:
        raise SystemExit(f"child exited {process.returncode}: {stderr[-3000:]!r}")
    return ready_kb, entries


async def _stop(fakes: list[Any]) -> None:
    for fake in fakes:
        await fake.stop()


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def _mb(kb: int) -> str:
    return f"{kb / 1024:.0f}"


async def parent(
    sizes: list[int],
    cycles: int,
    limit_s: float,
    profile: Path | None = None,
    count_calls: bool = False,
    accounts: int | None = None,
    long_pupils: int = 2_000,
) -> None:
    rows: list[list[str]] = []
    if sizes:
        print("part 1: one no-change cycle per school size", flush=True)
    for pupils in sizes:
        with tempfile.TemporaryDirectory() as directory:
            school, fakes, config = await _set_up(pupils, Path(directory), limit_s, accounts)
            try:
                _, (entry,) = await _measure(fakes, config, 1, limit_s, profile)
            finally:
                await _stop(fakes)
        rows.append(
            [
                f"{pupils:,}",
                f"{len(school.parents):,}",
                f"{len(fakes[2].users):,}",
                f"{entry['wall_s']:.2f}",
                f"{entry['cpu_s']:.2f}",
                _mb(entry["peak_kb"]),
                entry["connections"],
                f"{entry['http_requests']:,}",
                str(entry["requests"]),
                entry["outcome"],
            ]
        )
    if rows:
        print_table(
            [
                "pupils",
                "accounts",
                "users",
                "wall s",
                "CPU s",
                "peak RSS MB",
                "connections (cc/ep/cjy)",
                "HTTP reqs",
                "pushes",
                "outcome",
            ],
            rows,
        )
    if cycles > 0:
        await long_run(cycles, limit_s, count_calls, long_pupils)


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f}, min {min(values):.3f}, max {max(values):.3f}"


async def long_run(cycles: int, limit_s: float, count_calls: bool, pupils: int = 2_000) -> None:
    """Part 2: is the no-change cycle's cost flat over a daemon's uptime?"""
    print(
        f"\npart 2: {cycles} consecutive no-change cycles, one process, {pupils:,} pupils"
        + (" (every cycle under cProfile: CPU includes its overhead)" if count_calls else "")
    )
    with tempfile.TemporaryDirectory() as directory:
        _, fakes, config = await _set_up(pupils, Path(directory), limit_s)
        try:
            ready_kb, entries = await _measure(fakes, config, cycles, limit_s, None, count_calls)
        finally:
            await _stop(fakes)
    first, last = entries[0], entries[-1]
    shown = {1, 2, 10, 25, 40, cycles - 1, cycles}
    print_table(
        ["cycle", "wall s", "CPU s", "calls", "RSS after MB", "peak MB", "connections", "pushes"],
        [
            [
                str(e["cycle"]),
                f"{e['wall_s']:.2f}",
                f"{e['cpu_s']:.3f}",
                f"{e['calls']:,}" if e["calls"] is not None else "-",
                _mb(e["rss_kb"]),
                _mb(e["peak_kb"]),
                e["connections"],
                str(e["requests"]),
            ]
            for e in entries
            if e["cycle"] in shown
        ],
    )
    cpus = [e["cpu_s"] for e in entries]
    tenth = max(1, len(cpus) // 10)
    blocks = [statistics.median(cpus[i : i + tenth]) for i in range(0, len(cpus), tenth)]
    print(
        f"CPU s: first cycle {first['cpu_s']:.3f}, last {last['cpu_s']:.3f} "
        f"({(last['cpu_s'] / first['cpu_s'] - 1) * 100:+.1f}%); {_spread(cpus)}"
    )
    print(
        f"CPU s, median of each block of {tenth} cycles in order (growth with uptime shows as a "
        f"rising row): {' '.join(f'{b:.2f}' for b in blocks)}; last block "
        f"{(blocks[-1] / blocks[0] - 1) * 100:+.1f}% against the first (target: within 10%)"
    )
    references = [e["reference_s"] for e in entries]
    print(
        f"machine noise: the same fixed workload before each cycle took {_spread(references)} "
        f"CPU s ({(max(references) / min(references) - 1) * 100:.0f}% between fastest and slowest)"
    )
    if count_calls:
        calls = [e["calls"] for e in entries]
        print(
            f"work: Python function calls per cycle, first {calls[0]:,}, last {calls[-1]:,} "
            f"({(calls[-1] / calls[0] - 1) * 100:+.2f}%); min {min(calls):,}, max {max(calls):,}"
        )
    print(
        f"RSS before the first cycle {_mb(ready_kb)} MB, after the first {_mb(first['rss_kb'])} MB, "
        f"after the last {_mb(last['rss_kb'])} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000,30000", help="pupils, comma-separated")
    parser.add_argument("--cycles", type=int, default=50, help="part 2 (0: skip it)")
    parser.add_argument("--quick", action="store_true", help="--sizes 2000 --cycles 10")
    parser.add_argument("--limit-s", type=float, default=600.0, help="bound per subprocess")
    parser.add_argument("--profile", type=Path, help="cProfile the part-1 cycles into this file")
    parser.add_argument(
        "--count-calls",
        action="store_true",
        help="part 2: count Python function calls per cycle (cProfile; a measure of work that "
        "machine noise does not change, at about twice the CPU)",
    )
    parser.add_argument(
        "--accounts",
        type=int,
        help="part 1: share each school's pupils out among this many parent accounts "
        "(default: the generator's families, about one account per 1.3 pupils)",
    )
    parser.add_argument("--long-pupils", type=int, default=2_000, help="part 2's school size")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        asyncio.run(child(args.child, args.cycles, args.profile, args.count_calls))
        return
    sizes = [2000] if args.quick else [int(s) for s in args.sizes.split(",") if s]
    cycles = 10 if args.quick else args.cycles
    asyncio.run(
        parent(
            sizes,
            cycles,
            args.limit_s,
            args.profile,
            args.count_calls,
            args.accounts,
            args.long_pupils,
        )
    )


if __name__ == "__main__":
    main()
