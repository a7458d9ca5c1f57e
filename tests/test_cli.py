"""The command line's own behaviour: help, usage errors, progress on a terminal."""

from __future__ import annotations

import io
import subprocess

from conftest import subprocess_env, syncd_command
from syncd.cli import COMMANDS, _resolve
from syncd.cli.progress import Progress as _Progress


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        syncd_command(*args),
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        check=False,
    )


def test_help_lists_every_command_of_design() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in (
        "run",
        "serve",
        "plan",
        "status",
        "sso-url",
        "demo",
        "--run-once",
        "check-config",
    ):
        assert command in result.stdout


def test_no_command_is_a_usage_error() -> None:
    result = run()
    assert result.returncode == 2 and "usage: syncd" in result.stdout


def test_run_once_cannot_be_combined() -> None:
    result = run("--run-once", "status")
    assert result.returncode == 2 and "--run-once is a command of its own" in result.stderr


def test_every_command_resolves_to_a_function() -> None:
    for target in COMMANDS.values():
        assert callable(_resolve(target)), target


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_done_total_rate_and_eta_on_one_line() -> None:
    screen = Terminal()
    progress = _Progress(screen)
    progress(50, 200)
    progress(100, 200)
    lines = screen.getvalue().split("\r")[1:]
    assert len(lines) == 2 and "\n" not in screen.getvalue()
    assert "100/200 operations" in lines[1] and "/s" in lines[1] and "ETA" in lines[1]


def test_sandbox_runs_the_fakes_for_trying_syncd_by_hand(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import signal
    import time

    sandbox = subprocess.Popen(
        syncd_command("sandbox", "--pupils", "20", "--dir", str(tmp_path)),
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    try:
        assert sandbox.stdout is not None
        lines = [sandbox.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("sandbox running:") and "config:" in lines[1]
        config = lines[1].split("config:", 1)[1].strip()
        deadline = time.monotonic() + 60
        result = run("--config", config, "--run-once")
        assert time.monotonic() < deadline
        assert result.returncode == 0, result.stdout + result.stderr
        assert "sent: " in result.stdout and "addUser" in result.stdout
    finally:
        sandbox.send_signal(signal.SIGINT)
        assert sandbox.wait(timeout=30) == 0
