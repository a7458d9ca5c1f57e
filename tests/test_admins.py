"""Administrators from ``[[admins]]``: roles added to synced users, or users of their own."""

from __future__ import annotations

import tomllib

import pytest

from store_helpers import user_diff
from syncd.config import SafetyConfig, parse_config
from syncd.core.diff import AckedUser, diff_source
from syncd.core.mapping import AdminSpec, apply_admins, apply_admins_by_source, users_of_source
from syncd.core.model import ADMIN_SOURCE, ROLE_ADMIN, ROLES, Role, User, canonical_roles
from syncd.exceptions import ConfigError

TEACHER = User("ep-t1", "单福", ("教师",), "epaas", owners=frozenset({"epaas"}))
PARENT = User("cc-parent-1", "费曼", ("家长",), "classcharts", student_list=("cc-1",))
PUPIL = User("cc-1", "刘备", ("学生",), "classcharts", grade=10, class_no=1)
SYNCED = {u.id: u for u in (TEACHER, PARENT, PUPIL)}


def test_roles_are_in_canonical_order_without_repeats() -> None:
    assert canonical_roles(["学生", "家长", "教师", "管理员", "学生"]) == (
        "管理员",
        "教师",
        "家长",
        "学生",
    )
    assert canonical_roles(["其他", "学生"]) == ("学生", "其他"), "unknown roles sort last, kept"
    assert ROLES == ("管理员", "教师", "家长", "学生")
    assert ROLE_ADMIN == Role.ADMIN == "管理员"
    assert User("x", "X", ("学生", "管理员"), "epaas").roles == ("管理员", "学生")


def test_an_admin_that_is_a_synced_user_gains_the_admin_role() -> None:
    users, warnings = apply_admins(SYNCED, [AdminSpec("ep-t1"), AdminSpec("cc-parent-1")])
    assert users["ep-t1"].pushed() == {
        "id": "ep-t1",
        "name": "单福",
        "roleList": ["管理员", "教师"],
    }
    assert users["ep-t1"].source == "epaas" and users["ep-t1"].owners == {"epaas"}
    assert users["cc-parent-1"].roles == ("管理员", "家长")
    assert users["cc-parent-1"].served()["studentList"] == ["cc-1"]
    assert users["cc-1"] == PUPIL and not warnings
    assert SYNCED["ep-t1"].roles == ("教师",), "the input is not changed"


def test_an_admin_named_differently_keeps_the_synced_name_with_a_warning() -> None:
    users, warnings = apply_admins(SYNCED, [AdminSpec("ep-t1", "Someone Else")])
    assert users["ep-t1"].name == "单福"
    assert warnings == ["admins[0]: ep-t1 is synced as '单福'; the name 'Someone Else' is not used"]


def test_any_other_admin_is_a_user_of_its_own() -> None:
    users, _ = apply_admins(SYNCED, [AdminSpec(" office-1 ", " 教务处 ")])
    admin = users["office-1"]
    assert admin.pushed() == {"id": "office-1", "name": "教务处", "roleList": ["管理员"]}
    assert admin.source == ADMIN_SOURCE == "config" and admin.owners == {"config"}
    assert users_of_source(users, "config") == {"office-1": admin}
    assert set(users_of_source(users, "classcharts")) == {"cc-parent-1", "cc-1"}


def test_an_unmatched_admin_without_a_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        apply_admins(SYNCED, [AdminSpec("ep-t1"), AdminSpec("ep-nobody")])
    assert caught.value.key == "admins[1].id"
    assert "'ep-nobody' is not a synced user" in str(caught.value)


def test_an_id_listed_twice_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        apply_admins(SYNCED, [AdminSpec("ep-t1"), AdminSpec("ep-t1", "Again")])
    assert caught.value.key == "admins[1].id" and "already listed as admins[0]" in str(caught.value)


def test_an_admin_of_a_source_not_polled_this_cycle_is_left_to_that_source() -> None:
    """A failed epaas poll must not turn its teacher into a config user, nor stop the cycle."""
    only_classcharts = {u.id: u for u in (PARENT, PUPIL)}
    admins = [AdminSpec("ep-t1"), AdminSpec("ep-t2", "Named")]
    users, warnings = apply_admins(only_classcharts, admins, known_ids={"ep-t1", "ep-t2"})
    assert users == only_classcharts and not warnings


def test_granting_admin_to_a_synced_user_reaches_chengjiyun_as_an_add() -> None:
    users, _ = apply_admins(SYNCED, [AdminSpec("ep-t1")])
    result = user_diff(
        users_of_source(users, "epaas"), source="epaas", acknowledged={"ep-t1": AckedUser(TEACHER)}
    )
    assert [u.pushed()["roleList"] for u in result.adds] == [["管理员", "教师"]]
    assert not result.updates and not result.warnings


def test_standalone_admins_are_diffed_as_the_config_source() -> None:
    users, _ = apply_admins(SYNCED, [AdminSpec("office-1", "教务处")])
    desired = users_of_source(users, ADMIN_SOURCE)
    added = user_diff(desired, source=ADMIN_SOURCE)
    assert [u.id for u in added.adds] == ["office-1"]
    removed = diff_source(
        source=ADMIN_SOURCE,
        desired={},
        acknowledged={"office-1": AckedUser(desired["office-1"], 1)},
        complete=True,
        failed_owners=frozenset(),
        approved_ids=frozenset(),
        safety=SafetyConfig(delete_after_cycles=2, max_delete_fraction=1.0),
        desired_class_statuses=None,
        stored_class_statuses={},
    )
    assert [u.id for u in removed.deletes] == ["office-1"], "dropped from the config: deleted"


def test_the_config_reads_admins() -> None:
    data = tomllib.loads(
        """
        [chengjiyun]
        platform = "p"
        key = "k"
        org_id = "o"

        [[admins]]
        id = "ep-t1"

        [[admins]]
        id = "office-1"
        name = "教务处"
        """
    )
    config = parse_config(data)
    assert [(a.id, a.name) for a in config.admins] == [("ep-t1", None), ("office-1", "教务处")]
    users, _ = apply_admins(SYNCED, config.admins)
    assert users["office-1"].roles == ("管理员",)
    assert parse_config({k: v for k, v in data.items() if k != "admins"}).admins == []
    with pytest.raises(ConfigError) as caught:
        parse_config({**data, "admins": [{"id": ""}]})
    assert caught.value.key.startswith("admins[0]")
    with pytest.raises(ConfigError):
        parse_config({**data, "admins": [{"id": "x", "role": "教师"}]})


def test_admins_by_source_give_each_source_its_users_and_config_its_admins() -> None:
    polled = {"epaas": {"ep-t1": TEACHER}, "classcharts": {"cc-1": PUPIL}}
    admins = [AdminSpec("ep-t1"), AdminSpec("office-1", "教务处"), AdminSpec("cc-9")]
    by_source, _ = apply_admins_by_source(polled, admins, known_ids={"cc-9"})
    assert set(by_source) == {"epaas", "classcharts", "config"}
    assert by_source["epaas"]["ep-t1"].roles == ("管理员", "教师")
    assert by_source["classcharts"] == {"cc-1": PUPIL}
    assert set(by_source["config"]) == {"office-1"}
    nothing, _ = apply_admins_by_source(polled, [])
    assert nothing["config"] == {} and nothing["epaas"] == {"ep-t1": TEACHER}
