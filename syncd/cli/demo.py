"""``syncd demo`` and ``syncd sandbox``: the product against the built-in fakes, loopback only.

``demo`` generates a school, runs a first sync, one after a few changes in the sources, one with
nothing to do and a full reconcile that repairs a user removed at Chengjiyun, then shows one
signed pull of each kind. ``sandbox`` starts the fakes alone and writes a config pointing at
them, for trying syncd by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from syncd.clients.chengjiyun import client_from_config
from syncd.config import Config, load_config
from syncd.core.model import ROLES
from syncd.core.render import source_label
from syncd.core.signing import signed_query
from syncd.engine.cycle import School, run_cycle
from syncd.engine.drain import worker_from_config
from syncd.sandbox.chengjiyun import FakeChengjiyun
from syncd.sandbox.classcharts import FakeClassCharts
from syncd.sandbox.epaas import FakeEpaas
from syncd.sandbox.school import COURSE_ONLY_TEACHER, generate_school, populate, write_config
from syncd.sandbox.school import School as FakeSchool
from syncd.server.app import listening_port, start_server
from syncd.store import Store

__all__ = ["demo_command", "sandbox_command"]


class _Fakes:
    """The three fakes with a generated school, started on 127.0.0.1."""

    def __init__(self, pupils: int) -> None:
        self.classcharts, self.epaas = FakeClassCharts(), FakeEpaas()
        self.chengjiyun = FakeChengjiyun()
        self.school = generate_school(pupils, today=dt.date.today())
        populate(self.school, self.classcharts, self.epaas)
        self.urls: list[str] = []

    async def __aenter__(self) -> _Fakes:
        for fake in (self.classcharts, self.epaas, self.chengjiyun):
            self.urls.append(await fake.start())
        return self

    async def __aexit__(self, *exc: object) -> None:
        for fake in (self.classcharts, self.epaas, self.chengjiyun):
            await fake.stop()

    def write_config(self, directory: Path, extra: str = "") -> Path:
        return write_config(
            directory / "syncd.toml",
            school=self.school,
            database=directory / "syncd.db",
            classcharts_url=self.urls[0],
            epaas_url=self.urls[1],
            chengjiyun=self.chengjiyun,
            chengjiyun_url=self.urls[2],
            extra=extra,
        )


def _demo_extra(school: FakeSchool) -> str:
    teacher = f"ep-{sorted(school.teachers)[0]}"
    return (
        "[safety]\ndelete_after_cycles = 1   # the demo deletes at once; the default is 2\n"
        "max_delete_fraction = 0.5   # a small school: one teacher is a quarter of them\n\n"
        f'[[admins]]\nid = "{teacher}"         # a teacher who is also 管理员\n'
        '[[admins]]\nid = "it-office"\nname = "信息中心"   # an admin account of its own\n'
    )


async def _sync(
    config: Config, chengjiyun: FakeChengjiyun, out: TextIO, title: str, *, full: bool = False
) -> None:
    out.write(f"\n== {title} ==\n")
    out.flush()  # the header before the log lines of its cycle
    before = len(chengjiyun.pushes)
    async with await Store.open(config.store.path) as store:
        report = await run_cycle(
            School(config, store), config.enabled_sources, command="demo", full=full
        )
        async with client_from_config(config) as client:
            await worker_from_config(config, store, client).drain()
    for source, sr in report.sources.items():
        classes = f", {sr.classes} classes" if source == "epaas" else ""
        out.write(f"  {source_label(source)}: {sr.outcome}, {sr.users} users{classes}\n")
        for warning in sr.warnings:
            out.write(f"    warning: {warning}\n")
    pushes = chengjiyun.pushes[before:]
    if not pushes:
        out.write("  sent to Chengjiyun: nothing (no change)\n")
        return
    out.write("  sent to Chengjiyun:\n")
    for push in pushes:
        if push.endpoint == "update/classStatus":
            out.write(f"    {push.endpoint:<20} code {push.code}\n")
            continue
        items = push.body or []
        shown = ", ".join(
            (item if isinstance(item, str) else f"{item['id']} {item.get('name', '')}".strip())
            for item in items[:3]
        )
        more = f" … (+{len(items) - 3})" if len(items) > 3 else ""
        out.write(
            f"    {push.endpoint:<20} code {push.code}  {len(items):>4} record(s): {shown}{more}\n"
        )


async def _show_pulls(config: Config, out: TextIO) -> None:
    """One signed pull of each kind, as Chengjiyun makes them, against the real pull API."""
    out.write("\n== what Chengjiyun pulls from syncd (signed requests to the pull API) ==\n")
    out.flush()
    key = config.chengjiyun.key.reveal()
    async with await Store.open(config.store.path) as store:
        runner = await start_server(config, store)
        base = f"http://127.0.0.1:{listening_port(runner)}"
        try:
            async with aiohttp.ClientSession() as http:

                async def pull(endpoint: str, **params: str) -> Any:
                    query = {"orgId": config.chengjiyun.org_id, **params}
                    query["timestamp"] = str(int(time.time()))
                    async with http.get(f"{base}/{endpoint}?{signed_query(query, key)}") as answer:
                        return (await answer.json())["data"]

                users = await pull("queryUsers")
                out.write(f"  queryUsers: {len(users)} users, for example\n")
                shown: set[str] = set()
                for role in ROLES:
                    sample = next((u for u in users if role in u["roleList"]), None)
                    if sample is not None and sample["id"] not in shown:
                        shown.add(sample["id"])
                        out.write(f"    {json.dumps(sample, ensure_ascii=False)}\n")
                admins = await pull("queryUsers", role="管理员")
                out.write(f"  queryUsers?role=管理员: {', '.join(u['id'] for u in admins)}\n")
                statuses = await pull("queryClassStatus")
                out.write(f"  queryClassStatus: {len(statuses)} classes, for example\n")
                out.write(f"    {json.dumps(statuses[0], ensure_ascii=False)}\n")
        finally:
            await runner.cleanup()


async def demo_command(args: argparse.Namespace, out: TextIO) -> int:
    async with _Fakes(args.pupils) as fakes:
        school = fakes.school
        with tempfile.TemporaryDirectory(prefix="syncd-demo-") as directory:
            config = load_config(fakes.write_config(Path(directory), _demo_extra(school)))
            classcharts, epaas, chengjiyun = fakes.classcharts, fakes.epaas, fakes.chengjiyun
            out.write(
                f"syncd demo: fake ClassCharts {fakes.urls[0]}, epaas {fakes.urls[1]}, "
                f"Chengjiyun {fakes.urls[2]}\n"
                f"generated school: {len(school.pupils)} pupils, {len(school.parents)} parent "
                f"accounts, {len(school.teachers)} teachers, {len(school.classes)} classes\n"
                f"config and database: {directory} (deleted when the demo ends)\n"
            )
            await _sync(config, chengjiyun, out, "first sync")
            roles = Counter(role for user in chengjiyun.users.values() for role in user["roleList"])
            out.write(
                "  Chengjiyun now holds: "
                + ", ".join(f"{roles[r]} {r}" for r in ROLES if roles[r])
                + "\n"
            )
            art = f"ep-{COURSE_ONLY_TEACHER[0]}"
            out.write(
                f"  {art} teaches only a 课程班 and is a 教师 all the same: "
                f"{art in chengjiyun.users}\n"
            )

            pupil_id = next(iter(school.pupils))
            classcharts.rename_pupil(pupil_id, "Renamed", "Pupil")
            classcharts.add_pupil(9999, "New", "Pupil")
            classcharts.link(next(iter(school.parents.values()))[1], 9999)
            leaving = sorted(school.teachers)[-1]
            epaas.remove_teacher(leaving)
            first_class = school.classes[0]
            old_head = next(
                u for u, (kind, _) in epaas.classes[first_class.id].teachers.items() if kind == 3
            )
            new_head = next(u for u in sorted(school.teachers) if u not in (old_head, leaving))
            epaas.unassign(first_class.id, old_head)
            epaas.assign(first_class.id, new_head, 3, ["语文"])
            out.write(
                f"\nchanges in the sources: pupil {pupil_id} renamed, pupil 9999 added, teacher "
                f"{leaving} removed, class {first_class.class_name} ({first_class.grade_name}) "
                "has a new head teacher\n"
            )
            await _sync(config, chengjiyun, out, "second sync (only the changes)")
            await _sync(config, chengjiyun, out, "third sync (nothing changed)")
            drifted = f"cc-{pupil_id}"
            chengjiyun.drop_user(drifted)
            out.write(f"\nsomeone deletes {drifted} in Chengjiyun directly (drift)\n")
            await _sync(
                config, chengjiyun, out, "full reconcile (--full: repairs drift)", full=True
            )
            out.write(
                f"  {drifted} is back at Chengjiyun: {drifted in chengjiyun.users}\n"
                f"\nChengjiyun holds {len(chengjiyun.users)} users; "
                f"{chengjiyun.class_status_notifies} class status notification(s) in all.\n"
            )
            await _show_pulls(config, out)
    return 0


async def sandbox_command(args: argparse.Namespace, out: TextIO) -> int:
    """The three fakes on 127.0.0.1 and a config pointing at them, until Ctrl-C."""
    directory = Path(args.dir or tempfile.mkdtemp(prefix="syncd-sandbox-"))
    directory.mkdir(parents=True, exist_ok=True)
    async with _Fakes(args.pupils) as fakes:
        config = fakes.write_config(directory)
        out.write(
            f"sandbox running: fake ClassCharts {fakes.urls[0]}, epaas {fakes.urls[1]}, "
            f"Chengjiyun {fakes.urls[2]}\n"
            f"config: {config}\n"
            f"try, in another terminal:\n"
            f"  syncd --config {config} plan\n"
            f"  syncd --config {config} --run-once\n"
            f"  syncd --config {config} status\n"
            "stop with Ctrl-C (the fakes keep their state only while they run)\n"
        )
        out.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    return 0
