"""The ClassCharts client against its fake on 127.0.0.1, failure paths included."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.clients.classcharts import (
    ClassChartsPool,
    ParentClient,
    Pupil,
    StudentClient,
    _validate,
)
from syncd.exceptions import AuthError, PayloadError, UpstreamError
from syncd.log import configure_logging
from syncd.sandbox.classcharts import FakeClassCharts

PASSWORD = "parent-secret-pw"
CODE, DOB = "ABCD1234", "01/09/2011"


@pytest.fixture
async def fake() -> AsyncIterator[FakeClassCharts]:
    server = FakeClassCharts()
    server.add_pupil(1, "Ann", "Lee")
    server.add_pupil(2, "Bob", "Lee")
    server.add_parent(10, "Mary Lee", "mary@example.org", PASSWORD, [1, 2])
    server.add_student_login(2, CODE, DOB)
    await server.start()
    yield server
    await server.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def parent(fake: FakeClassCharts, **kwargs: Any) -> ParentClient:
    return ParentClient("mary@example.org", PASSWORD, base_url=fake.base_url, **kwargs)


async def test_parent_login_and_every_shared_method(fake: FakeClassCharts) -> None:
    async with parent(fake) as client:
        await client.login()
        assert (client.user.id, client.user.name) == (10, "Mary Lee")
        pupils = await client.get_pupils()
        assert [(p.id, p.name) for p in pupils] == [(1, "Ann Lee"), (2, "Bob Lee")]
        assert client.pupil_id == 1
        client.select_pupil(2)
        assert (await client.get_student_info())["id"] == 10
        page = await client.get_activity(from_="2026-11-01", to="2026-11-30")
        assert len(page) == 10
        everything = await client.get_full_activity(from_="2026-11-01", to="2026-11-30")
        assert len(everything) == 25 and len({p["id"] for p in everything}) == 25
        assert "timeline" in await client.get_behaviour(from_="2026-11-01", to="2026-11-30")
        assert (await client.get_homeworks(display_date="due_date"))[0]["title"] == "Fractions"
        assert (await client.get_lessons(date="2026-11-23"))[0]["subject_name"] == "Mathematics"
        assert await client.get_badges()
        assert await client.get_announcements()
        assert await client.get_detentions() == []
        assert "dates" in await client.get_attendance(from_="2026-11-01", to="2026-11-30")
        assert "fields" in await client.get_pupil_fields()
        assert await client.get_classes()
        with pytest.raises(ValueError, match="not linked"):
            client.select_pupil(99)
    login = fake.requests_to("/parent/login")[0]
    assert (
        b"logintype=existing" in login.body and b"recaptcha-token=no-token-available" in login.body
    )


async def test_change_password(fake: FakeClassCharts) -> None:
    async with parent(fake) as client:
        with pytest.raises(UpstreamError, match="current password is incorrect"):
            await client.change_password("wrong", "new-password-1")
        await client.change_password(PASSWORD, "new-password-1")
    assert fake.parents["mary@example.org"].password == "new-password-1"


async def test_student_login_and_methods(fake: FakeClassCharts) -> None:
    async with StudentClient(CODE.lower(), DOB, base_url=fake.base_url) as client:
        await client.login()
        assert client.user.id == 2 and client.user.name == "Bob Lee"
        rewards = await client.get_rewards()
        assert rewards[0]["balance"] == 100
        assert (await client.purchase_reward(501))["balance"] == 90
        assert (await client.get_student_code(date_of_birth="2011-09-01"))["code"] == CODE
        with pytest.raises(UpstreamError, match="Date of birth does not match"):
            await client.get_student_code(date_of_birth="2011-09-02")
    assert b"code=ABCD1234" in fake.requests_to("/student/login")[0].body


async def test_wrong_password_is_a_clear_auth_error(fake: FakeClassCharts) -> None:
    async with ParentClient("mary@example.org", "wrong-password", base_url=fake.base_url) as client:
        with pytest.raises(AuthError, match="parent login was refused"):
            await client.get_pupils()
    fake.fail_login(CODE)
    async with StudentClient(CODE, DOB, base_url=fake.base_url) as student:
        with pytest.raises(AuthError):
            await student.login()


async def test_expired_session_logs_in_again_once(fake: FakeClassCharts) -> None:
    async with parent(fake) as client:
        await client.login()
        fake.expire_sessions()
        assert len(await client.get_pupils()) == 2
        assert fake.logins == 2


async def test_persistent_refusal_ends_in_one_relogin_then_an_error(fake: FakeClassCharts) -> None:
    async with parent(fake) as client:
        await client.login()
        fake.faults.add("tes_redirect", path="/pupils", times=None)
        with pytest.raises(AuthError, match="refused again"):
            await client.get_pupils()
        assert fake.logins == 2
    redirects = fake.requests_to("/apiv2parent/pupils")
    assert len(redirects) == 2, "the TES redirect must never be followed"


async def test_a_call_without_the_login_cookies_is_redirected_and_recovers(
    fake: FakeClassCharts,
) -> None:
    async with parent(fake) as client:
        await client.login()
        assert client._session is not None
        client._session.cookie_jar.clear()
        assert len(await client.get_pupils()) == 2
        assert fake.logins == 2


async def test_session_is_renewed_by_ping_after_three_minutes(fake: FakeClassCharts) -> None:
    clock = Clock()
    async with parent(fake, clock=clock) as client:
        await client.login()
        await client.get_badges()
        pings = len(fake.requests_to("/ping"))
        clock.now = 179
        await client.get_badges()
        assert len(fake.requests_to("/ping")) == pings
        clock.now = 181
        await client.get_badges()
        assert len(fake.requests_to("/ping")) == pings + 1
        assert fake.logins == 1


async def test_success_zero_is_an_error_naming_the_call(fake: FakeClassCharts) -> None:
    async with parent(fake) as client:
        await client.login()
        client.pupil_id = 99
        with pytest.raises(UpstreamError, match="getBadges: ClassCharts says: Access denied"):
            await client.get_badges()


async def test_transport_failures(fake: FakeClassCharts) -> None:
    async with parent(fake, timeout_s=0.3) as client:
        await client.login()
        fake.faults.add("status", path="/pupils", value=503)
        with pytest.raises(UpstreamError) as caught:
            await client.get_pupils()
        assert caught.value.transient and "HTTP 503" in str(caught.value)
        fake.faults.add("malformed", path="/pupils")
        with pytest.raises(PayloadError, match="not JSON"):
            await client.get_pupils()
        fake.faults.add("delay", path="/pupils", value=1.0)
        with pytest.raises(UpstreamError, match="timeout") as slow:
            await client.get_pupils()
        assert slow.value.transient


@pytest.mark.parametrize(
    ("call", "kwargs", "message"),
    [
        (
            "get_activity",
            {"from_": "01/11/2026", "to": "2026-11-30"},
            "from must be a date written YYYY-MM-DD",
        ),
        ("get_lessons", {"date": "2024-3-1"}, r"date must be a date written YYYY-MM-DD \(zero"),
        ("get_behaviour", {"from_": "2024-03-1"}, "from must be a date written YYYY-MM-DD"),
        ("get_homeworks", {"to": "2024-3-01"}, "to must be a date written YYYY-MM-DD"),
        ("get_attendance", {"from_": " 2024-03-01", "to": "2024-03-02"}, "from must be"),
        ("get_lessons", {"date": "2026-13-01"}, "date must be a date written YYYY-MM-DD"),
        ("get_attendance", {"from_": "2026-11-01", "to": "tomorrow"}, "to must be"),
        ("get_homeworks", {"display_date": "whenever"}, "display_date must be"),
    ],
)
async def test_dates_are_checked_before_any_request(
    fake: FakeClassCharts, call: str, kwargs: dict[str, Any], message: str
) -> None:
    async with parent(fake) as client:
        await client.login()
        before = len(fake.requests)
        with pytest.raises(ValueError, match=message):
            await getattr(client, call)(**kwargs)
        assert len(fake.requests) == before


def test_login_dob_is_checked() -> None:
    with pytest.raises(ValueError, match="DD/MM/YYYY"):
        StudentClient(CODE, "2011-09-01")
    with pytest.raises(ValueError, match=r"DD/MM/YYYY \(zero-padded\)"):
        StudentClient(CODE, "1/9/2011")


def test_get_activity_needs_both_dates() -> None:
    client = ParentClient("mary@example.org", PASSWORD)
    with pytest.raises(TypeError):
        client.get_activity(from_="2026-11-01")  # type: ignore[call-arg]


async def test_rate_limited_login_is_transient_not_wrong_credentials(
    fake: FakeClassCharts,
) -> None:
    fake.faults.add("status", path="/parent/login", value=429)
    async with parent(fake) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.login()
        assert not isinstance(caught.value, AuthError)
        assert caught.value.transient and "429" in str(caught.value)
        await client.login()  # the next attempt, no longer limited, works
    fake.faults.add("status", path="/student/login", value=503)
    async with StudentClient(CODE, DOB, base_url=fake.base_url) as student:
        with pytest.raises(UpstreamError) as down:
            await student.login()
        assert down.value.transient and not isinstance(down.value, AuthError)
    fake.faults.add("status", path="/parent/login", value=403)
    async with parent(fake) as refused:
        with pytest.raises(AuthError, match=r"parent login was refused \(HTTP 403\)") as caught:
            await refused.login()
        assert not caught.value.transient


async def test_pupils_omitted_by_pupils_but_listed_by_ping_is_an_error(
    fake: FakeClassCharts,
) -> None:
    async with parent(fake) as client:
        await client.login()
        fake.faults.add("pupils_empty", path="/pupils")
        with pytest.raises(
            PayloadError, match=r"ping lists 2 pupils but /pupils omits 2"
        ) as caught:
            await client.get_pupils()
        assert "ids 1, 2" in str(caught.value)
        assert [p.id for p in await client.get_pupils()] == [1, 2]


async def test_an_oversized_or_too_deep_answer_is_refused(fake: FakeClassCharts) -> None:
    async with parent(fake, max_response_bytes=1024 * 1024) as client:
        await client.login()
        fake.faults.add("huge", path="/pupils", value=20 * 1024 * 1024)
        with pytest.raises(PayloadError, match=r"limit of 1048576 bytes \(1 MiB"):
            await client.get_pupils()
        fake.faults.add("deep", path="/pupils", value=100_000)
        with pytest.raises(PayloadError, match="nested too deep") as deep:
            await client.get_pupils()
        assert isinstance(deep.value.__cause__, RecursionError)
        assert len(await client.get_pupils()) == 2


async def test_one_pool_many_accounts_own_cookies_shared_connections(
    fake: FakeClassCharts,
) -> None:
    fake.add_pupil(3, "Cat", "Ray")
    fake.add_parent(11, "John Ray", "john@example.org", "john-secret-pw", [3])
    async with ClassChartsPool(base_url=fake.base_url, connections=2) as pool:
        async with (
            pool.parent("mary@example.org", PASSWORD) as mary,
            pool.parent("john@example.org", "john-secret-pw") as john,
        ):
            await mary.login()
            await john.login()
            for _ in range(3):
                assert [p.id for p in await mary.get_pupils()] == [1, 2]
                assert [p.id for p in await john.get_pupils()] == [3]
            assert mary._session is not None and john._session is not None
            assert mary._session.cookie_jar is not john._session.cookie_jar
            assert mary._session.connector is john._session.connector is pool.connector
        assert not pool.connector.closed, "closing a client leaves the shared pool open"
    assert fake.logins == 2, "no account lost its session to the other's cookies"
    calls = fake.requests_to("/apiv2parent/pupils")
    sessions = {r.cookies["cc-session"] for r in calls}
    assert len(sessions) == 2
    by_session: dict[str, set[str]] = {}
    for request in fake.requests:
        if "cc-session" in request.cookies and "parent_session_credentials" in request.cookies:
            by_session.setdefault(request.cookies["cc-session"], set()).add(
                request.cookies["parent_session_credentials"]
            )
    assert all(len(credentials) == 1 for credentials in by_session.values())
    ports = {r.peer_port for r in fake.requests}
    assert len(ports) <= 2 < len(fake.requests), "connections are reused across accounts"


async def test_secrets_never_reach_errors_or_logs(fake: FakeClassCharts) -> None:
    stream = io.StringIO()
    configure_logging(json_output=True, stream=stream, level="DEBUG")
    try:
        async with parent(fake) as client:
            await client.login()
            session_id = client._session_id
            fake.expire_sessions()
            await client.get_pupils()
            fake.faults.add("tes_redirect", path="/pupils", times=None)
            with pytest.raises(AuthError) as caught:
                await client.get_pupils()
            logging.getLogger("syncd").info("session %s password %s", session_id, PASSWORD)
    finally:
        logging.getLogger().handlers.clear()
    assert session_id and session_id not in str(caught.value) and PASSWORD not in str(caught.value)
    assert PASSWORD not in stream.getvalue() and session_id not in stream.getvalue()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
pupil_like = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "name": json_values,
        "first_name": json_values,
        "extra": json_values,
    },
)


@given(item=pupil_like | json_values)
def test_malformed_pupils_give_a_payload_error_or_a_pupil(item: Any) -> None:
    try:
        pupil = _validate("getPupils", Pupil, item)
    except PayloadError as err:
        assert err.service == "classcharts" and err.call == "getPupils"
    else:
        assert isinstance(pupil.id, int) and isinstance(pupil.name, str)
