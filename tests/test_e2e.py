"""End to end: the real CLI in a subprocess against the sandbox fakes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import subprocess_env, syncd_command
from sandbox_helpers import Sandbox, run_syncd, start_sandbox, stop_sandbox


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    box = await start_sandbox(tmp_path)
    yield box
    await stop_sandbox(box)


def endpoints(box: Sandbox, since: int = 0) -> list[str]:
    return [push.endpoint for push in box.chengjiyun.pushes[since:]]


async def test_first_run_syncs_everything_and_a_second_run_sends_nothing(sandbox: Sandbox) -> None:
    config = sandbox.config()
    first = await run_syncd(config, "--run-once")
    assert first.returncode == 0, first.stdout + first.stderr
    assert set(sandbox.chengjiyun.users) == sandbox.expected_user_ids()
    assert sandbox.chengjiyun.class_status_notifies == 1
    parent = sandbox.chengjiyun.users[f"cc-parent-{next(iter(sandbox.school.parents))}"]
    assert parent["roleList"] == ["家长"]
    pushed = len(sandbox.chengjiyun.pushes)

    second = await run_syncd(config, "--run-once")
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(sandbox.chengjiyun.pushes) == pushed, "an unchanged school must send nothing"
    assert "sent: nothing" in second.stdout


async def test_changes_send_exactly_one_request_of_each_kind_in_order(sandbox: Sandbox) -> None:
    config = sandbox.config(safety="delete_after_cycles = 1\nmax_delete_fraction = 0.5")
    assert (await run_syncd(config, "--run-once")).returncode == 0
    since = len(sandbox.chengjiyun.pushes)

    pupil_id = next(iter(sandbox.school.pupils))
    sandbox.classcharts.rename_pupil(pupil_id, "Renamed", "Pupil")
    sandbox.classcharts.add_pupil(9999, "New", "Pupil")
    sandbox.classcharts.link(next(iter(sandbox.school.parents.values()))[1], 9999)
    leaving = sorted(sandbox.school.teachers)[-1]
    sandbox.epaas.remove_teacher(leaving)
    klass = sandbox.school.classes[0]
    old_head = next(
        u for u, (kind, _) in sandbox.epaas.classes[klass.id].teachers.items() if kind == 3
    )
    new_head = next(u for u in sorted(sandbox.school.teachers) if u not in (old_head, leaving))
    sandbox.epaas.unassign(klass.id, old_head)
    sandbox.epaas.assign(klass.id, new_head, 3, ["语文"])

    result = await run_syncd(config, "--run-once")
    assert result.returncode == 0, result.stdout + result.stderr
    pushes = sandbox.chengjiyun.pushes[since:]
    assert [p.endpoint for p in pushes] == [
        "addUser",
        "updateUser",
        "update/classStatus",
        "deleteUser",
    ]
    assert all(p.code == 0 for p in pushes)
    assert pushes[0].body == [{"id": "cc-9999", "name": "New Pupil", "roleList": ["学生"]}]
    assert pushes[1].body == [{"id": f"cc-{pupil_id}", "name": "Renamed Pupil"}]
    assert pushes[3].body == [f"ep-{leaving}"]
    assert set(sandbox.chengjiyun.users) == sandbox.expected_user_ids()


async def test_transient_failures_converge_without_adding_anyone_twice(sandbox: Sandbox) -> None:
    config = sandbox.config(batch_size=7)
    sandbox.chengjiyun.faults.transient_fraction = 0.3
    for _ in range(5):
        result = await run_syncd(config, "--run-once")
        if result.returncode == 0:
            break
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(sandbox.chengjiyun.users) == sandbox.expected_user_ids()
    assert max(sandbox.chengjiyun.add_count.values()) == 1
    assert any(p.code == 10002 for p in sandbox.chengjiyun.pushes), (
        "the fault must actually have fired"
    )
    settled = len(sandbox.chengjiyun.pushes)
    sandbox.chengjiyun.faults.transient_fraction = 0
    assert (await run_syncd(config, "--run-once")).returncode == 0
    assert len(sandbox.chengjiyun.pushes) == settled


async def test_a_failed_parent_login_deletes_none_of_its_pupils(sandbox: Sandbox) -> None:
    config = sandbox.config(safety="delete_after_cycles = 1\nmax_delete_fraction = 1")
    assert (await run_syncd(config, "--run-once")).returncode == 0
    name, email, pupil_ids = next(iter(sandbox.school.parents.values()))
    sandbox.classcharts.fail_login(email)
    since = len(sandbox.chengjiyun.pushes)

    result = await run_syncd(config, "--run-once")
    assert result.returncode == 1
    assert email in result.stdout
    assert "deleteUser" not in endpoints(sandbox, since)
    for pupil_id in pupil_ids:
        assert f"cc-{pupil_id}" in sandbox.chengjiyun.users


async def test_a_source_returning_nothing_holds_its_deletions(sandbox: Sandbox) -> None:
    config = sandbox.config(safety="delete_after_cycles = 1")
    assert (await run_syncd(config, "--run-once")).returncode == 0
    teachers = {u for u in sandbox.chengjiyun.users if u.startswith("ep-")}
    for klass in list(sandbox.epaas.classes):
        del sandbox.epaas.classes[klass]
    since = len(sandbox.chengjiyun.pushes)

    result = await run_syncd(config, "--run-once")
    assert "HELD" in result.stdout
    assert "deleteUser" not in endpoints(sandbox, since)
    assert teachers <= set(sandbox.chengjiyun.users)

    status = await run_syncd(config, "status")
    assert status.returncode == 1, "held deletions need the admin"
    assert f"held deletions: {len(teachers)}" in status.stdout
    assert "max_delete_fraction" in status.stdout
    held = json.loads((await run_syncd(config, "status", "--json")).stdout)["held_deletions"]
    assert {item["id"] for item in held} == teachers

    refused = await run_syncd(config, "approve-deletes")  # no terminal to ask on, no --yes
    assert refused.returncode == 1 and "nothing approved" in refused.stdout
    approved = await run_syncd(config, "approve-deletes", "--yes")
    assert approved.returncode == 0
    assert (await run_syncd(config, "--run-once")).returncode == 0
    assert not teachers & set(sandbox.chengjiyun.users)


async def test_a_rejected_record_is_dead_lettered_while_its_batch_goes_through(
    sandbox: Sandbox,
) -> None:
    config = sandbox.config(batch_size=10)
    bad = f"cc-{sorted(sandbox.school.pupils)[3]}"
    sandbox.chengjiyun.reject_ids[bad] = "学号重复"

    result = await run_syncd(config, "--run-once")
    assert result.returncode == 1
    assert "DEAD LETTER addUser " + bad in result.stdout
    assert set(sandbox.chengjiyun.users) == sandbox.expected_user_ids() - {bad}
    status = await run_syncd(config, "status")
    assert bad in status.stdout and "学号重复" in status.stdout

    # Still dead (not re-sent every cycle) until the admin asks, then it goes through.
    since = len(sandbox.chengjiyun.pushes)
    assert (await run_syncd(config, "--run-once")).returncode == 1
    assert endpoints(sandbox, since) == []
    del sandbox.chengjiyun.reject_ids[bad]
    assert (await run_syncd(config, "retry-dead")).returncode == 0
    assert (await run_syncd(config, "--run-once")).returncode == 0
    assert bad in sandbox.chengjiyun.users


async def test_sigkill_during_a_slow_drain_loses_nothing(sandbox: Sandbox) -> None:
    # Two requests in flight at most, so the kill lands mid-drain.
    config = sandbox.config(batch_size=5, chengjiyun="max_in_flight = 2")
    sandbox.chengjiyun.faults.add("delay", path="/vendor-api/addUser", times=None, value=0.3)
    process = await asyncio.create_subprocess_exec(
        *syncd_command("--config", str(config), "--run-once"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=subprocess_env(),
    )
    for _ in range(200):
        if len(sandbox.chengjiyun.accepted("addUser")) >= 2:
            break
        await asyncio.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    await process.wait()
    assert 0 < len(sandbox.chengjiyun.users) < len(sandbox.expected_user_ids())

    sandbox.chengjiyun.faults.clear()
    result = await run_syncd(config, "--run-once")
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(sandbox.chengjiyun.users) == sandbox.expected_user_ids()
    assert sandbox.chengjiyun.class_status_notifies == 1


async def test_plan_writes_nothing_and_speaks_json(sandbox: Sandbox) -> None:
    config = sandbox.config()
    text = await run_syncd(config, "plan")
    assert text.returncode == 0, text.stderr
    assert "  + cc-" in text.stdout and "  + ep-" in text.stdout
    assert "to add, 0 to change, 0 to delete, 0 held." in text.stdout
    assert "class statuses changed" in text.stdout
    assert not sandbox.database.exists()
    assert sandbox.chengjiyun.pushes == []

    plan = json.loads((await run_syncd(config, "plan", "--json")).stdout)
    added = {user["id"] for source in plan["sources"].values() for user in source["addUser"]}
    assert added == sandbox.expected_user_ids()
    assert not sandbox.database.exists()


async def test_demo_runs_on_its_own() -> None:
    result = await run_syncd(None, "demo", timeout_s=120)
    assert result.returncode == 0, result.stderr
    assert "== first sync ==" in result.stdout
    assert "deleteUser" in result.stdout
    assert "sent to Chengjiyun: nothing (no change)" in result.stdout
    assert "is back at Chengjiyun: True" in result.stdout
    assert "queryUsers?role=管理员: ep-t001, it-office" in result.stdout
    assert '"studentList": ["cc-' in result.stdout and '"headTeacher": "ep-' in result.stdout
