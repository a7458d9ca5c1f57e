"""Several schools in one syncd: ``--config DIR``, each school with its own fakes, database, lock
and key; pulls routed by orgId; one school's hang or bad file never holds up another; SIGHUP
starts an added school without touching the others."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_alerts import Webhook, webhook  # noqa: F401 - the fixture
from test_service import _listening, free_port, wait_for

from conftest import subprocess_env, syncd_command
from sandbox_helpers import Sandbox, run_syncd, start_sandbox, stop_sandbox
from syncd.core.signing import signed_query
from syncd.engine.lock import read_holder
from syncd.exceptions import ConfigError
from syncd.schools import load_schools

A, B, C = "school-a", "school-b", "school-c"
HANG_TIMEOUT_S = 15  # school A's epaas timeout (its epaas hangs)
BROKEN = '[chengjiyun]\nplatform = "sandbox"\norg_id = "school-x"\n'  # no key: invalid


@pytest.fixture
async def boxes(tmp_path: Path) -> AsyncIterator[dict[str, Sandbox]]:
    started: dict[str, Sandbox] = {}
    for seed, org_id in enumerate((A, B, C), start=11):
        (tmp_path / org_id).mkdir()
        started[org_id] = await start_sandbox(
            tmp_path / org_id, org_id=org_id, key=f"key-{org_id}", seed=seed
        )
    yield started
    for box in started.values():
        await stop_sandbox(box)


def school_file(box: Sandbox, directory: Path, port: int, *, epaas: str = "") -> Path:
    """The school's config, in the schools directory; every file names the same listener."""
    directory.mkdir(exist_ok=True)
    text = box.config(listen=f"127.0.0.1:{port}", epaas=epaas).read_text(encoding="utf-8")
    target = directory / f"{box.chengjiyun.org_id}.toml"
    target.write_text(text, encoding="utf-8")
    return target


def synced(box: Sandbox) -> bool:
    return set(box.chengjiyun.users) == box.expected_user_ids()


async def pull(port: int, org_id: str, key: str) -> dict[str, Any]:
    query = signed_query({"orgId": org_id, "timestamp": int(time.time())}, key)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/queryUsers?{query}") as response,
    ):
        answer: dict[str, Any] = await response.json()
        return answer


def names(users: Any) -> set[tuple[str, str]]:
    return {(user["id"], user["name"]) for user in users}


async def pull_once_acknowledged(port: int, org_id: str, box: Sandbox) -> dict[str, Any]:
    """The school's queryUsers answer once it serves what Chengjiyun holds (bounded wait).

    Chengjiyun holds a user as soon as it has answered; syncd serves it once that answer is
    recorded, a moment later: a pull in between rightly shows the previous snapshot.
    """
    deadline = time.monotonic() + 10
    while True:
        answer = await pull(port, org_id, f"key-{org_id}")
        held = names(box.chengjiyun.users.values())
        if answer["code"] != 0 or names(answer["data"]) == held or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.05)


async def test_one_process_syncs_and_serves_each_school_apart_and_reloads_on_sighup(
    boxes: dict[str, Sandbox],
    tmp_path: Path,
    webhook: Webhook,  # noqa: F811 - the fixture imported above
) -> None:
    port, directory = free_port(), tmp_path / "schools"
    school_file(boxes[A], directory, port, epaas=f"timeout_s = {HANG_TIMEOUT_S}")
    school_file(boxes[B], directory, port)
    # Invalid, but its [alerts] section is sound: its admin is told the school is not running.
    alerts = f'[alerts]\nwebhook_url = "{webhook.url()}"\n'
    (directory / "broken.toml").write_text(BROKEN + alerts, encoding="utf-8")
    # School A's epaas hangs (A starts first): its poll waits for its timeout; B must not wait.
    boxes[A].epaas.faults.add("delay", value=3600, times=None)
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log_file:
        process = await asyncio.create_subprocess_exec(
            *syncd_command("--config", str(directory), "run"),
            stdout=log_file,
            stderr=log_file,
            env=subprocess_env(),
        )
    try:
        await wait_for(lambda: synced(boxes[B]), timeout_s=60)
        assert boxes[A].epaas.requests, "school A's epaas was asked first, and is hanging"
        a_gave_up = [
            line
            for line in log_path.read_text().splitlines()
            if "source failed" in line and A in line
        ]
        assert not a_gave_up, "school B was synced only after school A's epaas poll timed out"
        pupils_a = {f"cc-{pid}" for pid in boxes[A].classcharts.pupils}
        await wait_for(lambda: pupils_a <= set(boxes[A].chengjiyun.users), timeout_s=30)

        # Pulls: each orgId gets its own school's users, signed with its own key.
        answer_b = await pull_once_acknowledged(port, B, boxes[B])
        assert answer_b["code"] == 0
        assert names(answer_b["data"]) == names(boxes[B].chengjiyun.users.values())
        answer_a = await pull_once_acknowledged(port, A, boxes[A])
        assert answer_a["code"] == 0 and names(answer_a["data"]) != names(answer_b["data"])
        assert (await pull(port, B, f"key-{A}"))["code"] == 30006  # A's key does not open B
        assert (await pull(port, "nobody", f"key-{A}"))["code"] == 30005
        # A school the directory holds but does not run: "busy, come back", not "wrong orgId".
        assert (await pull(port, "school-x", f"key-{A}"))["code"] == 10002

        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            health = await response.json()
        assert response.status == 503 and health["not_running"] == {
            "school-x": "invalid configuration"
        }
        assert set(health["schools"]) == {A, B}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            metrics = await response.text()
        for org_id in (A, B):
            assert f'syncd_dead_letters{{org_id="{org_id}"}} 0.0' in metrics
            assert (
                f'syncd_cycles_total{{org_id="{org_id}",outcome="ok",source="classcharts"}}'
                in metrics
            )
        await wait_for(lambda: bool(webhook.bodies))  # delivered in the background
        assert [(b["event"], b["school"]) for b in webhook.bodies] == [
            ("config_invalid", "school-x")
        ]

        status = await run_syncd(directory, "status")
        assert status.returncode == 1, status.stdout + status.stderr
        rows = {line.split()[0]: line for line in status.stdout.splitlines() if line}
        assert {A, B, "school-x"} <= set(rows) and "INVALID" in rows["school-x"]

        # SIGHUP after adding school C: C starts; A and B keep their locks (same holder, same
        # start time) and are not restarted.
        holders = {org: read_holder(boxes[org].database) for org in (A, B)}
        school_file(boxes[C], directory, port)
        process.send_signal(signal.SIGHUP)
        await wait_for(lambda: synced(boxes[C]), timeout_s=60)
        assert {org: read_holder(boxes[org].database) for org in (A, B)} == holders
        assert all(h is not None and h["pid"] == process.pid for h in holders.values())

        # SIGHUP after removing school B and changing C: B stops (its lock is free, its pulls
        # unknown), C restarts (a new lock), A is not touched.
        c_holder = read_holder(boxes[C].database)
        (directory / f"{B}.toml").unlink()
        c_file = directory / f"{C}.toml"
        c_file.write_text(c_file.read_text().replace("batch_size = 100", "batch_size = 50"))
        process.send_signal(signal.SIGHUP)
        await wait_for(lambda: read_holder(boxes[B].database) is None, timeout_s=30)
        await wait_for(lambda: read_holder(boxes[C].database) not in (None, c_holder))
        assert read_holder(boxes[A].database) == holders[A]
        assert (await pull(port, B, f"key-{B}"))["code"] == 30005
        # C's new lock is taken before its pulls are served again: until then it answers busy.
        codes = [(await pull(port, C, f"key-{C}"))["code"]]
        while codes[-1] != 0 and len(codes) < 200:
            await asyncio.sleep(0.05)
            codes.append((await pull(port, C, f"key-{C}"))["code"])
        assert set(codes) <= {10002, 0} and codes[-1] == 0, codes
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), timeout=60)
    log = log_path.read_text(encoding="utf-8")
    assert returncode == 0, log[-3000:]
    assert "Traceback" not in log
    reloads = [json.loads(line) for line in log.splitlines() if "configuration reloaded" in line]
    assert [(r["started"], r["restarted"], r["stopped"]) for r in reloads] == [
        ([C], [], []),
        ([], [C], [B]),
    ]
    assert "broken.toml" in log and "chengjiyun.key" in log  # the invalid file is named, with why


async def test_commands_over_a_directory(boxes: dict[str, Sandbox], tmp_path: Path) -> None:
    port, directory = free_port(), tmp_path / "schools"
    for org_id in (A, B):
        school_file(boxes[org_id], directory, port)
    (directory / "broken.toml").write_text(BROKEN, encoding="utf-8")

    check = await run_syncd(directory, "check-config")
    assert check.returncode == 2
    assert "broken.toml: chengjiyun.key: is required" in check.stdout
    assert "2 of 3 school file(s) valid" in check.stdout
    assert f"school {A}: valid; database {boxes[A].database}; sources: classcharts, epaas" in (
        check.stdout
    )

    plan = await run_syncd(directory, "plan")
    assert plan.returncode == 2 and "--school ORG_ID" in plan.stderr
    assert (await run_syncd(directory, "--school", A, "plan")).returncode == 0
    unknown = await run_syncd(directory, "--school", "nobody", "status")
    assert unknown.returncode == 2 and "no school has orgId 'nobody'" in unknown.stderr

    once = await run_syncd(directory, "--run-once", timeout_s=120)
    assert once.returncode == 2, once.stdout + once.stderr  # the invalid file
    assert "== school school-a" in once.stdout and "== school school-b" in once.stdout
    assert synced(boxes[A]) and synced(boxes[B]) and not boxes[C].chengjiyun.users

    (directory / "broken.toml").unlink()
    status = await run_syncd(directory, "status", "--json")
    assert status.returncode == 0, status.stdout
    assert set(json.loads(status.stdout)["schools"]) == {A, B}
    one = await run_syncd(directory, "--school", B, "status")
    assert one.returncode == 0 and str(boxes[B].database) in one.stdout

    # `serve` alone answers every school's pulls.
    process = await asyncio.create_subprocess_exec(
        *syncd_command("--config", str(directory), "serve"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=subprocess_env(),
    )
    try:
        await wait_for(lambda: _listening(port))
        for org_id in (A, B):
            answer = await pull(port, org_id, f"key-{org_id}")
            assert names(answer["data"]) == names(boxes[org_id].chengjiyun.users.values()), answer
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0


def test_files_of_a_directory_must_agree(tmp_path: Path) -> None:
    def school(name: str, org_id: str, extra: str = "") -> None:
        (tmp_path / name).write_text(
            f'[chengjiyun]\nplatform = "p"\nkey = "k"\norg_id = "{org_id}"\n{extra}',
            encoding="utf-8",
        )

    school("a.toml", "one", '[server]\nlisten = "127.0.0.1:9001"\n')
    school("b.toml", "two")  # no [server]: shares a.toml's listener
    school("c.toml", "one")  # a.toml's orgId
    school("d.toml", "four", '[server]\nlisten = "127.0.0.1:9002"\n')  # another listener
    school("e.toml", "five", '[store]\npath = "/tmp/elsewhere/one.db"\n')
    school("f.toml", "six", '[store]\npath = "/tmp/elsewhere/one.db"\n')  # e.toml's database
    school("g.toml", "a/b")  # an orgId that cannot name a database file
    (tmp_path / "notes.txt").write_text("not a school", encoding="utf-8")
    schools = load_schools(tmp_path, state_dir=Path("/srv/syncd"))
    assert list(schools.schools) == ["one", "two", "five"]
    assert schools.schools["two"].store.path == Path("/srv/syncd/two.db")
    assert schools.server.listen == "127.0.0.1:9001"
    problems = {bad.path.name: bad.error.key for bad in schools.invalid}
    assert problems == {
        "c.toml": "chengjiyun.org_id",
        "d.toml": "server",
        "f.toml": "store.path",
        "g.toml": "store.path",
    }
    with pytest.raises(ConfigError, match="several schools"):
        schools.one(None)
    assert schools.one("two").chengjiyun.org_id == "two"
    only = schools.only("two")  # `run --school two`: that school alone, on the same listener
    assert list(only.schools) == ["two"] and only.server == schools.server and only.is_directory
    with pytest.raises(ConfigError, match=r"school four \(.*d\.toml\) does not validate"):
        schools.one("four")


async def test_a_school_whose_database_cannot_open_is_reported_and_the_others_run(
    tmp_path: Path,
    webhook: Webhook,  # noqa: F811 - the fixture imported above
) -> None:
    from syncd.engine.daemon import Daemon

    port = free_port()
    (tmp_path / "not-a-directory").write_text("", encoding="utf-8")
    for org_id, database in (
        ("good", tmp_path / "good.db"),
        ("bad", tmp_path / "not-a-directory" / "x.db"),
    ):
        (tmp_path / f"{org_id}.toml").write_text(
            f'[store]\npath = "{database}"\n[server]\nlisten = "127.0.0.1:{port}"\n'
            f'[chengjiyun]\nplatform = "p"\nkey = "k-{org_id}"\norg_id = "{org_id}"\n'
            f'[alerts]\nwebhook_url = "{webhook.url()}"\n',
            encoding="utf-8",
        )
    daemon = Daemon(load_schools(tmp_path))
    running = asyncio.create_task(daemon.run())
    try:
        await wait_for(lambda: _listening(port))
        assert set(daemon.services) == {"good"}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            health = await response.json()
        assert response.status == 503 and health["not_running"] == {"bad": "not started"}
        assert (await pull(port, "good", "k-good"))["code"] == 0
        await wait_for(lambda: bool(webhook.bodies))
        assert [(b["event"], b["school"]) for b in webhook.bodies] == [
            ("school_not_started", "bad")
        ]
        assert "not-a-directory" in webhook.bodies[0]["text"]  # what is wrong, and where
    finally:
        daemon.request_stop()
        await asyncio.wait_for(running, timeout=30)
