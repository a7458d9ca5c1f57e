"""The diff is pure: desired vs acknowledged, with DESIGN's deletion safety rules."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from syncd.config import SafetyConfig
from syncd.core.diff import AckedUser, SourceDiff, diff_source
from syncd.core.model import ClassStatus, User

PARENT = "parent:a@x.org"
OTHER = "parent:b@x.org"


def pupil(n: int, name: str | None = None, owner: str = PARENT, **fields: Any) -> User:
    return User(
        f"cc-{n}",
        name or f"Pupil {n}",
        ("学生",),
        "classcharts",
        owners=frozenset({owner}),
        **fields,
    )


def diff(
    desired: list[User],
    acked: list[User] | dict[str, AckedUser],
    *,
    complete: bool = True,
    failed: frozenset[str] = frozenset(),
    approved: frozenset[str] = frozenset(),
    statuses: dict[str, ClassStatus] | None = None,
    stored: dict[str, ClassStatus] | None = None,
    **safety: Any,
) -> SourceDiff:
    acknowledged = acked if isinstance(acked, dict) else {u.id: AckedUser(u) for u in acked}
    return diff_source(
        source="classcharts",
        desired={u.id: u for u in desired},
        acknowledged=acknowledged,
        complete=complete,
        failed_owners=failed,
        approved_ids=approved,
        safety=SafetyConfig(**{"max_delete_fraction": 1.0, **safety}),
        desired_class_statuses=statuses,
        stored_class_statuses=stored or {},
    )


def test_adds_updates_unchanged() -> None:
    result = diff([pupil(1), pupil(2, "Renamed"), pupil(3)], [pupil(2), pupil(3)])
    assert [u.id for u in result.adds] == ["cc-1"]
    assert [(u.user.id, u.changes) for u in result.updates] == [
        ("cc-2", {"id": "cc-2", "name": "Renamed"})
    ]
    assert result.unchanged_ids == {"cc-3"}
    assert not result.deletes and not result.held


def test_field_level_changes_only() -> None:
    result = diff([pupil(1, grade=8, class_no=2, gender="女")], [pupil(1, grade=7, class_no=2)])
    assert result.updates[0].changes == {"id": "cc-1", "grade": 8, "gender": "女"}


def test_a_change_chengjiyun_does_not_take_is_stored_not_sent() -> None:
    old = User(
        "cc-parent-1",
        "P",
        ("家长",),
        "classcharts",
        student_list=("cc-1",),
        owners=frozenset({PARENT}),
    )
    new = User(
        "cc-parent-1",
        "P",
        ("家长",),
        "classcharts",
        student_list=("cc-1", "cc-2"),
        owners=frozenset({PARENT}),
    )
    result = diff([new], [old])
    assert result.updates[0].changes == {"id": "cc-parent-1"}
    assert not result.updates[0].sends
    assert result.is_empty


def test_deleted_only_after_delete_after_cycles_complete_polls() -> None:
    acked = {"cc-1": AckedUser(pupil(1), 0)}
    first = diff([], acked, delete_after_cycles=2)
    assert not first.deletes and first.missing == {"cc-1": 1}
    second = diff([], {"cc-1": AckedUser(pupil(1), 1)}, delete_after_cycles=2)
    assert [u.id for u in second.deletes] == ["cc-1"] and second.missing == {"cc-1": 2}
    assert [u.id for u in diff([], acked, delete_after_cycles=1).deletes] == ["cc-1"]
    third = diff([], acked, delete_after_cycles=3)
    assert third.missing == {"cc-1": 1}


def test_a_record_that_comes_back_sends_nothing() -> None:
    result = diff([pupil(1)], {"cc-1": AckedUser(pupil(1), 1)}, delete_after_cycles=2)
    assert result.is_empty and result.unchanged_ids == {"cc-1"} and result.missing == {}


def test_a_failed_owner_protects_its_records_only() -> None:
    acked = [pupil(1, owner=PARENT), pupil(2, owner=OTHER)]
    result = diff([], acked, failed=frozenset({PARENT}), delete_after_cycles=1)
    assert [u.id for u in result.deletes] == ["cc-2"]
    assert result.missing == {"cc-1": 0, "cc-2": 1}


def test_an_incomplete_poll_deletes_nothing_and_counts_nothing() -> None:
    acked = {"cc-1": AckedUser(pupil(1), 1)}
    result = diff([], acked, complete=False, delete_after_cycles=2)
    assert not result.deletes and result.missing == {"cc-1": 1}


def test_too_many_deletions_are_all_held_unless_approved() -> None:
    acked = [pupil(n) for n in range(10)]
    by_count = diff(acked[:5], acked, delete_after_cycles=1, max_deletes=4)
    assert not by_count.deletes and len(by_count.held) == 5
    assert "max_deletes = 4" in by_count.held[0][1]
    by_fraction = diff(acked[:7], acked, delete_after_cycles=1, max_delete_fraction=0.2)
    assert not by_fraction.deletes and len(by_fraction.held) == 3
    assert "max_delete_fraction = 0.2" in by_fraction.held[0][1]
    approved = diff(
        acked[:5], acked, delete_after_cycles=1, max_deletes=4, approved=frozenset({"cc-5", "cc-6"})
    )
    assert [u.id for u in approved.deletes] == ["cc-5", "cc-6"] and len(approved.held) == 3
    within = diff(acked[:8], acked, delete_after_cycles=1, max_delete_fraction=0.2)
    assert len(within.deletes) == 2 and not within.held


def test_class_status_changes() -> None:
    one = ClassStatus("ep-class-1", 2025, 8, 1, "ep-t1")
    moved = ClassStatus("ep-class-1", 2025, 8, 1, "ep-t2")
    assert diff([], [], statuses={"ep-class-1": one}, stored={}).class_status_changed
    assert not diff(
        [], [], statuses={"ep-class-1": one}, stored={"ep-class-1": one}
    ).class_status_changed
    assert diff(
        [], [], statuses={"ep-class-1": moved}, stored={"ep-class-1": one}
    ).class_status_changed
    partial = diff([], [], complete=False, statuses={}, stored={"ep-class-1": one})
    assert partial.class_statuses == {"ep-class-1": one} and not partial.class_status_changed
    assert diff([], []).class_statuses is None


def test_role_change_warns() -> None:
    result = diff([User("cc-1", "X", ("教师",), "classcharts")], [pupil(1, "X")])
    assert result.warnings and "updateUser cannot change roles" in result.warnings[0]


def test_deterministic() -> None:
    args = ([pupil(3), pupil(1), pupil(2, "B")], [pupil(2), pupil(4)])
    assert diff(*args, delete_after_cycles=1) == diff(*args, delete_after_cycles=1)


names = st.sampled_from(["Ann", "Bob", "Cai", "Dee"])
snapshots = st.dictionaries(st.integers(0, 30), names, max_size=20)


@given(acked=snapshots, desired=snapshots)
def test_applying_a_diff_yields_the_desired_state(
    acked: dict[int, str], desired: dict[int, str]
) -> None:
    before = {f"cc-{n}": pupil(n, name) for n, name in acked.items()}
    after = {f"cc-{n}": pupil(n, name) for n, name in desired.items()}
    result = diff(list(after.values()), list(before.values()), delete_after_cycles=1)
    state = {uid: u.pushed() for uid, u in before.items()}
    for user in result.adds:
        state[user.id] = user.pushed()
    for update in result.updates:
        state[update.user.id].update(update.changes)
    for user in result.deletes:
        del state[user.id]
    assert state == {uid: u.pushed() for uid, u in after.items()}


def test_a_held_deletion_stays_held_across_cycles() -> None:
    acked = [pupil(n) for n in range(10)]
    first = diff(acked[:5], acked, delete_after_cycles=2, max_deletes=4)
    assert not first.held and all(first.missing[f"cc-{n}"] == 1 for n in range(5, 10))
    counters = {u.id: AckedUser(u, first.missing.get(u.id, 0)) for u in acked}
    second = diff(acked[:5], counters, delete_after_cycles=2, max_deletes=4)
    assert len(second.held) == 5 and all(second.missing[u.id] == 2 for u, _ in second.held)
    counters = {u.id: AckedUser(u, second.missing.get(u.id, 0)) for u in acked}
    third = diff(acked[:5], counters, delete_after_cycles=2, max_deletes=4)
    assert len(third.held) == 5, "still held, not dropped every other cycle"
