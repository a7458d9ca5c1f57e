"""The epaas client against its fake on 127.0.0.1: token flow, the seven calls, failures."""

from __future__ import annotations

import resource
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.clients.epaas import (
    ClassInfo,
    EpaasClient,
    TeacherAssignment,
    TeacherClass,
    _parse_list,
    fetch_school,
)
from syncd.exceptions import PayloadError, UpstreamError
from syncd.sandbox.epaas import FakeEpaas

SECRETS = {
    "suite_secret": "sandbox-suite-secret",
    "suite_ticket": "sandbox-ticket",
    "permanent_code": "sandbox-permanent",
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeEpaas]:
    server = FakeEpaas()
    server.add_class(1, "一班", "2025级", "初中")
    server.add_class(2, "高一(3)班", "2026级", "高中")
    server.add_class(3, "美术", "2025级", "初中", department_type=8)
    server.add_teacher("t1", "张三")
    server.add_teacher("t2", "李四")
    server.assign(1, "t1", 3, ["语文"])
    server.assign(1, "t2", 4, ["数学"])
    server.assign(2, "t2", 3, ["数学", "物理"])
    server.assign(3, "t1", 4, ["美术"])
    server.add_student("s1", [1, 3])
    await server.start()
    yield server
    await server.stop()


def client_for(fake: FakeEpaas, **kwargs: Any) -> EpaasClient:
    return EpaasClient(
        base_url=fake.base_url,
        suite_id="sandbox-suite",
        auth_corpid="sandbox-corp",
        **SECRETS,
        **kwargs,
    )


async def test_the_seven_calls(fake: FakeEpaas) -> None:
    async with client_for(fake) as client:
        assert [(c.id, c.type) for c in await client.get_user_classes("s1", "t1")] == [
            (1, 3),
            (3, 4),
        ]
        assert [c.id for c in await client.list_classes(1)] == [1, 2]
        assert [c.id for c in await client.list_classes(0)] == [1, 2, 3]
        teacher_classes = await client.list_teacher_classes("t2", department_type=1)
        assert [(c.id, c.grade_name, c.org_attribute_name, c.subject) for c in teacher_classes] == [
            (1, "2025级", "初中", ["数学"]),
            (2, "2026级", "高中", ["数学", "物理"]),
        ]
        assert teacher_classes[0].full_path == "/沙盒学校/学生/2025级/一班"
        bare = await client.list_teacher_classes("t2", full_path=False, department_info=False)
        assert bare[0].grade_name is None and bare[0].full_path is None
        assert [(t.userid, t.type) for t in await client.list_class_teachers(1)] == [
            ("t1", 3),
            ("t2", 4),
        ]
        assert [c.id for c in await client.list_student_classes("s1", department_type=8)] == [3]
        added = await client.batch_add_class_teachers(
            2, [TeacherAssignment("t1", 4, ("语文",)), TeacherAssignment("zz", 4)]
        )
        assert [(r.userid, r.ok) for r in added] == [("t1", True), ("zz", False)]
        removed = await client.batch_delete_class_teachers(
            2, [TeacherAssignment("t1", 4), TeacherAssignment("t1", 4)]
        )
        assert [(r.ok, r.errmsg) for r in removed] == [(True, "OK"), (False, "班级不存在该教师")]
    assert fake.token_requests == 1, "the corp token is cached"


async def test_paging_through_total(fake: FakeEpaas) -> None:
    for n in range(100, 350):
        fake.add_class(n, f"{n}班", "2025级", "初中")
    async with client_for(fake, page_size=100) as client:
        classes = await client.list_classes(1)
    assert len(classes) == 252
    pages = [r.query["page_index"] for r in fake.requests_to("/class/list")]
    assert pages == ["1", "2", "3"]


async def test_token_expiry_mid_run_refreshes_once(fake: FakeEpaas) -> None:
    async with client_for(fake) as client:
        await client.list_classes(1)
        fake.expire_tokens()
        assert len(await client.list_class_teachers(1)) == 2
    assert fake.token_requests == 2


async def test_cached_token_expires_by_the_clock(fake: FakeEpaas) -> None:
    now = [0.0]
    async with client_for(fake, clock=lambda: now[0]) as client:
        await client.list_classes(1)
        now[0] = 7200 - 301  # the token is refreshed 300 s before it expires
        await client.list_classes(1)
        assert fake.token_requests == 1
        now[0] = 7200 - 299
        await client.list_classes(1)
        assert fake.token_requests == 2


async def test_persistent_token_rejection_is_a_clear_error(fake: FakeEpaas) -> None:
    async with client_for(fake) as client:
        fake.faults.add("errcode", path="/class/list", times=None, value=42001)
        with pytest.raises(UpstreamError, match=r"class/list: errcode 42001"):
            await client.list_classes(1)
    assert fake.token_requests == 2


async def test_bad_credentials(fake: FakeEpaas) -> None:
    async with EpaasClient(
        base_url=fake.base_url,
        suite_id="sandbox-suite",
        auth_corpid="sandbox-corp",
        suite_secret="wrong-secret",
        suite_ticket="sandbox-ticket",
        permanent_code="sandbox-permanent",
    ) as client:
        with pytest.raises(UpstreamError, match="get_suite_token: errcode 40001") as caught:
            await client.list_classes(1)
    assert "wrong-secret" not in str(caught.value)


async def test_errcode_transport_and_malformed_failures(fake: FakeEpaas) -> None:
    async with client_for(fake, timeout_s=0.3) as client:
        fake.faults.add("errcode", path="/class/teacher/list", value=60011)
        with pytest.raises(UpstreamError, match="errcode 60011: injected error"):
            await client.list_class_teachers(1)
        fake.faults.add("status", path="/class/list", value=503)
        with pytest.raises(UpstreamError) as unavailable:
            await client.list_classes(1)
        assert unavailable.value.transient
        fake.faults.add("status", path="/class/list", value=429)
        with pytest.raises(UpstreamError) as limited:
            await client.list_classes(1)
        assert limited.value.transient and "HTTP 429" in str(limited.value)
        fake.faults.add("malformed", path="/class/list")
        with pytest.raises(PayloadError, match="not JSON"):
            await client.list_classes(1)
        fake.faults.add("delay", path="/class/list", value=1.0)
        with pytest.raises(UpstreamError, match="timeout"):
            await client.list_classes(1)


async def test_no_token_or_secret_in_errors(fake: FakeEpaas) -> None:
    async with client_for(fake) as client:
        await client.list_classes(1)
        token = client._token
        fake.faults.add("status", path="/class/list", value=500)
        with pytest.raises(UpstreamError) as caught:
            await client.list_classes(1)
    assert token and token not in str(caught.value)
    assert all(secret not in str(caught.value) for secret in SECRETS.values())


async def test_fetch_school_joins_grade_information(fake: FakeEpaas) -> None:
    async with client_for(fake) as client:
        school = await fetch_school(client)
    assert school.complete and not school.warnings
    assert [
        (
            c.id,
            c.department_type,
            c.grade_name,
            c.org_attribute_name,
            [t.userid for t in c.teachers],
        )
        for c in school.classes
    ] == [
        (1, 1, "2025级", "初中", ["t1", "t2"]),
        (2, 1, "2026级", "高中", ["t2"]),
        (3, 8, "2025级", "初中", ["t1"]),
    ]
    asked = [r.query["teacher_userid"] for r in fake.requests_to("/teacher/class/list")]
    assert len(asked) == len(set(asked))


async def test_a_course_class_only_teacher_is_seen(fake: FakeEpaas) -> None:
    fake.add_teacher("t3", "王五")
    fake.add_class(4, "信息技术", "2025级", "初中", department_type=8)
    fake.assign(4, "t3", 4, ["信息"])
    async with client_for(fake) as client:
        school = await fetch_school(client)
    course = {c.id: c for c in school.classes}[4]
    assert course.department_type == 8 and [t.userid for t in course.teachers] == ["t3"]
    assert course.grade_name == "2025级"
    types = sorted({r.query["department_type"] for r in fake.requests if r.path == "/class/list"})
    assert types == ["1", "10", "8"]


async def test_repeated_ids_across_pages_make_the_school_incomplete(fake: FakeEpaas) -> None:
    for n in range(100, 137):
        fake.add_class(n, f"{n}班", "2025级", "初中")
    fake.faults.add("repeat_last_page", path="/class/list")
    async with client_for(fake, page_size=10) as client:
        school = await fetch_school(client)
    assert not school.complete
    assert (
        "epaas class/list: repeated 10 class ids across pages (total 39, distinct 30)"
        in school.warnings
    )
    ids = [c.id for c in school.classes]
    assert len(ids) == len(set(ids)), "a repeated class is kept once"


async def test_a_streamed_200_mb_answer_is_refused_while_reading(fake: FakeEpaas) -> None:
    cap = 8 * 1024 * 1024
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with client_for(fake, max_response_bytes=cap) as client:
        await client.list_classes(1)
        fake.faults.add("huge", path="/class/list", value=200 * 1000 * 1000)
        with pytest.raises(PayloadError, match=r"larger than the limit of 8388608 bytes \(8 MiB"):
            await client.list_classes(1)
        grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kib) / 1024
        assert grown_mib < 64, f"peak memory grew by {grown_mib:.0f} MiB"
        fake.faults.add("huge_declared", path="/class/list", value=200 * 1000 * 1000)
        with pytest.raises(PayloadError, match="8388608 bytes"):
            await client.list_classes(1)
        assert [c.id for c in await client.list_classes(1)] == [1, 2], "the client still works"


async def test_the_default_cap_is_64_mib(fake: FakeEpaas) -> None:
    async with client_for(fake) as client:
        fake.faults.add("huge_declared", path="/class/list", value=64 * 1024 * 1024 + 1)
        with pytest.raises(PayloadError, match=r"67108864 bytes \(64 MiB"):
            await client.list_classes(1)


async def test_deep_and_wrongly_typed_answers(fake: FakeEpaas) -> None:
    async with client_for(fake) as client:
        fake.faults.add("deep", path="/class/list", value=100_000)
        with pytest.raises(PayloadError, match="answer is nested too deep"):
            await client.list_classes(1)
        fake.faults.add("deep", path="/class/teacher/list", value=3)
        with pytest.raises(PayloadError, match="answer has no errcode"):
            await client.list_class_teachers(1)


async def test_errmsg_fault_echoes_its_string(fake: FakeEpaas) -> None:
    async with client_for(fake) as client:
        fake.faults.add("errmsg", path="/class/list", value="token sandbox-permanent leaked")
        with pytest.raises(UpstreamError, match="errcode 60011: token sandbox-permanent leaked"):
            await client.list_classes(1)


def test_grade_name_as_a_list_is_accepted() -> None:
    record = TeacherClass.model_validate(
        {
            "id": 1,
            "class_name": "一班",
            "userid": "t",
            "name": "n",
            "type": 3,
            "grade_name": ["2017级"],
            "standard_grade": "64",
        }
    )
    assert record.grade_name == "2017级"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
department = st.fixed_dictionaries(
    {}, optional={"id": json_values, "class_name": json_values, "parentid": json_values}
)


@given(items=st.lists(department | json_values, max_size=5) | json_values)
def test_malformed_departments_are_skipped_with_a_warning(items: Any) -> None:
    warnings: list[str] = []
    try:
        parsed = _parse_list("class/list", items, ClassInfo, warnings)
    except PayloadError as err:
        assert not isinstance(items, list) and "expected a list" in str(err)
        return
    assert len(parsed) + len(warnings) == len(items)
    assert all(isinstance(c.id, int) and isinstance(c.class_name, str) for c in parsed)
    assert all("skipped" in w for w in warnings)


async def test_many_classes_do_not_time_out_waiting_for_a_pooled_connection(
    fake: FakeEpaas,
) -> None:
    """40 classes, each teacher list 0.2 s away, through 4 connections with a 1 s timeout: in a
    queue for the pool they would wait 2 s; each request's timeout starts when it is sent."""
    for class_id in range(10, 50):
        fake.add_class(class_id, f"{class_id}班", "2025级", "初中")
        fake.assign(class_id, "t1", 3, ["语文"])
    fake.faults.add("delay", path="/class/teacher/list", times=None, value=0.2)
    async with client_for(fake, timeout_s=1.0) as client:
        school = await fetch_school(client)
    assert school.complete and len(school.classes) == 43
