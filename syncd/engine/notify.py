"""sd_notify without libsystemd: one AF_UNIX datagram to ``$NOTIFY_SOCKET`` per message.

A leading ``@`` in the socket path means Linux's abstract namespace. When ``$NOTIFY_SOCKET`` is
unset (not started by systemd, or ``Type=simple``), every call is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket

from syncd.log import get_logger

__all__ = ["SystemdNotifier", "watchdog_loop"]

log = get_logger(__name__)


class SystemdNotifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self._warned = False
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        for_us = not pid or pid == str(os.getpid())
        self.watchdog_interval_s: float | None = (
            int(usec) / 2_000_000 if usec.isdigit() and int(usec) > 0 and for_us else None
        )

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, message: str) -> None:
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never block the event loop: a receiver that stopped reading would freeze
                # the whole daemon (its queue holds only about ten datagrams).
                sock.setblocking(False)
                sock.sendto(message.encode(), self._address)
        except OSError as err:
            if not self._warned:  # once: a broken socket would otherwise flood the log
                log.warning("cannot notify systemd", error=str(err))
                self._warned = True

    def ready(self) -> None:
        self.notify("READY=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")


async def watchdog_loop(notifier: SystemdNotifier, stop: asyncio.Event) -> None:
    """Ping the watchdog from the event loop, so a stuck loop stops the pings and gets restarted."""
    interval = notifier.watchdog_interval_s
    if interval is None:
        return
    while not stop.is_set():
        notifier.watchdog()
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            pass
