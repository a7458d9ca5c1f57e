"""What the specifications ask, end to end through the real CLI against the fakes: admins and
multi-role users, course-class teachers, classes without a head teacher, drift repaired by a
full reconcile, class statuses under the safety limits, and the history of what was sent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandbox_helpers import Sandbox, run_syncd, start_sandbox, stop_sandbox
from syncd.store import Store


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    box = await start_sandbox(tmp_path)
    yield box
    await stop_sandbox(box)


def with_admins(config: Path, *entries: str) -> Path:
    config.write_text(config.read_text(encoding="utf-8") + "".join(entries), encoding="utf-8")
    return config


async def served(box: Sandbox, role: str | None = None) -> dict[str, dict[str, object]]:
    """What queryUsers answers (the pull API serves exactly the acknowledged snapshot)."""
    async with await Store.open(box.database, readonly=True) as store:
        return {u["id"]: u for u in await store.served_users(role)}


async def test_admins_are_a_role_of_a_teacher_or_a_user_of_their_own(sandbox: Sandbox) -> None:
    teacher = f"ep-{sorted(sandbox.school.teachers)[0]}"
    config = with_admins(
        sandbox.config(),
        f'[[admins]]\nid = "{teacher}"\n',
        '[[admins]]\nid = "it-office"\nname = "信息中心"\n',
    )
    result = await run_syncd(config, "--run-once")
    assert result.returncode == 0, result.stdout + result.stderr
    admins = await served(sandbox, "管理员")
    assert set(admins) == {teacher, "it-office"}
    assert admins[teacher]["roleList"] == ["管理员", "教师"]
    assert sandbox.chengjiyun.users[teacher]["roleList"] == ["管理员", "教师"]
    assert sandbox.chengjiyun.users["it-office"] == {
        "id": "it-office",
        "name": "信息中心",
        "roleList": ["管理员"],
    }
    since = len(sandbox.chengjiyun.pushes)
    assert (await run_syncd(config, "--run-once")).returncode == 0
    assert len(sandbox.chengjiyun.pushes) == since, "admins are stable: nothing re-sent"


async def test_a_teacher_made_admin_is_one_add_with_both_roles(sandbox: Sandbox) -> None:
    config = sandbox.config()
    assert (await run_syncd(config, "--run-once")).returncode == 0
    teacher = f"ep-{sorted(sandbox.school.teachers)[1]}"
    with_admins(config, f'[[admins]]\nid = "{teacher}"\n')
    since = len(sandbox.chengjiyun.pushes)
    assert (await run_syncd(config, "--run-once")).returncode == 0
    pushes = sandbox.chengjiyun.pushes[since:]
    assert [(p.endpoint, [u["id"] for u in p.body]) for p in pushes] == [("addUser", [teacher])]
    assert pushes[0].body[0]["roleList"] == ["管理员", "教师"]


async def test_an_admin_matching_nothing_without_a_name_is_a_configuration_error(
    sandbox: Sandbox,
) -> None:
    config = with_admins(sandbox.config(), '[[admins]]\nid = "nobody"\n')
    result = await run_syncd(config, "--run-once")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("syncd:")]
    assert len(lines) == 1 and "admins[0].id" in lines[0] and "nobody" in lines[0]
    assert "Traceback" not in result.stderr
    assert sandbox.chengjiyun.pushes == []


async def test_course_class_teachers_and_classes_without_a_head_teacher(sandbox: Sandbox) -> None:
    course = next(k for k in sandbox.epaas.classes.values() if k.department_type == 8)
    sandbox.epaas.add_teacher("t-course", "只教课程班")
    sandbox.epaas.assign(course.id, "t-course", 4, ["美术"])
    klass = sandbox.school.classes[0]
    head = next(u for u, (kind, _) in sandbox.epaas.classes[klass.id].teachers.items() if kind == 3)
    sandbox.epaas.unassign(klass.id, head)
    result = await run_syncd(sandbox.config(), "--run-once")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sandbox.chengjiyun.users["ep-t-course"]["roleList"] == ["教师"]
    async with await Store.open(sandbox.database, readonly=True) as store:
        statuses = await store.served_class_statuses()
    assert all(isinstance(s.get("headTeacher", ""), str) for s in statuses)
    assert sum("headTeacher" not in s for s in statuses) == 1


async def test_drift_at_chengjiyun_is_healed_and_a_full_reconcile_restores_it(
    sandbox: Sandbox,
) -> None:
    config = sandbox.config()
    assert (await run_syncd(config, "--run-once")).returncode == 0
    renamed, removed = sorted(sandbox.classcharts.pupils)[:2]
    sandbox.chengjiyun.drop_user(f"cc-{renamed}")
    sandbox.chengjiyun.drop_user(f"cc-{removed}")
    sandbox.classcharts.rename_pupil(renamed, "Renamed", "Pupil")
    healed = await run_syncd(config, "--run-once")
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert sandbox.chengjiyun.users[f"cc-{renamed}"]["name"] == "Renamed Pupil"
    assert f"cc-{removed}" not in sandbox.chengjiyun.users, "a normal run does not see drift"

    planned = json.loads((await run_syncd(config, "plan", "--full", "--json")).stdout)
    assert planned["fullReconcile"]["addUser"] == len(sandbox.expected_user_ids())
    first_full = len(sandbox.chengjiyun.pushes)
    full = await run_syncd(config, "--run-once", "--full")
    assert full.returncode == 0, full.stdout + full.stderr
    assert set(sandbox.chengjiyun.users) == sandbox.expected_user_ids()
    sent_by_full = len(sandbox.chengjiyun.pushes) - first_full
    assert "update/classStatus" in [p.endpoint for p in sandbox.chengjiyun.pushes[first_full:]]
    again = len(sandbox.chengjiyun.pushes)
    assert (await run_syncd(config, "--run-once", "--full")).returncode == 0
    assert len(sandbox.chengjiyun.pushes) - again == sent_by_full, "a full reconcile re-sends"
    quiet = len(sandbox.chengjiyun.pushes)
    assert (await run_syncd(config, "--run-once")).returncode == 0
    assert len(sandbox.chengjiyun.pushes) == quiet


async def test_class_statuses_vanishing_at_once_are_held_until_approved(sandbox: Sandbox) -> None:
    config = sandbox.config(safety="delete_after_cycles = 1\nmax_delete_fraction = 0.1")
    assert (await run_syncd(config, "--run-once")).returncode == 0
    async with await Store.open(sandbox.database, readonly=True) as store:
        before = await store.served_class_statuses()
    notifies = sandbox.chengjiyun.class_status_notifies
    for klass in list(sandbox.epaas.classes):
        del sandbox.epaas.classes[klass]
    await run_syncd(config, "--run-once")
    assert sandbox.chengjiyun.class_status_notifies == notifies, "no notify while held"
    async with await Store.open(sandbox.database, readonly=True) as store:
        assert await store.served_class_statuses() == before
    status = await run_syncd(config, "status", "--json")
    held = json.loads(status.stdout)["held_class_statuses"]
    assert status.returncode == 1 and len(held["keys"]) == len(before)
    text = await run_syncd(config, "status")
    assert "class statuses: a change removing" in text.stdout

    assert (await run_syncd(config, "approve-deletes", "--yes")).returncode == 0
    assert (await run_syncd(config, "--run-once")).returncode == 0
    async with await Store.open(sandbox.database, readonly=True) as store:
        assert await store.served_class_statuses() == []
    assert sandbox.chengjiyun.class_status_notifies == notifies + 1


async def test_history_lists_the_add_and_the_rename_of_a_pupil(sandbox: Sandbox) -> None:
    config = sandbox.config()
    assert (await run_syncd(config, "--run-once")).returncode == 0
    pupil = sorted(sandbox.classcharts.pupils)[0]
    sandbox.classcharts.rename_pupil(pupil, "Renamed", "Pupil")
    assert (await run_syncd(config, "--run-once")).returncode == 0
    history = await run_syncd(config, "history", f"cc-{pupil}")
    assert history.returncode == 0
    lines = history.stdout.splitlines()
    assert len(lines) == 2
    assert "addUser" in lines[0] and "sent" in lines[0]
    assert "updateUser" in lines[1] and "Renamed Pupil" in lines[1]
    entries = json.loads((await run_syncd(config, "history", f"cc-{pupil}", "--json")).stdout)
    assert [e["kind"] for e in entries] == ["addUser", "updateUser"]
    assert entries[0]["at"] <= entries[1]["at"] and entries[1]["code"] == 0
    unknown = await run_syncd(config, "history", "cc-nobody")
    assert unknown.returncode == 1 and "nothing was sent about cc-nobody" in unknown.stdout


async def test_status_needs_attention_for_a_dead_letter_until_retry_dead(
    sandbox: Sandbox,
) -> None:
    config = sandbox.config(batch_size=10)
    bad = f"cc-{sorted(sandbox.school.pupils)[3]}"
    sandbox.chengjiyun.reject_ids[bad] = "学号重复"
    assert (await run_syncd(config, "--run-once")).returncode == 1
    status = await run_syncd(config, "status")
    assert status.returncode == 1 and "1 × code 20002" in status.stdout
    del sandbox.chengjiyun.reject_ids[bad]
    assert (await run_syncd(config, "retry-dead")).returncode == 0
    assert (await run_syncd(config, "--run-once")).returncode == 0
    assert (await run_syncd(config, "status")).returncode == 0
