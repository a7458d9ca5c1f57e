"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from syncd.engine.notify import SystemdNotifier, watchdog_loop


@pytest.fixture
def systemd_socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(2)
    return sock


def test_messages_arrive_as_datagrams(systemd_socket: socket.socket) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": systemd_socket.getsockname()})
    notifier.ready()
    notifier.status("syncing classcharts")
    notifier.watchdog()
    notifier.stopping()
    received = [systemd_socket.recv(1024).decode() for _ in range(4)]
    assert received == ["READY=1", "STATUS=syncing classcharts", "WATCHDOG=1", "STOPPING=1"]


def test_abstract_namespace_socket() -> None:
    name = f"syncd-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    with sock:
        SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(64) == b"READY=1"


def test_no_socket_is_a_quiet_no_op() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    notifier.ready()  # nothing to send to, nothing raised
    assert notifier.watchdog_interval_s is None


def test_a_vanished_socket_never_raises(tmp_path: Path) -> None:
    SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).ready()


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    assert SystemdNotifier(env).watchdog_interval_s == interval


async def test_watchdog_loop_pings_until_stopped(systemd_socket: socket.socket) -> None:
    notifier = SystemdNotifier(
        {"NOTIFY_SOCKET": systemd_socket.getsockname(), "WATCHDOG_USEC": "40000"}
    )
    stop = asyncio.Event()
    task = asyncio.create_task(watchdog_loop(notifier, stop))
    await asyncio.sleep(0.15)
    stop.set()
    await asyncio.wait_for(task, 2)
    systemd_socket.setblocking(False)
    pings = []
    while True:
        try:
            pings.append(systemd_socket.recv(64))
        except BlockingIOError:
            break
    assert len(pings) >= 3 and set(pings) == {b"WATCHDOG=1"}
