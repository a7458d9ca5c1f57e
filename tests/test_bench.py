"""The benchmark that the README's cycle figures come from still runs and prints them.

Timings are not asserted (machine noise); the work per cycle is, since it is deterministic: a
daemon's no-change cycle makes the same Python calls every time, whatever its uptime.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import REPO, subprocess_env


@pytest.mark.timeout(300)
def test_bench_cycle_prints_its_figures_and_the_work_per_cycle_is_flat() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "bench_cycle.py"),
            "--sizes",
            "300",
            "--cycles",
            "4",
            "--long-pupils",
            "300",
            "--count-calls",
            "--limit-s",
            "240",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        env=subprocess_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"^\s+300\s+\d+\s+[\d,]+\s+[\d.]+\s+[\d.]+\s+\d+\s+\d+ \(", out, re.M), out
    assert "machine noise: the same fixed workload" in out
    work = re.search(r"Python function calls per cycle, first ([\d,]+), last ([\d,]+)", out)
    assert work is not None, out
    first, last = (int(group.replace(",", "")) for group in work.groups())
    assert first > 10_000, "a cycle of 300 pupils polls hundreds of accounts"
    assert abs(last - first) / first < 0.02, f"work per cycle grew: {first} -> {last}"
