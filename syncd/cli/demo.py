"""``syncd demo``: the whole product against the built-in sandbox, on loopback only.

Starts fake ClassCharts, epaas and Chengjiyun servers on 127.0.0.1, generates a school, and runs
three cycles: the first sync, one after a few changes in the sources, and one with nothing to do.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from syncd.clients.chengjiyun import client_from_config
from syncd.config import load_config
from syncd.core.model import ROLES
from syncd.engine.cycle import School, run_cycle
from syncd.engine.drain import worker_from_config
from syncd.sandbox.chengjiyun import FakeChengjiyun
from syncd.sandbox.classcharts import FakeClassCharts
from syncd.sandbox.epaas import FakeEpaas
from syncd.sandbox.school import generate_school, populate, write_config
from syncd.store import Store

__all__ = ["demo_command"]


async def _sync(config_path: Path, chengjiyun: FakeChengjiyun, out: TextIO, title: str) -> None:
    config = load_config(config_path)
    before = len(chengjiyun.pushes)
    async with await Store.open(config.store.path, backup=config.store.backup) as store:
        report = await run_cycle(School(config, store), config.enabled_sources, command="demo")
        async with client_from_config(config) as client:
            await worker_from_config(config, store, client).drain()
    out.write(f"\n== {title} ==\n")
    for source, sr in report.sources.items():
        out.write(
            f"  {source}: {sr.outcome}, {sr.users} users"
            + (f", {sr.classes} classes" if source == "epaas" else "")
        )
        out.write(f" ({len(sr.warnings)} warning(s))\n" if sr.warnings else "\n")
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


async def demo_command(args: Any, out: TextIO) -> int:
    classcharts, epaas, chengjiyun = FakeClassCharts(), FakeEpaas(), FakeChengjiyun()
    school = generate_school(args.pupils, today=dt.date.today())
    populate(school, classcharts, epaas)
    urls = [await fake.start() for fake in (classcharts, epaas, chengjiyun)]
    try:
        with tempfile.TemporaryDirectory(prefix="syncd-demo-") as directory:
            config_path = write_config(
                Path(directory) / "syncd.toml",
                school=school,
                database=Path(directory) / "syncd.db",
                classcharts_url=urls[0],
                epaas_url=urls[1],
                chengjiyun=chengjiyun,
                chengjiyun_url=urls[2],
                extra="[safety]\ndelete_after_cycles = 1   # the demo deletes at once; the default is 2\n",
            )
            out.write(
                f"syncd demo: fake ClassCharts {urls[0]}, epaas {urls[1]}, Chengjiyun {urls[2]}\n"
                f"generated school: {len(school.pupils)} pupils, {len(school.parents)} parent accounts, "
                f"{len(school.teachers)} teachers, {len(school.classes)} classes\n"
                f"config and database: {directory} (deleted when the demo ends)\n"
            )
            await _sync(config_path, chengjiyun, out, "first sync")
            roles = Counter(role for user in chengjiyun.users.values() for role in user["roleList"])
            out.write(
                "  Chengjiyun now holds: "
                + ", ".join(f"{roles[r]} {r}" for r in ROLES if roles[r])
                + "\n"
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
                f"\nchanges in the sources: pupil {pupil_id} renamed, pupil 9999 added, teacher {leaving} removed, "
                f"class {first_class.class_name} ({first_class.grade_name}) has a new head teacher\n"
            )
            await _sync(config_path, chengjiyun, out, "second sync (only the changes)")
            await _sync(config_path, chengjiyun, out, "third sync (nothing changed)")
            out.write(
                f"\nChengjiyun holds {len(chengjiyun.users)} users; "
                f"{chengjiyun.class_status_notifies} class status notification(s) in all.\n"
            )
    finally:
        for fake in (classcharts, epaas, chengjiyun):
            await fake.stop()
    return 0
