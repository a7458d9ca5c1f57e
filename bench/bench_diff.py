"""Diff of 100,000 users with 1% changed: time of diff_source and peak memory of the process.

Target (issue 3): under 0.5 s and under 200 MB for the whole process on a 2-core machine.
Run: .venv/bin/python bench/bench_diff.py
"""

from __future__ import annotations

import gc
import resource
import time

from syncd.config import SafetyConfig
from syncd.core.diff import AckedUser, diff_source
from syncd.core.model import User

USERS = 100_000
CHANGED = USERS // 100  # 1%: a third added, a third renamed, a third gone
RUNS = 5


def build() -> tuple[dict[str, User], dict[str, AckedUser]]:
    owners = frozenset({"parent:bench@example.org"})
    acked = {
        f"cc-{n}": AckedUser(
            User(
                f"cc-{n}",
                f"Pupil {n}",
                ("学生",),
                "classcharts",
                grade=7 + n % 6,
                class_no=1 + n % 12,
                owners=owners,
            )
        )
        for n in range(USERS)
    }
    desired = {uid: a.user for uid, a in acked.items()}
    third = CHANGED // 3
    for n in range(third):
        desired[f"cc-{n}"] = User(
            f"cc-{n}",
            f"Renamed {n}",
            ("学生",),
            "classcharts",
            grade=7 + n % 6,
            class_no=1 + n % 12,
            owners=owners,
        )
    for n in range(third, 2 * third):
        del desired[f"cc-{n}"]
    for n in range(USERS, USERS + CHANGED - 2 * third):
        desired[f"cc-{n}"] = User(f"cc-{n}", f"New {n}", ("学生",), "classcharts", owners=owners)
    return desired, acked


def main() -> None:
    desired, acked = build()
    safety = SafetyConfig(delete_after_cycles=1, max_deletes=100_000, max_delete_fraction=1.0)
    timings = []
    for _ in range(RUNS):
        gc.collect()
        started = time.perf_counter()
        result = diff_source(
            source="classcharts",
            desired=desired,
            acknowledged=acked,
            complete=True,
            failed_owners=frozenset(),
            approved_ids=frozenset(),
            safety=safety,
            desired_class_statuses=None,
            stored_class_statuses={},
        )
        timings.append(time.perf_counter() - started)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"users: {USERS:,} acknowledged, {len(desired):,} desired ({CHANGED:,} changed)")
    print(
        f"result: {len(result.adds)} adds, {len(result.updates)} updates, {len(result.deletes)} deletes"
    )
    print(
        f"diff time: best {min(timings):.3f} s, median {sorted(timings)[RUNS // 2]:.3f} s over {RUNS} runs (target < 0.5 s)"
    )
    print(f"peak memory of the whole process: {peak_mb:.0f} MB (target < 200 MB)")


if __name__ == "__main__":
    main()
