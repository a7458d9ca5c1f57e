"""Every row of the failure-handling table, produced for real and checked through the real CLI:
what the admin sees, what reached Chengjiyun, and that the next run ends in the exact state."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from conftest import subprocess_env, syncd_command
from sandbox_helpers import Result, Sandbox, run_syncd, start_sandbox, stop_sandbox


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    box = await start_sandbox(tmp_path)
    yield box
    await stop_sandbox(box)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def leaver(box: Sandbox) -> int:
    """A pupil who can leave cleanly: no student login of theirs is configured (that login
    would fail, and a failed account protects its pupils from deletion)."""
    logins = set(box.school.student_logins.values())
    return min(pid for pid in box.classcharts.pupils if pid not in logins)


def added_ids(box: Sandbox) -> list[str]:
    return [user["id"] for push in box.chengjiyun.accepted("addUser") for user in push.body]


def dead_letters(config: Path) -> int:
    out = subprocess.run(
        syncd_command("--config", str(config), "status", "--json"),
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
        timeout=60,
    )
    return len(json.loads(out.stdout)["dead_letters"])


async def test_a_second_syncing_process_exits_75_and_nothing_is_sent_twice(
    sandbox: Sandbox,
) -> None:
    config = sandbox.config(batch_size=10)
    sandbox.chengjiyun.faults.add("delay", path="/vendor-api/addUser", times=None, value=0.3)
    first, second = await asyncio.gather(
        run_syncd(config, "--run-once"), run_syncd(config, "--run-once")
    )
    codes = sorted([first.returncode, second.returncode])
    assert codes == [0, 75], (first, second)
    loser = first if first.returncode == 75 else second
    assert "another syncd process (pid " in loser.stderr and "nothing was done" in loser.stderr
    assert (
        len(added_ids(sandbox)) == len(set(added_ids(sandbox))) == len(sandbox.expected_user_ids())
    )
    assert "Traceback" not in loser.stderr


async def test_a_wrong_key_stops_at_once_and_dead_letters_nothing(sandbox: Sandbox) -> None:
    wrong = sandbox.config(key="not-the-key", batch_size=10)
    result = await run_syncd(wrong, "--run-once")
    assert result.returncode == 1
    assert len(sandbox.chengjiyun.pushes) <= 2
    assert "[chengjiyun] key" in result.stdout
    assert "Nothing was dead-lettered" in result.stdout
    assert dead_letters(wrong) == 0

    right = sandbox.config(batch_size=10)
    fixed = await run_syncd(right, "--run-once")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert set(sandbox.chengjiyun.users) == sandbox.expected_user_ids()


async def test_an_unreachable_chengjiyun_keeps_everything_queued(sandbox: Sandbox) -> None:
    config = sandbox.config(chengjiyun="drain_timeout_s = 20\ntimeout_s = 2")
    text = config.read_text(encoding="utf-8").replace(sandbox.urls[2], closed_port_url())
    down = config.with_name("down.toml")
    down.write_text(text, encoding="utf-8")
    started = time.monotonic()
    result = await run_syncd(down, "--run-once")
    assert result.returncode == 1 and time.monotonic() - started < 30
    assert "still queued (drain_timeout_s reached)" in result.stdout
    assert "the next run sends them" in result.stdout
    assert dead_letters(down) == 0
    probes = result.stdout.count("Chengjiyun did not take the batch")
    assert 0 < probes < 300, f"{probes} attempts: the whole drain backs off, not each batch"

    back = await run_syncd(config, "--run-once")
    assert back.returncode == 0, back.stdout + back.stderr
    assert set(sandbox.chengjiyun.users) == sandbox.expected_user_ids()


async def test_a_long_retry_after_never_hangs_the_run(sandbox: Sandbox) -> None:
    config = sandbox.config(chengjiyun="drain_timeout_s = 5")
    faults = sandbox.chengjiyun.faults
    faults.add("rate_limited", path="/vendor-api/addUser", times=1, value=3600)
    faults.add("rate_limited", path="/vendor-api/update/classStatus", times=None, value=3600)
    started = time.monotonic()
    result = await run_syncd(config, "--run-once")
    assert result.returncode == 1 and time.monotonic() - started < 20
    assert "still queued" in result.stdout
    faults.clear()
    again = await run_syncd(config, "--run-once")
    assert again.returncode == 0, again.stdout + again.stderr
    assert set(sandbox.chengjiyun.users) == sandbox.expected_user_ids()
    assert sandbox.chengjiyun.class_status_notifies == 1


async def test_an_add_whose_answer_was_lost_leaves_no_orphan(sandbox: Sandbox) -> None:
    config = sandbox.config(chengjiyun="drain_timeout_s = 3\ntimeout_s = 1")
    sandbox.chengjiyun.faults.add(
        "apply_then_delay", path="/vendor-api/addUser", times=None, value=5
    )
    first = await run_syncd(config, "--run-once")
    assert first.returncode == 1
    sandbox.chengjiyun.faults.clear()
    leaving = leaver(sandbox)
    assert f"cc-{leaving}" in sandbox.chengjiyun.users, "the add was applied, its answer lost"
    sandbox.classcharts.remove_pupil(leaving)
    await asyncio.sleep(5)  # the late answer is gone for good
    for _ in range(2):
        await run_syncd(config, "--run-once")
    assert f"cc-{leaving}" not in sandbox.chengjiyun.users
    assert set(sandbox.chengjiyun.users) == sandbox.expected_user_ids()


async def test_inconsistent_successful_answers_delete_nobody(sandbox: Sandbox) -> None:
    config = sandbox.config(safety="delete_after_cycles = 1", epaas="page_size = 2")
    assert (await run_syncd(config, "--run-once")).returncode == 0
    held = set(sandbox.chengjiyun.users)
    email = next(iter(sandbox.school.parents.values()))[1]
    for _ in range(3):
        sandbox.epaas.faults.add("repeat_last_page", path="/class/list", times=None)
        sandbox.classcharts.faults.add("pupils_empty", path="/pupils", times=None)
        result = await run_syncd(config, "--run-once")
        assert result.returncode == 1
        assert "repeated" in result.stdout and email in result.stdout
        sandbox.epaas.faults.clear()
        sandbox.classcharts.faults.clear()
    assert "deleteUser" not in {push.endpoint for push in sandbox.chengjiyun.pushes}
    assert set(sandbox.chengjiyun.users) == held


@pytest.mark.parametrize(("fault", "message"), [("huge", "limit"), ("deep", "nested too deep")])
async def test_a_hostile_epaas_answer_fails_only_epaas(
    sandbox: Sandbox, fault: str, message: str
) -> None:
    config = sandbox.config(chengjiyun="max_response_bytes = 8388608")
    sandbox.epaas.faults.add(fault, path="/class/list", times=None)
    result = await run_syncd(config, "--run-once", timeout_s=120)
    assert result.returncode == 1
    assert "epaas: FAILED" in result.stdout and message in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    pupils = {u for u in sandbox.expected_user_ids() if u.startswith("cc-")}
    assert set(sandbox.chengjiyun.users) == pupils, "ClassCharts' changes are still sent"
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert peak_mb < 200, f"peak RSS {peak_mb:.0f} MB"


def _one_line_exit_2(result: Result, *words: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("syncd:")]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def remount(mount: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)


@pytest.fixture
def small_mount(tmp_path: Path) -> AsyncIterator[Path]:
    mount = tmp_path / "mnt"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_read_only_directory_is_one_line_and_exit_2(
    sandbox: Sandbox, small_mount: Path
) -> None:
    config = sandbox.config()
    text = config.read_text(encoding="utf-8").replace(
        str(sandbox.database), str(small_mount / "syncd.db")
    )
    config.write_text(text, encoding="utf-8")
    await asyncio.to_thread(remount, small_mount, "size=8m")
    assert (await run_syncd(config, "--run-once")).returncode == 0
    await asyncio.to_thread(remount, small_mount, "ro")
    sandbox.classcharts.rename_pupil(leaver(sandbox), "Renamed", "Pupil")
    since = len(sandbox.chengjiyun.pushes)
    result = await run_syncd(config, "--run-once")
    _one_line_exit_2(result, str(small_mount))
    assert len(sandbox.chengjiyun.pushes) == since, "nothing is sent"
    status = await run_syncd(config, "status")  # SQLite's WAL mode cannot read on a read-only mount
    _one_line_exit_2(status, str(small_mount))


async def test_a_full_disk_is_one_line_and_exit_2(sandbox: Sandbox, small_mount: Path) -> None:
    config = sandbox.config()
    text = config.read_text(encoding="utf-8").replace(
        str(sandbox.database), str(small_mount / "syncd.db")
    )
    config.write_text(text, encoding="utf-8")
    fd = os.open(small_mount / "filler", os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    result = await run_syncd(config, "--run-once")
    _one_line_exit_2(result)
    assert "full" in result.stderr or "writable" in result.stderr
    assert sandbox.chengjiyun.pushes == []


async def test_a_corrupt_database_is_one_line_and_exit_2(sandbox: Sandbox) -> None:
    config = sandbox.config()
    sandbox.database.write_bytes(b"garbage, not SQLite " * 500)
    for command in (["--run-once"], ["status"], ["plan"]):
        result = await run_syncd(config, *command)
        _one_line_exit_2(result, "corrupt", "restore-backup")
    assert sandbox.chengjiyun.pushes == []


async def test_a_lost_database_with_a_backup_is_restored_not_resynced(sandbox: Sandbox) -> None:
    config = sandbox.config(safety="delete_after_cycles = 1")
    assert (await run_syncd(config, "--run-once")).returncode == 0
    backup = sandbox.database.with_name("syncd.db.bak")
    assert backup.exists(), "the first good cycle of the day is backed up"
    sandbox.database.unlink()
    since = len(sandbox.chengjiyun.pushes)
    refused = await run_syncd(config, "--run-once")
    _one_line_exit_2(refused, "restore-backup", "--fresh")
    assert len(sandbox.chengjiyun.pushes) == since

    leaving = leaver(sandbox)
    sandbox.classcharts.remove_pupil(leaving)
    restored = await run_syncd(config, "restore-backup")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    after = await run_syncd(config, "--run-once")
    assert after.returncode == 0, after.stdout + after.stderr
    assert f"cc-{leaving}" not in sandbox.chengjiyun.users
    assert set(sandbox.chengjiyun.users) == sandbox.expected_user_ids()


async def test_an_upstream_message_echoing_a_secret_is_redacted_everywhere(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    secret = "sandbox-permanent"
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    listen = f"127.0.0.1:{port.getsockname()[1]}"
    port.close()
    config = sandbox.config(listen=listen)
    sandbox.epaas.faults.add(
        "errmsg", path="/class/list", times=None, value=f"bad permanent_code {secret}"
    )
    result = await run_syncd(config, "--run-once")
    assert result.returncode == 1 and "epaas: FAILED" in result.stdout
    status = await run_syncd(config, "status", "--json")
    outputs = result.stdout + result.stderr + status.stdout + status.stderr
    assert "bad permanent_code" in outputs and secret not in outputs
    for path in sandbox.database.parent.glob("syncd.db*"):
        assert secret.encode() not in path.read_bytes(), path

    process = await asyncio.create_subprocess_exec(
        *syncd_command("--config", str(config), "serve"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=subprocess_env(),
    )
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"http://{listen}/healthz") as response:
                        body = await response.text()
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("serve did not start")
    finally:
        process.terminate()
        logs, _ = await process.communicate()
    assert secret not in body and secret not in logs.decode()
