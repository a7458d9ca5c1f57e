"""ClassCharts client: the unofficial classcharts-api library's protocol, in Python.

Login is a form POST answered by a 302 that sets the session cookies; every API call then sends
those cookies back plus ``Authorization: Basic <session_id>``. Redirects are never followed on
API calls: since April 2026 a call ClassCharts does not accept is bounced into an endless TES
single-sign-on loop, so a redirect means "session refused" — log in again once, then give up
with a clear AuthError. The session is renewed by ping when it is older than 3 minutes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from collections.abc import Callable
from typing import Any, ClassVar, Literal, Self
from urllib.parse import unquote

import aiohttp
from pydantic import BaseModel, ConfigDict, ValidationError

from syncd.clients.transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    SessionClient,
    UpstreamRecord,
    describe_validation_error,
    make_session,
    request_json,
)
from syncd.exceptions import AuthError, PayloadError, UpstreamError
from syncd.log import get_logger, register_secret

__all__ = [
    "SESSION_RENEW_S",
    "ClassChartsClient",
    "ClassChartsPool",
    "ParentClient",
    "ParentUser",
    "Pupil",
    "StudentClient",
    "StudentUser",
]

SERVICE = "classcharts"
SESSION_RENEW_S = 180.0  # the library re-pings after 3 minutes
_NO_TOKEN = "no-token-available"  # noqa: S105 - what the real web client sends

log = get_logger(__name__)


class _Record(UpstreamRecord):
    """A ClassCharts record. Each pupil comes with some 30 display flags and counters that syncd
    never reads, once per account that sees it: they are dropped at validation, which halves
    its CPU and cuts a pupil's memory from about 3.4 to 1 KB in a large cycle."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Pupil(_Record):
    id: int
    name: str
    first_name: str | None = None
    last_name: str | None = None
    school_name: str | None = None


class ParentUser(_Record):
    id: int
    name: str
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    pupils: list[Pupil] = []


class StudentUser(_Record):
    id: int
    name: str
    first_name: str | None = None
    last_name: str | None = None
    school_name: str | None = None


_DATE_SHAPES = {
    "%Y-%m-%d": (re.compile(r"\d{4}-\d{2}-\d{2}"), "YYYY-MM-DD"),
    "%d/%m/%Y": (re.compile(r"\d{2}/\d{2}/\d{4}"), "DD/MM/YYYY"),
}


def _check_date(option: str, value: str | None, fmt: str = "%Y-%m-%d") -> None:
    """Refuse anything but the exact zero-padded form: ClassCharts misreads ``2024-3-1``."""
    if value is None:
        return
    shape, shown = _DATE_SHAPES[fmt]
    problem = f"{option} must be a date written {shown} (zero-padded), got {value!r}"
    if not isinstance(value, str) or not shape.fullmatch(value):
        raise ValueError(problem)
    try:
        dt.datetime.strptime(value, fmt)
    except ValueError as err:
        raise ValueError(problem) from err


def _validate(call: str, model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise PayloadError(SERVICE, call, describe_validation_error(err)) from err


class ClassChartsClient(SessionClient):
    """What parent and student clients share: session handling and the per-pupil calls."""

    kind: ClassVar[Literal["parent", "student"]]
    user_model: ClassVar[type[BaseModel]]

    def __init__(
        self,
        *,
        base_url: str,
        timeout_s: float,
        clock: Callable[[], float],
        connector: aiohttp.BaseConnector | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._clock = clock
        self._connector = connector
        self._max_response_bytes = max_response_bytes
        self._session_id: str | None = None
        self._session_at = 0.0
        self._lock = asyncio.Lock()
        self.user: Any = None
        self.pupil_id: int | None = None

    @property
    def _api(self) -> str:
        return f"{self._base_url}/apiv2{self.kind}"

    def _login_form(self) -> dict[str, str]:
        return {}

    async def login(self) -> None:
        """Log in, then ping for the user record and a fresh session id (one retry if refused)."""
        async with self._lock:
            for attempt in (1, 2):
                try:
                    await self._login()
                    return
                except _SessionRefused as err:
                    if attempt == 2:
                        raise AuthError(
                            SERVICE, "login", "logged in, but ClassCharts refused the new session"
                        ) from err

    async def _login(self) -> None:
        if self._session is not None:
            await self._session.close()
        # Cookies are per account (a fresh jar per login, even over a shared connector);
        # unsafe=True keeps those set by an IP-address host (tests).
        self._session = make_session(
            timeout_s=self._timeout_s,
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=self._connector,
        )
        status, _, response = await self._post_login()
        cookie = response.cookies.get(f"{self.kind}_session_credentials")
        if status != 302 or cookie is None:
            raise AuthError(SERVICE, "login", f"{self.kind} login was refused (wrong credentials?)")
        try:
            session_id = json.loads(unquote(cookie.value))["session_id"]
        except (ValueError, KeyError, TypeError) as err:
            raise PayloadError(
                SERVICE, "login", "session cookie does not hold a session_id"
            ) from err
        if not isinstance(session_id, str) or not session_id:
            raise PayloadError(SERVICE, "login", "session cookie holds an empty session_id")
        register_secret(session_id)
        self._session_id = session_id
        self._session_at = self._clock()
        await self._ping()

    async def _post_login(self) -> tuple[int, Any, aiohttp.ClientResponse]:
        """The login form through the shared policy: a 429 or 5xx is "try later", not "wrong".

        Any other HTTP error is a refusal of the login itself, so it is an AuthError.
        """
        assert self._session is not None
        try:
            return await request_json(
                self._session,
                SERVICE,
                "login",
                "POST",
                f"{self._base_url}/{self.kind}/login",
                max_response_bytes=self._max_response_bytes,
                data=self._login_form(),
                expect_json=False,
            )
        except PayloadError:
            raise
        except UpstreamError as err:
            if err.transient:
                raise
            raise AuthError(
                SERVICE, "login", f"{self.kind} login was refused ({err.reason})"
            ) from err

    async def _ping(self) -> None:
        data, meta = await self._request_once("ping", "POST", "ping", data={"include_data": "true"})
        if not isinstance(data, dict) or "user" not in data:
            raise PayloadError(SERVICE, "ping", "answer has no data.user")
        self.user = _validate("ping", self.user_model, data["user"])
        fresh = meta.get("session_id") if isinstance(meta, dict) else None
        if isinstance(fresh, str) and fresh:
            register_secret(fresh)
            self._session_id = fresh
        self._session_at = self._clock()
        if self.pupil_id is None:
            self.pupil_id = self._default_pupil_id()

    def _default_pupil_id(self) -> int | None:
        return None

    async def _request_once(
        self, call: str, method: str, path: str, **kwargs: Any
    ) -> tuple[Any, Any]:
        """One API call with the current session; raises _SessionRefused on redirect/expiry."""
        if self._session is None or self._session_id is None:
            raise _SessionRefused
        status, body, _ = await request_json(
            self._session,
            SERVICE,
            call,
            method,
            f"{self._api}/{path}",
            max_response_bytes=self._max_response_bytes,
            headers={"Authorization": f"Basic {self._session_id}"},
            **kwargs,
        )
        if body is None:  # a redirect: the TES single-sign-on loop, i.e. session not accepted
            raise _SessionRefused
        if not isinstance(body, dict) or "success" not in body:
            raise PayloadError(
                SERVICE, call, "answer is not a ClassCharts envelope {success, data, meta}"
            )
        if body.get("success") != 1:
            if body.get("expired") in (1, "1", True):
                raise _SessionRefused
            raise UpstreamError(
                SERVICE, call, f"ClassCharts says: {body.get('error') or 'request failed'}"
            )
        return body.get("data"), body.get("meta", {})

    async def _call(self, call: str, method: str, path: str, **kwargs: Any) -> tuple[Any, Any]:
        """An API call that renews an old session by ping, and logs in again once if refused."""
        for attempt in (1, 2):
            try:
                async with self._lock:
                    if attempt == 2 or self._session_id is None:
                        await self._login()
                    elif self._clock() - self._session_at >= SESSION_RENEW_S:
                        await self._ping()
                return await self._request_once(call, method, path, **kwargs)
            except _SessionRefused as err:
                if attempt == 2:
                    raise AuthError(
                        SERVICE,
                        call,
                        "session refused again right after a fresh login "
                        "(ClassCharts redirected the call or said the session expired)",
                    ) from err
                log.info(
                    "classcharts session not accepted; logging in again", kind=self.kind, call=call
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def _pupil(self) -> int:
        if self.pupil_id is None:
            raise ValueError(
                "no pupil selected: log in first (a parent account with no pupils has none)"
            )
        return self.pupil_id

    async def _data(self, call: str, path: str, params: dict[str, str | None] | None = None) -> Any:
        data, _ = await self._call(
            call, "GET", path, params={k: v for k, v in (params or {}).items() if v is not None}
        )
        return data

    # --- shared methods (parent and student) ---------------------------------------------------------

    async def get_student_info(self) -> Any:
        data, _ = await self._call("getStudentInfo", "POST", "ping", data={"include_data": "true"})
        if not isinstance(data, dict) or "user" not in data:
            raise PayloadError(SERVICE, "getStudentInfo", "answer has no data.user")
        return data["user"]

    async def get_activity(self, *, from_: str, to: str, last_id: int | None = None) -> list[Any]:
        """One page of the activity feed; both dates are required, as the API's table lists."""
        _check_date("from", from_)
        _check_date("to", to)
        params = {"from": from_, "to": to, "last_id": str(last_id) if last_id is not None else None}
        data = await self._data("getActivity", f"activity/{self._pupil()}", params)
        if not isinstance(data, list):
            raise PayloadError(SERVICE, "getActivity", "data is not a list")
        return data

    async def get_full_activity(self, *, from_: str, to: str, max_pages: int = 1000) -> list[Any]:
        """Every activity point between the dates: pages by ``last_id`` until a page is empty."""
        points: list[Any] = []
        last_id: int | None = None
        for _ in range(max_pages):
            page = await self.get_activity(from_=from_, to=to, last_id=last_id)
            if not page:
                return points
            points.extend(page)
            tail = page[-1]
            if not isinstance(tail, dict) or not isinstance(tail.get("id"), int):
                raise PayloadError(
                    SERVICE, "getFullActivity", "an activity point has no integer id to page from"
                )
            if tail["id"] == last_id:
                raise PayloadError(SERVICE, "getFullActivity", "the same page came back twice")
            last_id = tail["id"]
        raise PayloadError(SERVICE, "getFullActivity", f"more than {max_pages} pages; giving up")

    async def get_behaviour(self, *, from_: str | None = None, to: str | None = None) -> Any:
        _check_date("from", from_)
        _check_date("to", to)
        return await self._data(
            "getBehaviour", f"behaviour/{self._pupil()}", {"from": from_, "to": to}
        )

    async def get_homeworks(
        self,
        *,
        from_: str | None = None,
        to: str | None = None,
        display_date: Literal["due_date", "issue_date"] | None = None,
    ) -> Any:
        _check_date("from", from_)
        _check_date("to", to)
        if display_date not in (None, "due_date", "issue_date"):
            raise ValueError(
                f"display_date must be 'due_date' or 'issue_date', got {display_date!r}"
            )
        params = {"from": from_, "to": to, "display_date": display_date}
        return await self._data("getHomeworks", f"homeworks/{self._pupil()}", params)

    async def get_lessons(self, *, date: str) -> Any:
        _check_date("date", date)
        return await self._data("getLessons", f"timetable/{self._pupil()}", {"date": date})

    async def get_badges(self) -> Any:
        return await self._data("getBadges", f"eventbadges/{self._pupil()}")

    async def get_announcements(self) -> Any:
        return await self._data("getAnnouncements", f"announcements/{self._pupil()}")

    async def get_detentions(self) -> Any:
        return await self._data("getDetentions", f"detentions/{self._pupil()}")

    async def get_attendance(self, *, from_: str, to: str) -> Any:
        _check_date("from", from_)
        _check_date("to", to)
        return await self._data(
            "getAttendance", f"attendance/{self._pupil()}", {"from": from_, "to": to}
        )

    async def get_pupil_fields(self) -> Any:
        return await self._data("getPupilFields", f"customfields/{self._pupil()}")

    async def get_classes(self) -> Any:
        return await self._data("getClasses", f"classes/{self._pupil()}")


class _SessionRefused(Exception):
    """Internal: ClassCharts redirected the call or said the session expired."""


class ParentClient(ClassChartsClient):
    kind = "parent"
    user_model = ParentUser

    def __init__(
        self,
        email: str,
        password: str,
        *,
        base_url: str = "https://www.classcharts.com",
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        connector: aiohttp.BaseConnector | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        super().__init__(
            base_url=base_url,
            timeout_s=timeout_s,
            clock=clock,
            connector=connector,
            max_response_bytes=max_response_bytes,
        )
        register_secret(password)
        self._email = email
        self._password = password

    def _login_form(self) -> dict[str, str]:
        return {
            "_method": "POST",
            "email": self._email,
            "logintype": "existing",
            "password": self._password,
            "recaptcha-token": _NO_TOKEN,
        }

    def _default_pupil_id(self) -> int | None:
        pupils = getattr(self.user, "pupils", [])
        return pupils[0].id if pupils else None

    async def get_pupils(self) -> list[Pupil]:
        """The linked pupils, refused if they contradict the pupils the ping listed.

        A ``/pupils`` that omits a pupil the account's own ping lists is an inconsistent
        answer, not a departure: the caller must treat the account as failed (so none of its
        pupils is deleted) rather than trust the shorter list.
        """
        data, _ = await self._call("getPupils", "GET", "pupils")
        if not isinstance(data, list):
            raise PayloadError(SERVICE, "getPupils", "data is not a list")
        pupils = [_validate("getPupils", Pupil, item) for item in data]
        listed = {pupil.id for pupil in getattr(self.user, "pupils", [])}
        omitted = sorted(listed - {pupil.id for pupil in pupils})
        if omitted:
            raise PayloadError(
                SERVICE,
                "getPupils",
                f"inconsistent answer: ping lists {len(listed)} pupils but /pupils omits "
                f"{len(omitted)} of them (ids {', '.join(map(str, omitted))})",
            )
        return pupils

    def select_pupil(self, pupil_id: int) -> None:
        known = {pupil.id for pupil in getattr(self.user, "pupils", [])}
        if self.user is not None and known and pupil_id not in known:
            raise ValueError(f"pupil {pupil_id} is not linked to this parent account")
        self.pupil_id = pupil_id

    async def change_password(self, current: str, new: str) -> None:
        register_secret(new)
        await self._call(
            "changePassword",
            "POST",
            "password",
            data={"current": current, "new": new, "repeat": new},
        )
        self._password = new


class StudentClient(ClassChartsClient):
    kind = "student"
    user_model = StudentUser

    def __init__(
        self,
        code: str,
        dob: str,
        *,
        base_url: str = "https://www.classcharts.com",
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        connector: aiohttp.BaseConnector | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        super().__init__(
            base_url=base_url,
            timeout_s=timeout_s,
            clock=clock,
            connector=connector,
            max_response_bytes=max_response_bytes,
        )
        _check_date("date of birth", dob, "%d/%m/%Y")
        register_secret(code)
        register_secret(dob)
        self._code = code.upper()
        self._dob = dob

    def _login_form(self) -> dict[str, str]:
        return {
            "_method": "POST",
            "code": self._code,
            "dob": self._dob,
            "remember_me": "1",
            "recaptcha-token": _NO_TOKEN,
        }

    def _default_pupil_id(self) -> int | None:
        return self.user.id if self.user is not None else None

    async def get_rewards(self) -> Any:
        return await self._data("getRewards", f"rewards/{self._pupil()}")

    async def purchase_reward(self, item_id: int) -> Any:
        data, _ = await self._call(
            "purchaseReward", "POST", f"purchase/{item_id}", data={"pupil_id": str(self._pupil())}
        )
        return data

    async def get_student_code(self, *, date_of_birth: str) -> Any:
        _check_date("dateOfBirth", date_of_birth)
        data, _ = await self._call(
            "getStudentCode", "POST", "getcode", data={"date": date_of_birth}
        )
        return data


class ClassChartsPool:
    """One connection pool for many ClassCharts accounts, each with its own cookie jar.

    Polling dozens of parent accounts one TCP (and TLS) connection each is slow and looks like a
    flood to ClassCharts; the clients made here share one connector. Cookies are not shared:
    every client logs in with its own jar, so one account's session never rides along with
    another's requests.
    """

    def __init__(
        self,
        *,
        base_url: str = "https://www.classcharts.com",
        timeout_s: float = 30.0,
        connections: int = 8,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base_url = base_url
        self._timeout_s = timeout_s
        self._connections = connections
        self._max_response_bytes = max_response_bytes
        self._clock = clock
        self._connector: aiohttp.TCPConnector | None = None

    @property
    def connector(self) -> aiohttp.TCPConnector:
        if self._connector is None:
            raise RuntimeError("use the pool inside 'async with ClassChartsPool(...)'")
        return self._connector

    async def __aenter__(self) -> Self:
        self._connector = aiohttp.TCPConnector(
            limit=self._connections, limit_per_host=self._connections
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connector is not None:
            await self._connector.close()
            self._connector = None

    def parent(self, email: str, password: str) -> ParentClient:
        return ParentClient(
            email,
            password,
            base_url=self._base_url,
            timeout_s=self._timeout_s,
            clock=self._clock,
            connector=self.connector,
            max_response_bytes=self._max_response_bytes,
        )

    def student(self, code: str, dob: str) -> StudentClient:
        return StudentClient(
            code,
            dob,
            base_url=self._base_url,
            timeout_s=self._timeout_s,
            clock=self._clock,
            connector=self.connector,
            max_response_bytes=self._max_response_bytes,
        )
