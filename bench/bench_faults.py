"""Two failures through the real CLI (``python -m syncd --config ... --run-once`` in a
subprocess) against the sandbox fakes running in this process on 127.0.0.1:

(a) wrong key: the config carries a wrong ``[chengjiyun] key``, so Chengjiyun answers 30006
    (验证失败) to every push. Figures: pushes Chengjiyun received, seconds, exit code, dead
    letters (must be 0), operations left queued.
(b) outage: Chengjiyun's port is closed and ``drain_timeout_s = 20``. Figures: seconds until
    the CLI exits, exit code, operations left queued, dead letters (must be 0). Then the fake is
    reachable again and the next ``--run-once`` runs: seconds until Chengjiyun holds exactly
    the users it should (every id, no extra, each added once), queue and dead letters empty.

The school comes from ``generate_school`` (about one parent account per 1.3 pupils, a teacher
per ~15 pupils); 11,300 pupils give about 20,000 Chengjiyun users. Each case has its own fresh
database. Every subprocess is bounded (``--limit-s``).
Run: .venv/bin/python bench/bench_faults.py [--pupils 11300] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import socket
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from syncd.sandbox.chengjiyun import FakeChengjiyun
from syncd.sandbox.classcharts import FakeClassCharts
from syncd.sandbox.epaas import FakeEpaas
from syncd.sandbox.school import School, generate_school, populate, write_config

PUPILS = 11_300
QUICK_PUPILS = 1_150
DRAIN_TIMEOUT_S = 20


@dataclass
class Run:
    returncode: int
    seconds: float
    stdout: str
    stderr: str


async def run_once(config: Path, limit_s: float) -> Run:
    """The real CLI in a subprocess, awaited so the fakes in this event loop keep answering."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncd",
        "--config",
        str(config),
        "--run-once",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=limit_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise SystemExit(f"--run-once did not exit within {limit_s} s (bench bound)") from None
    assert process.returncode is not None
    return Run(process.returncode, time.monotonic() - started, stdout.decode(), stderr.decode())


def queue_and_dead(database: Path) -> tuple[int, int]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        queued = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        dead = db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    return int(queued), int(dead)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class Box:
    def __init__(self, school: School) -> None:
        self.school = school
        self.classcharts, self.epaas, self.chengjiyun = (
            FakeClassCharts(),
            FakeEpaas(),
            FakeChengjiyun(),
        )
        populate(school, self.classcharts, self.epaas)
        self.urls: list[str] = []

    async def start(self) -> None:
        self.urls = [await f.start() for f in (self.classcharts, self.epaas, self.chengjiyun)]

    async def stop(self) -> None:
        for fake in (self.classcharts, self.epaas, self.chengjiyun):
            await fake.stop()

    def config(
        self, directory: Path, name: str, *, key: str | None = None, url: str | None = None
    ) -> Path:
        path = write_config(
            directory / name,
            school=self.school,
            database=directory / "syncd.db",
            classcharts_url=self.urls[0],
            epaas_url=self.urls[1],
            chengjiyun=self.chengjiyun,
            chengjiyun_url=url or self.urls[2],
        )
        text = path.read_text(encoding="utf-8").replace(
            "batch_size = 100", f"batch_size = 100\ndrain_timeout_s = {DRAIN_TIMEOUT_S}"
        )
        if key is not None:
            text = text.replace(f'key = "{self.chengjiyun.key}"', f'key = "{key}"')
        path.write_text(text, encoding="utf-8")
        return path

    def expected_user_ids(self) -> set[str]:
        pupils = {f"cc-{pid}" for pid in self.classcharts.pupils}
        parents = {f"cc-parent-{p.id}" for p in self.classcharts.parents.values()}
        teachers = {f"ep-{u}" for klass in self.epaas.classes.values() for u in klass.teachers}
        return pupils | parents | teachers

    def exact(self) -> bool:
        fake = self.chengjiyun
        expected = self.expected_user_ids()
        return set(fake.users) == expected and all(fake.add_count[i] == 1 for i in expected)


def first_line(text: str, needle: str) -> str:
    """The first line of the CLI's own output (not a JSON log line) that mentions ``needle``."""
    lines = (line.strip() for line in text.splitlines() if not line.startswith("{"))
    return next((line for line in lines if needle in line), "-")


def drain_log(text: str) -> str:
    """requests/retried from the drain's own log line ("outbox drained" / "... stopped")."""
    for line in text.splitlines():
        if line.startswith("{") and '"outbox drain' in line:
            entry = json.loads(line)
            return f"{entry['requests']} requests, {entry['retried']:,} row retries"
    return "-"


SHOW = False
KEEP: Path | None = None


def show(label: str, run: Run) -> None:
    if KEEP is not None:
        (KEEP / f"{label}.out").write_text(run.stdout + "\n--- stderr\n" + run.stderr)
    if SHOW:
        print(
            f"--- {label}: exit {run.returncode} in {run.seconds:.1f} s\n{run.stdout}{run.stderr[-3000:]}"
        )


async def wrong_key(school: School, directory: Path, limit_s: float) -> dict[str, str]:
    box = Box(school)
    await box.start()
    try:
        config = box.config(directory, "wrong.toml", key="not-the-key")
        run = await run_once(config, limit_s)
        show("wrong key", run)
        pushes = box.chengjiyun.pushes
        queued, dead = queue_and_dead(directory / "syncd.db")
        codes = sorted({p.code for p in pushes})
        return {
            "case": "(a) wrong key",
            "users to sync": f"{len(box.expected_user_ids()):,}",
            "pushes received": f"{len(pushes)} (codes {codes})",
            "seconds until exit": f"{run.seconds:.1f}",
            "exit code": str(run.returncode),
            "left queued": f"{queued:,}",
            "dead letters": str(dead),
            "drain (CLI log)": drain_log(run.stdout + run.stderr),
            "admin is told": first_line(run.stdout, "[chengjiyun] key")[:70],
        }
    finally:
        await box.stop()


async def outage(school: School, directory: Path, limit_s: float) -> list[dict[str, str]]:
    box = Box(school)
    await box.start()
    try:
        down = box.config(directory, "down.toml", url=closed_port_url())
        run = await run_once(down, limit_s)
        show("outage", run)
        queued, dead = queue_and_dead(directory / "syncd.db")
        rows = [
            {
                "case": f"(b) outage, drain_timeout_s = {DRAIN_TIMEOUT_S}",
                "users to sync": f"{len(box.expected_user_ids()):,}",
                "pushes received": f"{len(box.chengjiyun.pushes)}",
                "seconds until exit": f"{run.seconds:.1f}",
                "exit code": str(run.returncode),
                "left queued": f"{queued:,}",
                "dead letters": str(dead),
                "drain (CLI log)": drain_log(run.stdout + run.stderr),
                "admin is told": first_line(run.stdout, "still queued")[:70],
            }
        ]
        back = box.config(directory, "back.toml")
        run = await run_once(back, limit_s)
        show("back", run)
        queued, dead = queue_and_dead(directory / "syncd.db")
        exact = box.exact()
        rows.append(
            {
                "case": "(b) fake back: next --run-once",
                "users to sync": f"{len(box.chengjiyun.users):,} held",
                "pushes received": f"{len(box.chengjiyun.pushes)}",
                "seconds until exit": f"{run.seconds:.1f} (exact state: {exact})",
                "exit code": str(run.returncode),
                "left queued": f"{queued:,}",
                "dead letters": str(dead),
                "drain (CLI log)": drain_log(run.stdout + run.stderr),
                "admin is told": first_line(run.stdout, "sent")[:70],
            }
        )
        return rows
    finally:
        await box.stop()


def print_table(rows: list[dict[str, str]]) -> None:
    keys = list(rows[0])
    width = max(len(k) for k in keys)
    cols = [max(len(r[k]) for k in keys) for r in rows]
    for key in keys:
        cells = "  ".join(r[key].ljust(c) for r, c in zip(rows, cols, strict=True))
        print(f"{key.ljust(width)}  {cells}".rstrip())


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pupils", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_PUPILS} pupils")
    parser.add_argument("--limit-s", type=float, default=240.0, help="bound per subprocess")
    parser.add_argument("--show", action="store_true", help="print each run's output")
    parser.add_argument("--keep", type=Path, help="write each run's output to this directory")
    args = parser.parse_args()
    global SHOW, KEEP
    SHOW, KEEP = args.show, args.keep
    pupils = args.pupils or (QUICK_PUPILS if args.quick else PUPILS)
    school = generate_school(pupils, seed=7, today=dt.date.today())
    print(
        f"{pupils:,} pupils, {len(school.parents):,} parent accounts, "
        f"{len(school.teachers):,} teachers; requests_per_second = 200, batch_size = 100"
    )
    rows: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        rows.append(await wrong_key(school, Path(a), args.limit_s))
        rows.extend(await outage(school, Path(b), args.limit_s))
    print_table(rows)


if __name__ == "__main__":
    asyncio.run(main())
