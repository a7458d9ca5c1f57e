"""Shared fixtures. Fakes listen on 127.0.0.1 only; nothing here reaches another host."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own $SYNCD_CONFIG must never leak into a test."""
    monkeypatch.delenv("SYNCD_CONFIG", raising=False)


def syncd_command(*args: str) -> list[str]:
    """argv that runs the installed CLI of this checkout, as an admin would."""
    return [sys.executable, "-m", "syncd", *args]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.update(extra)
    return env
