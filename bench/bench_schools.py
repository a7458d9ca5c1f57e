"""Many schools in one ``syncd run --config DIR``: RSS when idle, peak RSS and CPU per no-change
cycle, for 1, 10 and 100 schools of 2,000 pupils each.

This process hosts the sandbox fakes, one FakeClassCharts, FakeEpaas and FakeChengjiyun per
school (each Chengjiyun fake accepts only its school's org_id and key), all on 127.0.0.1, and
writes one ``*.toml`` per school into a directory (databases in a sibling directory, one shared
``[server] listen`` on a free port). syncd is a real child process, ``python -m syncd --config
DIR run``, logging JSON lines to a file (stdout is that file, not a pipe), so what is read from
/proc/PID is syncd's alone; the fakes' CPU is this process's and is reported beside it.
Both sources are scheduled every ``--minutes`` minutes (``*/M * * * *``; by default the least
M that holds 1.6 times an estimated round: 1 for one school, 2 for the default 10 and 100),
so rounds come often; the daemon spreads each school's polls with a jitter of 10 % of it.

For each case (number of schools, parent accounts per school):

1. start the fakes and syncd; wait (bounded) until every school has polled each source once
   (its two "cycle done" log lines), ``/healthz`` shows every queue empty, and no fake has had
   a request for 2 s. "after first sync": VmRSS then, and VmHWM since the start. A source
   whose poll failed (``/healthz``: not ok) is reported and waited for no more: it is polled
   with back-off, so it may skip rounds;
2. wait for ``--warmup`` complete rounds: a round of boundary B is done when every (school,
   source) that was ok has logged "cycle done" at or after B and the fakes have been quiet 2 s;
3. 3 s before the next boundary: VmRSS ("idle"), utime+stime from /proc/PID/stat, and "5" into
   /proc/PID/clear_refs (resets VmHWM); wait for that round; then utime+stime again, VmHWM
   ("peak") and VmRSS. The round is rejected (the bench exits 1) unless each (school, source)
   logged at most one "cycle done" between the two samples (each that was ok exactly one) and
   the second sample came before the next boundary (no poll of the next round had begun).
   "source failed" lines before and in the round are counted and printed.

CPU per school = the round's CPU seconds / schools (one ClassCharts and one epaas no-change
cycle each, with the worker's drain wake-ups and everything else the daemon did meanwhile).
From the table: idle cost per additional school ((RSS_N - RSS_1)/(N - 1)), and what a 2-core,
4 GB server holds at the default schedule (ClassCharts every 30 minutes, epaas hourly): memory
bound = 1 + (3.5 GB - peak_1) / (peak slope) (0.5 GB left to the system; the peak slope, since
at the default jitter of 180 s a few hundred schools' cycles run interleaved); CPU bound =
3,600 s / (2 x round CPU per school) per hour on ONE core (the daemon is one event loop; the
round's epaas cycle is counted twice, so this errs low), i.e. a core kept 100 % busy.

Account shape: ``realistic`` is ``generate_school``'s (about one parent account per 1.3 pupils,
~1,534 accounts for 2,000 pupils; a no-change cycle costs ~2.4 ms of syncd CPU per account);
a number K gives the same 2,000 pupils to K parent accounts (2,000/K pupils each), so the
school has K parent users instead of ~1,534: fewer users in memory and far fewer logins per
cycle. Default cases: 1 and 10 schools realistic, 100 schools with 4 accounts each (100
realistic schools would cost ~450 CPU-s of syncd per round, plus ~300 in the fakes).

``--epaas-timeout-s S`` writes ``[epaas] timeout_s = S`` into every school (default: syncd's
own 30 s). The first version of this bench found epaas polls failing at 100 schools: a poll
queued one class/teacher/list request per class on a 4-connection pool, and aiohttp counted the
wait for a pooled connection against the connect timeout; both are fixed in syncd.
Run: .venv/bin/python bench/bench_schools.py [--cases 1:realistic,10:realistic,100:4]
[--pupils 2000] [--minutes M] [--warmup 1] [--epaas-timeout-s S] [--keep DIR]
[--child-env NAME=VALUE]
(1 and 10 realistic schools took 10 minutes on 2 shared cores; ``--cases 100:4 --warmup 0``
about 12)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import resource
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from syncd.cron import trigger_from_crontab
from syncd.sandbox.chengjiyun import FakeChengjiyun
from syncd.sandbox.classcharts import FakeClassCharts
from syncd.sandbox.epaas import FakeEpaas
from syncd.sandbox.school import School, generate_school, populate, shaped, write_config

SOURCES = ("classcharts", "epaas")
SERVER_MB = 4096
SYSTEM_MB = 512  # left to the operating system of the 4 GB server

IDLE_LEAD_S = 3.0  # "idle" is sampled this long before the measured round's boundary
QUIET_S = 2.0  # no request to any fake for this long: no poll is between requests
POLL_S = 0.5
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


# --- the child's /proc ------------------------------------------------------------------------


def status_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise SystemExit(f"/proc/{pid}/status has no {field_name}")


def cpu_s(pid: int) -> float:
    """utime + stime of every thread of ``pid`` (fields 14 and 15 of /proc/PID/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


# --- schools and fakes ------------------------------------------------------------------------


@dataclass
class BenchSchool:
    org_id: str
    school: School
    classcharts: FakeClassCharts
    epaas: FakeEpaas
    chengjiyun: FakeChengjiyun

    @property
    def fakes(self) -> tuple[FakeClassCharts, FakeEpaas, FakeChengjiyun]:
        return self.classcharts, self.epaas, self.chengjiyun


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def with_epaas_timeout(path: Path, timeout_s: float) -> None:
    """``[epaas] timeout_s`` in a file ``write_config`` wrote (it has no parameter for it)."""
    text = path.read_text(encoding="utf-8")
    anchor = 'permanent_code = "sandbox-permanent"\n'
    assert anchor in text
    path.write_text(text.replace(anchor, f"{anchor}timeout_s = {timeout_s:g}\n"), encoding="utf-8")


async def set_up(
    count: int,
    accounts: int | None,
    pupils: int,
    directory: Path,
    crontab: str,
    epaas_timeout_s: float | None = None,
) -> tuple[list[BenchSchool], Path, int]:
    """The fakes (started) and one file per school in ``directory/schools``; the listen port."""
    configs, state = directory / "schools", directory / "state"
    configs.mkdir()
    state.mkdir()
    port = free_port()
    schedule = f'[schedule]\nclasscharts = "{crontab}"\nepaas = "{crontab}"\nfull_resync = ""\n'
    today = dt.date.today()
    schools: list[BenchSchool] = []
    for n in range(count):
        org_id = f"bench-school-{n + 1:03d}"
        school = shaped(generate_school(pupils, seed=7 + n, today=today), accounts)
        entry = BenchSchool(
            org_id,
            school,
            FakeClassCharts(),
            FakeEpaas(),
            FakeChengjiyun(org_id=org_id, key=f"bench-key-{n + 1:03d}"),
        )
        populate(school, entry.classcharts, entry.epaas)
        urls = [await fake.start() for fake in entry.fakes]
        write_config(
            configs / f"{org_id}.toml",
            school=school,
            database=state / f"{org_id}.db",
            classcharts_url=urls[0],
            epaas_url=urls[1],
            chengjiyun=entry.chengjiyun,
            chengjiyun_url=urls[2],
            listen=f"127.0.0.1:{port}",
            extra=schedule,
        )
        if epaas_timeout_s is not None:
            with_epaas_timeout(configs / f"{org_id}.toml", epaas_timeout_s)
        schools.append(entry)
    return schools, configs, port


async def stop_fakes(schools: list[BenchSchool]) -> None:
    for entry in schools:
        for fake in entry.fakes:
            await fake.stop()


# --- watching the daemon ----------------------------------------------------------------------


@dataclass(frozen=True)
class CycleDone:
    at: float  # the log line's timestamp, epoch seconds
    org_id: str
    source: str


@dataclass
class LogWatch:
    """Reads the daemon's JSON log as it grows: its "cycle done" lines and anything odd."""

    path: Path
    offset: int = 0
    partial: bytes = b""
    cycles: list[CycleDone] = field(default_factory=list)
    backups: list[float] = field(default_factory=list)
    failures: list[CycleDone] = field(default_factory=list)  # "source failed" lines
    errors: list[str] = field(default_factory=list)

    def read(self) -> None:
        with self.path.open("rb") as stream:
            stream.seek(self.offset)
            data = stream.read()
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            self._line(raw.decode("utf-8", "replace"))

    def _line(self, text: str) -> None:
        try:
            entry = json.loads(text)
        except json.JSONDecodeError:
            if text.strip():
                self.errors.append(text)
            return
        at = dt.datetime.fromisoformat(entry.get("timestamp", "1970-01-01T00:00:00+00:00"))
        event = entry.get("event")
        if event == "cycle done":
            for source in SOURCES:
                if source in entry:
                    self.cycles.append(CycleDone(at.timestamp(), entry.get("org_id", ""), source))
        elif event == "source failed; retrying on its schedule":
            self.failures.append(
                CycleDone(at.timestamp(), entry.get("org_id", ""), entry["source"])
            )
        elif event == "database backed up":
            self.backups.append(at.timestamp())
        elif entry.get("level") in ("error", "critical"):
            self.errors.append(text)

    def done_since(self, since: float, until: float = math.inf) -> list[CycleDone]:
        return [c for c in self.cycles if since <= c.at < until]


def last_request_count(schools: list[BenchSchool]) -> int:
    return sum(len(fake.requests) for entry in schools for fake in entry.fakes)


class Quiet:
    """How long the fakes have gone without a request."""

    def __init__(self, schools: list[BenchSchool]) -> None:
        self._schools = schools
        self._count = last_request_count(schools)
        self._since = time.monotonic()

    def seconds(self) -> float:
        count = last_request_count(self._schools)
        if count != self._count:
            self._count, self._since = count, time.monotonic()
        return time.monotonic() - self._since


def every_job(schools: list[BenchSchool]) -> set[tuple[str, str]]:
    return {(entry.org_id, source) for entry in schools for source in SOURCES}


async def healthz(session: aiohttp.ClientSession, port: int) -> dict[str, Any] | None:
    try:
        async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
            body: dict[str, Any] = await response.json()
            return body
    except (aiohttp.ClientError, json.JSONDecodeError):
        return None


def synced(
    health: dict[str, Any] | None, schools: list[BenchSchool]
) -> set[tuple[str, str]] | None:
    """None unless every school is served with an empty queue; else the (school, source) whose
    last poll succeeded (a failing source is polled with back-off, so it may skip a round)."""
    if health is None or "schools" not in health:
        return None
    reports = health["schools"]
    ok: set[tuple[str, str]] = set()
    for entry in schools:
        report = reports.get(entry.org_id)
        if report is None or sum(report["queue"].values()) != 0:
            return None
        ok |= {(entry.org_id, s) for s in SOURCES if report["sources"][s]["status"] == "ok"}
    return ok


class Daemon:
    """``python -m syncd --config DIR run`` as a child; bounded waits on what it does."""

    def __init__(self, process: asyncio.subprocess.Process, log: LogWatch, stderr: Path) -> None:
        self.process = process
        self.pid = process.pid
        self.log = log
        self.stderr = stderr

    def check_alive(self) -> None:
        self.log.read()
        if self.process.returncode is not None:
            tail = self.stderr.read_text(errors="replace")[-3000:]
            raise SystemExit(f"syncd exited {self.process.returncode}: {tail}")

    async def wait_first_syncs(
        self, schools: list[BenchSchool], port: int, limit_s: float
    ) -> tuple[float, set[tuple[str, str]]]:
        """Until every school has polled each source once and every queue is empty: the
        seconds that took, and the (school, source) whose poll succeeded."""
        started = time.monotonic()
        deadline = started + limit_s
        jobs, quiet = every_job(schools), Quiet(schools)
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                await asyncio.sleep(POLL_S * 4)
                self.check_alive()
                done = {(c.org_id, c.source) for c in self.log.cycles}
                if not jobs <= done or quiet.seconds() < QUIET_S:
                    continue
                ok = synced(await healthz(session, port), schools)
                if ok is not None:
                    return time.monotonic() - started, ok
        polled = len({(c.org_id, c.source) for c in self.log.cycles} & jobs)
        raise SystemExit(f"first syncs not done within {limit_s:.0f} s ({polled}/{len(jobs)})")

    async def wait_round(
        self,
        schools: list[BenchSchool],
        jobs: set[tuple[str, str]],
        boundary: float,
        limit_s: float,
    ) -> float:
        """Wait until every (school, source) of ``jobs`` has logged "cycle done" at or after
        ``boundary`` and the fakes have been quiet for QUIET_S; return when that was seen."""
        quiet = Quiet(schools)
        deadline = time.time() + limit_s
        while time.time() < deadline:
            await asyncio.sleep(POLL_S)
            self.check_alive()
            done = {(c.org_id, c.source) for c in self.log.done_since(boundary)}
            if jobs <= done and quiet.seconds() >= QUIET_S:
                return time.time()
        raise SystemExit(f"round of {dt.datetime.fromtimestamp(boundary, dt.UTC):%H:%M} not done")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=60)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


# --- one case ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    schools: int
    accounts: int | None  # parent accounts per school; None: generate_school's families

    @property
    def shape(self) -> str:
        return "realistic" if self.accounts is None else f"{self.accounts} accounts"


@dataclass
class Result:
    case: Case
    accounts: int  # ClassCharts parent accounts in all
    users: int  # users at the Chengjiyun fakes in all
    crontab: str
    first_sync_s: float
    rss_first_kb: int
    peak_first_kb: int  # VmHWM from start to the end of the first syncs
    rss_idle_kb: int
    peak_kb: int
    rss_after_kb: int
    round_cpu_s: float
    fakes_cpu_s: float
    round_wall_s: float
    load: tuple[float, float]
    backups_in_round: int
    failures_in_round: int
    failures_before: int  # "source failed" lines before the measured round
    failing_sources: int  # (school, source) not ok after the first syncs
    cycles_in_round: int


def next_boundary(crontab: str, after: float) -> float:
    """The first time after ``after`` at which ``crontab`` fires, epoch seconds."""
    trigger = trigger_from_crontab(crontab, timezone=dt.UTC)
    fire = trigger.get_next_fire_time(None, dt.datetime.fromtimestamp(after, dt.UTC))
    assert fire is not None
    return float(fire.timestamp())


def crontab_for(minutes: int | None, schools: int, accounts: int) -> str:
    """``*/M * * * *``; by default M is the whole minutes that hold 1.6 times an estimate of
    the round (2.4 ms of syncd CPU per account, 0.5 s per school besides)."""
    if minutes is None:
        minutes = max(1, math.ceil((accounts * 0.0024 + schools * 0.5) * 1.6 / 60))
    return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"


def environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without SYNCD_* variables, plus ``--child-env``."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")} | extra


async def run_case(
    case: Case,
    pupils: int,
    minutes: int | None,
    warmup: int,
    limit_s: float,
    keep: Path | None,
    child_env: dict[str, str],
    epaas_timeout_s: float | None,
) -> Result:
    with tempfile.TemporaryDirectory(dir=keep) as tmp:
        directory = Path(tmp)
        accounts = case.schools * (case.accounts or 0)
        if case.accounts is None:
            accounts = case.schools * len(generate_school(pupils, seed=7).parents)
        crontab = crontab_for(minutes, case.schools, accounts)
        made = time.monotonic()
        schools, configs, port = await set_up(
            case.schools, case.accounts, pupils, directory, crontab, epaas_timeout_s
        )
        accounts = sum(len(entry.school.parents) for entry in schools)
        print(
            f"  {case.schools} school(s), {accounts:,} parent accounts in all, {crontab!r}: "
            f"fakes up in {time.monotonic() - made:.1f} s",
            flush=True,
        )
        log_path, stderr_path = directory / "syncd.log", directory / "syncd.stderr"
        try:
            with log_path.open("wb") as out, stderr_path.open("wb") as err:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "syncd",
                    "--config",
                    str(configs),
                    "run",
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    env=environment(child_env),
                )
            daemon = Daemon(process, LogWatch(log_path), stderr_path)
            try:
                return await measure(case, schools, daemon, port, crontab, warmup, limit_s)
            finally:
                await daemon.stop()
                if daemon.log.errors:
                    print(f"  {len(daemon.log.errors)} error line(s) in the log, first:")
                    print("   ", daemon.log.errors[0][:500])
        finally:
            await stop_fakes(schools)


async def measure(
    case: Case,
    schools: list[BenchSchool],
    daemon: Daemon,
    port: int,
    crontab: str,
    warmup: int,
    limit_s: float,
) -> Result:
    pid = daemon.pid
    first_s, ok = await daemon.wait_first_syncs(schools, port, limit_s)
    not_ok = sorted(every_job(schools) - ok)
    if not_ok:
        print(f"  {len(not_ok)} source(s) failing after the first syncs: {not_ok[:4]}...")
    rss_first, peak_first = status_kb(pid, "VmRSS"), status_kb(pid, "VmHWM")
    users = sum(len(entry.chengjiyun.users) for entry in schools)
    failing_sources = len(every_job(schools) - ok)
    print(
        f"  first syncs done after {first_s:.1f} s: {users:,} users at Chengjiyun, "
        f"RSS {rss_first / 1024:.0f} MB (peak so far {peak_first / 1024:.0f} MB)",
        flush=True,
    )
    for n in range(warmup):
        boundary = next_boundary(crontab, time.time())
        seen = await daemon.wait_round(schools, ok, boundary, limit_s)
        print(
            f"  warm-up round {n + 1} done {seen - boundary:.1f} s after its boundary", flush=True
        )
    # Sample "idle" just before the measured round's boundary: the daemon has had the rest of
    # the interval to settle, and no poll of that round can have begun (jitter is >= 0).
    start = next_boundary(crontab, time.time() + IDLE_LEAD_S + 1)
    await asyncio.sleep(start - IDLE_LEAD_S - time.time())
    daemon.check_alive()
    rss_idle = status_kb(pid, "VmRSS")
    reset_peak(pid)
    cpu_before, fakes_before, sampled = cpu_s(pid), time.process_time(), time.time()
    load_before = os.getloadavg()[0]
    seen = await daemon.wait_round(schools, ok, start, limit_s)
    cpu_after, fakes_after = cpu_s(pid), time.process_time()
    peak, rss_after = status_kb(pid, "VmHWM"), status_kb(pid, "VmRSS")
    load_after = os.getloadavg()[0]
    daemon.log.read()
    check_round(daemon.log, ok, every_job(schools), crontab, sampled, start, time.time())
    result = Result(
        case=case,
        accounts=sum(len(entry.school.parents) for entry in schools),
        users=users,
        crontab=crontab,
        first_sync_s=first_s,
        rss_first_kb=rss_first,
        peak_first_kb=peak_first,
        rss_idle_kb=rss_idle,
        peak_kb=peak,
        rss_after_kb=rss_after,
        round_cpu_s=cpu_after - cpu_before,
        fakes_cpu_s=fakes_after - fakes_before,
        round_wall_s=seen - start,
        load=(load_before, load_after),
        backups_in_round=sum(1 for at in daemon.log.backups if at >= sampled),
        failures_in_round=sum(1 for f in daemon.log.failures if f.at >= sampled),
        failures_before=sum(1 for f in daemon.log.failures if f.at < sampled),
        failing_sources=failing_sources,
        cycles_in_round=len(daemon.log.done_since(sampled)),
    )
    print(
        f"  round done {seen - start:.1f} s after its boundary: syncd CPU "
        f"{result.round_cpu_s:.2f} s ({result.round_cpu_s / case.schools:.3f} s per school), "
        f"fakes CPU {result.fakes_cpu_s:.2f} s; RSS idle {rss_idle / 1024:.0f} MB, "
        f"peak {peak / 1024:.0f} MB; load {load_before:.2f} -> {load_after:.2f}",
        flush=True,
    )
    return result


def check_round(
    log: LogWatch,
    ok: set[tuple[str, str]],
    every: set[tuple[str, str]],
    crontab: str,
    sampled: float,
    boundary: float,
    ended: float,
) -> None:
    """One cycle per (school, source) between the samples (at most one of a source that was
    failing before, which may be backing off), and none of the next round."""
    following = next_boundary(crontab, boundary + 1)
    if ended >= following:
        at = dt.datetime.fromtimestamp(following, dt.UTC)
        raise SystemExit(f"the round ran into the next one ({at:%H:%M:%S}); use a larger --minutes")
    seen = [(c.org_id, c.source) for c in log.done_since(sampled)]
    if len(seen) != len(set(seen)) or not ok <= set(seen) or not set(seen) <= every:
        raise SystemExit(
            f"the measured window holds {len(seen)} cycles ({len(seen) - len(set(seen))} "
            f"repeated, {len(ok - set(seen))} missing), not one per school and source"
        )
    early = [c for c in log.done_since(sampled, boundary)]
    if early:
        raise SystemExit(f"{len(early)} cycle(s) ended before the round's boundary")


# --- the report -------------------------------------------------------------------------------


def mb(kb: int) -> float:
    return kb / 1024


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def slopes(results: list[Result]) -> Iterator[tuple[Result, float, float]]:
    """(result, idle MB per additional school, peak MB per additional school) against 1 school."""
    ones = [r for r in results if r.case.schools == 1]
    for result in results:
        base = next((o for o in ones if o.case.accounts == result.case.accounts), None)
        base = base or (ones[0] if ones else None)
        if base is None or result.case.schools == 1:
            continue
        extra = result.case.schools - 1
        yield (
            result,
            mb(result.rss_idle_kb - base.rss_idle_kb) / extra,
            mb(result.peak_kb - base.peak_kb) / extra,
        )


def report(results: list[Result], pupils: int) -> None:
    print(f"\n{pupils:,} pupils per school; syncd alone in its process (the fakes are this one's)")
    print_table(
        [
            "schools",
            "shape",
            "accounts",
            "users",
            "schedule",
            "first sync s",
            "RSS first MB",
            "first peak MB",
            "RSS idle MB",
            "peak MB",
            "RSS after MB",
            "round CPU s",
            "CPU s/school",
            "fakes CPU s",
            "round wall s",
            "load",
        ],
        [
            [
                str(r.case.schools),
                r.case.shape,
                f"{r.accounts:,}",
                f"{r.users:,}",
                r.crontab,
                f"{r.first_sync_s:.0f}",
                f"{mb(r.rss_first_kb):.1f}",
                f"{mb(r.peak_first_kb):.1f}",
                f"{mb(r.rss_idle_kb):.1f}",
                f"{mb(r.peak_kb):.1f}",
                f"{mb(r.rss_after_kb):.1f}",
                f"{r.round_cpu_s:.2f}",
                f"{r.round_cpu_s / r.case.schools:.3f}",
                f"{r.fakes_cpu_s:.2f}",
                f"{r.round_wall_s:.1f}",
                f"{r.load[0]:.1f}-{r.load[1]:.1f}",
            ]
            for r in results
        ],
    )
    for r in results:
        if r.backups_in_round:
            print(f"  note: {r.backups_in_round} daily backup(s) ran in the round of {r.case}")
        if r.failures_in_round or r.failures_before:
            print(
                f"  note: {r.case.schools} schools: {r.failures_before} source poll(s) failed "
                f"before the measured round, {r.failures_in_round} in it; {r.failing_sources} "
                f"source(s) not ok after the first syncs; {r.cycles_in_round} cycles in the "
                f"round (of {2 * r.case.schools})"
            )
    base = next((r for r in results if r.case.schools == 1), None)
    print("\nper additional school (against 1 school; target: idle < 5 MB):")
    for result, idle, peak in slopes(results):
        verdict = "met" if idle < 5 else "MISSED"
        print(
            f"  {result.case.schools} schools, {result.case.shape}: idle {idle:+.2f} MB "
            f"({verdict}), peak {peak:+.2f} MB"
        )
        if base is not None and peak > 0:
            usable = SERVER_MB - SYSTEM_MB - mb(base.peak_kb)
            print(
                f"    memory bound ({SERVER_MB - SYSTEM_MB} MB for syncd): "
                f"{1 + int(usable / peak):,} schools"
            )
    print("CPU bound at the default schedule (2 ClassCharts + 1 epaas cycles an hour, one core):")
    for r in results:
        per_school = r.round_cpu_s / r.case.schools
        print(
            f"  {r.case.schools} schools, {r.case.shape}: {per_school:.3f} CPU-s per round per "
            f"school -> {int(3600 / (2 * per_school)):,} schools at 100 % of one core "
            f"({2 * per_school:.2f} CPU-s per school per hour, counting epaas twice)"
        )


def parse_cases(text: str) -> list[Case]:
    cases = []
    for item in text.split(","):
        count, _, shape = item.partition(":")
        accounts = None if shape in ("", "realistic") else int(shape)
        cases.append(Case(int(count), accounts))
    return cases


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases",
        default="1:realistic,10:realistic,100:4",
        help="SCHOOLS:ACCOUNTS, comma-separated; ACCOUNTS is parent accounts per school or "
        "'realistic' (generate_school's families)",
    )
    parser.add_argument("--pupils", type=int, default=2000)
    parser.add_argument("--minutes", type=int, help="poll every M minutes (default: 1 or 2)")
    parser.add_argument("--warmup", type=int, default=1, help="rounds before the measured one")
    parser.add_argument("--limit-s", type=float, default=600.0, help="bound on each wait")
    parser.add_argument(
        "--epaas-timeout-s",
        type=float,
        default=0.0,
        help="[epaas] timeout_s of every school (0: syncd's default, 30 s; see the docstring)",
    )
    parser.add_argument("--keep", type=Path, help="make the temporary directories here")
    parser.add_argument(
        "--child-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set in syncd's environment only (e.g. MALLOC_ARENA_MAX=2); repeatable",
    )
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    child_env = dict(item.split("=", 1) for item in args.child_env)
    if child_env:
        print(f"syncd's environment adds {child_env}")
    results = []
    for case in parse_cases(args.cases):
        print(f"{case.schools} school(s), {case.shape}:", flush=True)
        results.append(
            await run_case(
                case,
                args.pupils,
                args.minutes,
                args.warmup,
                args.limit_s,
                args.keep,
                child_env,
                args.epaas_timeout_s or None,
            )
        )
    report(results, args.pupils)


if __name__ == "__main__":
    asyncio.run(main())
