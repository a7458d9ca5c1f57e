"""The diff is pure: desired vs acknowledged, with the deletion and class-status safety rules."""

from __future__ import annotations

from typing import Any

import pytest
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
    approved_statuses = bool(safety.pop("class_statuses_approved", False))
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
        class_statuses_approved=approved_statuses,
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


def test_a_role_change_is_sent_as_an_add_of_the_whole_record() -> None:
    # updateUser has no roleList; addUser of an existing id replaces the record.
    teacher = User("cc-1", "X", ("教师",), "classcharts", grade=7)
    result = diff([teacher], [pupil(1, "X", grade=7, class_no=2)])
    assert result.adds == (teacher,) and not result.updates and not result.warnings
    assert result.adds[0].pushed() == {"id": "cc-1", "name": "X", "roleList": ["教师"], "grade": 7}
    assert not result.unclearable, "the add replaces the record, class included"
    assert not result.is_empty


def test_reordered_roles_are_no_change() -> None:
    before = User("ep-1", "X", ("教师", "管理员"), "epaas")
    after = User("ep-1", "X", ("管理员", "教师"), "epaas")
    assert diff([after], [before]).unchanged_ids == {"ep-1"}


def test_a_cleared_gender_is_sent_as_empty_text() -> None:
    result = diff([pupil(1)], [pupil(1, gender="男")])
    assert [u.changes for u in result.updates] == [{"id": "cc-1", "gender": ""}]
    assert result.updates[0].sends and not result.unclearable


def test_fields_that_cannot_be_cleared_are_reported_not_dropped() -> None:
    result = diff([pupil(1, name="New")], [pupil(1, school_id="S1", grade=8, class_no=3)])
    assert [u.changes for u in result.updates] == [{"id": "cc-1", "name": "New"}]
    assert result.unclearable == (("cc-1", "class"), ("cc-1", "grade"), ("cc-1", "schoolId"))
    assert len(result.warnings) == 3
    assert "grade is no longer known" in "\n".join(result.warnings)
    assert "Chengjiyun keeps 8" in "\n".join(result.warnings)
    only_unclearable = diff([pupil(2)], [pupil(2, grade=8)])
    assert not only_unclearable.updates[0].sends, "stored, nothing to send"
    assert only_unclearable.unclearable == (("cc-2", "grade"),)


def test_the_diff_value_is_immutable() -> None:
    result = diff([pupil(1, "B")], [pupil(1), pupil(2)], delete_after_cycles=2)
    with pytest.raises(TypeError):
        result.missing["cc-2"] = 5  # type: ignore[index]
    changes = result.updates[0].changes
    changes["name"] = "tampered"
    assert result.updates[0].changes == {"id": "cc-1", "name": "B"}
    statuses = diff([], [], statuses={}, stored={}).class_statuses
    assert statuses is not None
    with pytest.raises(TypeError):
        statuses["k"] = ClassStatus("k", 2025, 8, 1, None)  # type: ignore[index]
    assert SourceDiff("classcharts").missing == {}


def test_an_id_another_source_claims_is_handed_over_not_deleted() -> None:
    admin = User("office-1", "教务处", ("管理员",), "config", owners=frozenset({"config"}))
    result = diff_source(
        source="config",
        desired={},
        acknowledged={"office-1": AckedUser(admin, 5)},
        complete=True,
        failed_owners=frozenset(),
        approved_ids=frozenset(),
        safety=SafetyConfig(delete_after_cycles=1, max_delete_fraction=1.0),
        desired_class_statuses=None,
        stored_class_statuses={},
        claimed_elsewhere=frozenset({"office-1"}),
    )
    assert not result.deletes and not result.held and result.missing == {}


def _statuses(*numbers: int) -> dict[str, ClassStatus]:
    return {f"ep-class-{n}": ClassStatus(f"ep-class-{n}", 2025, 8, n, "ep-t1") for n in numbers}


def test_class_statuses_vanishing_over_the_fraction_are_all_held() -> None:
    stored = _statuses(*range(1, 11))
    desired = {**_statuses(1, 2, 3, 4, 5, 6, 7), "ep-class-99": _statuses(99)["ep-class-99"]}
    result = diff([], [], statuses=desired, stored=stored, max_delete_fraction=0.2)
    assert result.class_statuses == stored, "the stored set is kept whole, nothing added"
    assert not result.class_status_changed and result.is_empty
    assert result.class_statuses_held == ("ep-class-10", "ep-class-8", "ep-class-9")
    reason = result.class_statuses_held_reason
    assert reason is not None and "3 of 10 class statuses" in reason
    assert "max_delete_fraction = 0.2" in reason and reason in result.warnings
    approved = diff(
        [],
        [],
        statuses=desired,
        stored=stored,
        max_delete_fraction=0.2,
        class_statuses_approved=True,
    )
    assert approved.class_statuses == desired and approved.class_status_changed
    assert not approved.class_statuses_held and approved.class_statuses_held_reason is None


def test_class_statuses_vanishing_over_max_deletes_are_held() -> None:
    stored = _statuses(1, 2, 3, 4)
    held = diff([], [], statuses=_statuses(1), stored=stored, max_deletes=2)
    assert held.class_statuses == stored and held.class_statuses_held == (
        "ep-class-2",
        "ep-class-3",
        "ep-class-4",
    )
    assert held.class_statuses_held_reason and "max_deletes = 2" in held.class_statuses_held_reason
    within = diff([], [], statuses=_statuses(1, 2), stored=stored, max_deletes=2)
    assert within.class_statuses == _statuses(1, 2) and within.class_status_changed
    assert not within.class_statuses_held
    everything_new = diff([], [], statuses=_statuses(1, 2), stored={}, max_deletes=0)
    assert everything_new.class_status_changed and not everything_new.class_statuses_held


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


pupils = st.builds(
    pupil,
    st.integers(0, 20),
    names,
    gender=st.sampled_from([None, "男", "女"]),
    grade=st.sampled_from([None, 7, 8]),
    class_no=st.sampled_from([None, 1, 2]),
)
teachers = st.builds(
    lambda n, name: User(f"cc-{n}", name, ("教师",), "classcharts", owners=frozenset({PARENT})),
    st.integers(0, 20),
    names,
)
users = st.lists(st.one_of(pupils, teachers), max_size=15).map(
    lambda found: list({u.id: u for u in found}.values())
)


@given(acked=users, desired=users)
def test_once_sent_and_stored_the_same_desired_state_diffs_to_nothing(
    acked: list[User], desired: list[User]
) -> None:
    """Applying a diff converges: the next cycle has nothing to send, whatever changed."""
    first = diff(desired, acked, delete_after_cycles=1)
    state = {u.id: u for u in acked}
    for user in first.adds:
        state[user.id] = user
    for update in first.updates:
        state[update.user.id] = update.user
    for user in first.deletes:
        del state[user.id]
    second = diff(desired, list(state.values()), delete_after_cycles=1)
    assert second.is_empty and not second.updates and not second.unclearable
    assert second.unchanged_ids == {u.id for u in desired}


@given(acked=users, desired=users)
def test_sent_fields_reach_the_desired_record(acked: list[User], desired: list[User]) -> None:
    """What Chengjiyun holds after the sends equals the desired record, except the fields the
    diff reports as unclearable (and a cleared gender, which is sent as "")."""
    result = diff(desired, acked, delete_after_cycles=1)
    state = {u.id: u.pushed() for u in acked}
    for user in result.adds:
        state[user.id] = user.pushed()
    for update in result.updates:
        state[update.user.id].update(update.changes)
    unclearable = set(result.unclearable)
    for user in desired:
        held = {k: v for k, v in state[user.id].items() if v != ""}
        kept = {k: v for k, v in held.items() if (user.id, k) not in unclearable}
        assert kept == user.pushed()
