"""The unit files verify and rate "OK" (≤ 2.0) with systemd-analyze, where the tool exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

UNITS = [
    "syncd.service",
    "syncd@.service",
    "syncd-serve.service",
    "syncd-sync.service",
    "syncd-sync.timer",
]
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed on this machine"
)


def staged(tmp_path: Path) -> Path:
    """Copies of the units whose ExecStart points at an executable that exists here."""
    fake = tmp_path / "syncd"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    for unit in UNITS:
        text = (REPO / "systemd" / unit).read_text().replace("/usr/local/bin/syncd", str(fake))
        (tmp_path / unit).write_text(text)
    return tmp_path


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_units_verify(tmp_path: Path, unit: str) -> None:
    directory = staged(tmp_path)
    target = directory / (unit.replace("@.", "@school1.") if "@." in unit else unit)
    if "@." in unit:
        (directory / unit).rename(target)
    result = subprocess.run(
        [ANALYZE, "verify", str(target)], capture_output=True, text=True, check=False, timeout=60
    )
    problems = [
        line for line in result.stderr.splitlines() if str(directory) in line or "syncd" in line
    ]
    assert result.returncode == 0 and not problems, result.stderr


@needs_analyze
@pytest.mark.parametrize("unit", [u for u in UNITS if u.endswith(".service")])
def test_security_exposure_is_ok(unit: str) -> None:
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(REPO / "systemd" / unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout
    assert match.group(2) == "OK"


def test_units_are_hardened_and_use_the_state_directory() -> None:
    for unit in [u for u in UNITS if u.endswith(".service")]:
        text = (REPO / "systemd" / unit).read_text()
        for setting in (
            "DynamicUser=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "PrivateDevices=yes",
            "NoNewPrivileges=yes",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
            "SystemCallFilter=@system-service",
            "CapabilityBoundingSet=\n",
            "LoadCredential=",
        ):
            assert setting in text, f"{unit} lacks {setting.strip()}"
        assert "StateDirectory=syncd" in text
        assert "User=syncd" in text, f"{unit}: units sharing the database need one user name"
    assert "Type=notify" in (REPO / "systemd" / "syncd.service").read_text()
    assert "WatchdogSec=" in (REPO / "systemd" / "syncd.service").read_text()
    assert "--run-once" in (REPO / "systemd" / "syncd-sync.service").read_text()
