"""A fake ClassCharts speaking the public classcharts-api client's protocol.

Login answers a 302 with ``{kind}_session_credentials`` (URL-encoded JSON holding the session id)
and a ``cc-session`` cookie. An API call must carry both the ``Authorization: Basic`` session id
and the login cookies: without the cookies it is redirected into the TES single-sign-on loop, as
the real parent API does since April 2026; with an unknown or expired session it answers
``success: 0, expired: 1``. Ping rotates the session id.

Faults (``fake.faults.add(kind, path=..., value=...)``), besides those every fake has
(delay, status, rate_limited, malformed, huge, huge_declared, deep; see ``Fault``):

* ``"tes_redirect"``: the API call is redirected into the TES single-sign-on loop, as if the
  login cookies were missing;
* ``"pupils_empty"`` (on ``/pupils``): ``/pupils`` answers ``[]`` while the account's ping
  still lists its pupils, an inconsistent "successful" answer;
* a rate-limited login is the shared ``"status"`` fault: ``path="/parent/login", value=429``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web

from syncd.sandbox.base import FakeServer

__all__ = ["FakeClassCharts", "FakeParent", "FakePupil"]

_ApiHandler = Callable[[web.Request, str, "_Session"], Awaitable[web.Response]]

TES_VERIFY = "https://session.tes.com/v1/verify"
ACTIVITY_PAGE = 10


@dataclass
class FakePupil:
    id: int
    first_name: str
    last_name: str
    school_name: str = "Sandbox Academy"

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "avatar_url": f"https://example.invalid/avatar/{self.id}.png",
            "display_behaviour": True,
            "display_parent_behaviour": True,
            "display_homework": True,
            "display_rewards": True,
            "display_detentions": True,
            "display_report_cards": False,
            "display_classes": True,
            "display_announcements": True,
            "display_attendance": True,
            "school_name": self.school_name,
            "school_logo": "",
            "timezone": "Europe/London",
            "is_disabled": False,
            "display_covid_tests": False,
            "can_record_covid_tests": False,
            **dict.fromkeys(
                (
                    "detention_yes_count",
                    "detention_no_count",
                    "detention_pending_count",
                    "detention_upscaled_count",
                    "homework_todo_count",
                    "homework_late_count",
                    "homework_not_completed_count",
                    "homework_excused_count",
                    "homework_completed_count",
                    "homework_submitted_count",
                    "announcements_count",
                    "messages_count",
                ),
                0,
            ),
        }


@dataclass
class FakeParent:
    id: int
    name: str
    email: str
    password: str
    pupil_ids: list[int] = field(default_factory=list)


@dataclass
class _Session:
    kind: str
    account: str  # parent email or student code
    cookie: str


class FakeClassCharts(FakeServer):
    def __init__(self) -> None:
        self.pupils: dict[int, FakePupil] = {}
        self.parents: dict[str, FakeParent] = {}
        self.student_logins: dict[str, tuple[str, int]] = {}  # code -> (dob DD/MM/YYYY, pupil id)
        self.failing_logins: set[str] = set()
        self.reward_balance: dict[int, int] = {}
        self._sessions: dict[str, _Session] = {}
        self.logins = 0
        super().__init__()

    # --- data API ----------------------------------------------------------------------------

    def add_pupil(self, id: int, first_name: str, last_name: str) -> FakePupil:
        pupil = FakePupil(id, first_name, last_name)
        self.pupils[id] = pupil
        self.reward_balance[id] = 100
        return pupil

    def add_parent(
        self, id: int, name: str, email: str, password: str, pupil_ids: list[int]
    ) -> FakeParent:
        parent = FakeParent(id, name, email.lower(), password, list(pupil_ids))
        self.parents[parent.email] = parent
        return parent

    def add_student_login(self, pupil_id: int, code: str, dob: str) -> None:
        self.student_logins[code.upper()] = (dob, pupil_id)

    def rename_pupil(self, id: int, first_name: str, last_name: str) -> None:
        self.pupils[id].first_name = first_name
        self.pupils[id].last_name = last_name

    def remove_pupil(self, id: int) -> None:
        self.pupils.pop(id, None)
        for parent in self.parents.values():
            if id in parent.pupil_ids:
                parent.pupil_ids.remove(id)

    def link(self, parent_email: str, pupil_id: int) -> None:
        self.parents[parent_email.lower()].pupil_ids.append(pupil_id)

    def unlink(self, parent_email: str, pupil_id: int) -> None:
        self.parents[parent_email.lower()].pupil_ids.remove(pupil_id)

    def fail_login(self, email_or_code: str) -> None:
        """That account's login is refused as a wrong password is: a 200 page, no session."""
        self.failing_logins.add(email_or_code.lower())

    def expire_sessions(self) -> None:
        self._sessions.clear()

    # --- routes ------------------------------------------------------------------------------

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/parent/login", self._parent_login)
        app.router.add_post("/student/login", self._student_login)
        for kind in ("parent", "student"):
            api = f"/apiv2{kind}"
            app.router.add_post(f"{api}/ping", self._api(kind, self._ping))
            for name in (
                "activity",
                "behaviour",
                "homeworks",
                "timetable",
                "eventbadges",
                "announcements",
                "detentions",
                "attendance",
                "customfields",
                "classes",
            ):
                app.router.add_get(
                    f"{api}/{name}/{{pupil}}", self._api(kind, self._pupil_data(name))
                )
        app.router.add_get("/apiv2parent/pupils", self._api("parent", self._pupils))
        app.router.add_post("/apiv2parent/password", self._api("parent", self._password))
        app.router.add_get(
            "/apiv2student/rewards/{pupil}", self._api("student", self._pupil_data("rewards"))
        )
        app.router.add_post("/apiv2student/purchase/{item}", self._api("student", self._purchase))
        app.router.add_post("/apiv2student/getcode", self._api("student", self._getcode))

    def _login_page(self) -> web.Response:
        return web.Response(
            text="<html><body>The login details you entered are incorrect.</body></html>",
            content_type="text/html",
        )

    def _start_session(self, kind: str, account: str) -> web.HTTPFound:
        session_id = secrets.token_hex(16)
        cookie = secrets.token_hex(12)
        self._sessions[session_id] = _Session(kind, account, cookie)
        self.logins += 1
        response = web.HTTPFound(f"/{kind}/mobile/")
        response.set_cookie(
            f"{kind}_session_credentials", quote(json.dumps({"session_id": session_id})), path="/"
        )
        response.set_cookie("cc-session", cookie, path="/", httponly=True)
        return response

    async def _parent_login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        email = str(form.get("email", "")).lower()
        parent = self.parents.get(email)
        if (
            form.get("_method") != "POST"
            or form.get("logintype") != "existing"
            or parent is None
            or form.get("password") != parent.password
            or email in self.failing_logins
            or not form.get("recaptcha-token")
        ):
            return self._login_page()
        raise self._start_session("parent", email)

    async def _student_login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        code = str(form.get("code", ""))
        known = self.student_logins.get(code)
        if (
            code != code.upper()
            or known is None
            or form.get("dob") != known[0]
            or form.get("remember_me") != "1"
            or code.lower() in self.failing_logins
        ):
            return self._login_page()
        raise self._start_session("student", code)

    def _api(
        self, kind: str, handler: _ApiHandler
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def guarded(request: web.Request) -> web.StreamResponse:
            session_id = request.headers.get("Authorization", "").removeprefix("Basic ").strip()
            session = self._sessions.get(session_id)
            cookies_refused = self.faults.take(request.path, ("tes_redirect",)) is not None
            if session is not None and (
                cookies_refused or request.cookies.get("cc-session") != session.cookie
            ):
                # No login cookies: the TES single-sign-on loop (it would bounce back with ?prompt=login).
                return_url = quote(str(request.url), safe="")
                raise web.HTTPFound(f"{TES_VERIFY}?returnUrl={return_url}")
            if session is None or session.kind != kind:
                return web.json_response({"success": 0, "error": "Session expired", "expired": 1})
            return await handler(request, session_id, session)

        return guarded

    @staticmethod
    def _envelope(data: Any, **meta: Any) -> web.Response:
        return web.json_response({"success": 1, "data": data, "meta": meta})

    def _visible_pupils(self, session: _Session) -> list[FakePupil]:
        if session.kind == "parent":
            ids = self.parents[session.account].pupil_ids if session.account in self.parents else []
        else:
            ids = (
                [self.student_logins[session.account][1]]
                if session.account in self.student_logins
                else []
            )
        return [self.pupils[i] for i in ids if i in self.pupils]

    async def _ping(self, request: web.Request, session_id: str, session: _Session) -> web.Response:
        form = await request.post()
        fresh = secrets.token_hex(16)
        self._sessions[fresh] = self._sessions.pop(session_id)
        user: dict[str, Any]
        if session.kind == "parent":
            parent = self.parents[session.account]
            first, _, last = parent.name.partition(" ")
            user = {
                "id": parent.id,
                "name": parent.name,
                "first_name": first,
                "last_name": last,
                "email": parent.email,
                "pupils": [p.record() for p in self._visible_pupils(session)],
            }
        else:
            pupils = self._visible_pupils(session)
            if not pupils:
                return web.json_response(
                    {"success": 0, "error": "Pupil no longer exists", "expired": 0}
                )
            user = pupils[0].record()
        data = {"user": user} if form.get("include_data") == "true" else []
        return self._envelope(data, session_id=fresh, version="27.16.3")

    async def _pupils(
        self, request: web.Request, session_id: str, session: _Session
    ) -> web.Response:
        if self.faults.take(request.path, ("pupils_empty",)) is not None:
            return self._envelope([])
        return self._envelope([p.record() for p in self._visible_pupils(session)])

    async def _password(
        self, request: web.Request, session_id: str, session: _Session
    ) -> web.Response:
        form = await request.post()
        parent = self.parents[session.account]
        if form.get("current") != parent.password:
            return web.json_response({"success": 0, "error": "Your current password is incorrect"})
        if not form.get("new") or form.get("new") != form.get("repeat"):
            return web.json_response({"success": 0, "error": "The new passwords do not match"})
        parent.password = str(form["new"])
        return self._envelope([])

    def _pupil_data(self, name: str) -> _ApiHandler:
        async def handler(request: web.Request, session_id: str, session: _Session) -> web.Response:
            try:
                pupil_id = int(request.match_info["pupil"])
            except ValueError:
                return web.json_response({"success": 0, "error": "Invalid pupil id"})
            if pupil_id not in {p.id for p in self._visible_pupils(session)}:
                return web.json_response({"success": 0, "error": "Access denied to this pupil"})
            if name == "activity":
                return self._activity(pupil_id, request.query.get("last_id"))
            return self._envelope(_canned(name, pupil_id, self.reward_balance.get(pupil_id, 0)))

        return handler

    def _activity(self, pupil_id: int, last_id: str | None) -> web.Response:
        points = [
            {
                "id": pupil_id * 1000 + n,
                "type": "behaviour",
                "polarity": "positive" if n % 3 else "negative",
                "reason": "Great effort" if n % 3 else "Late",
                "score": 1 if n % 3 else -1,
                "timestamp": f"2026-11-{1 + n % 20:02d} 10:00:00",
            }
            for n in range(25, 0, -1)
        ]
        if last_id:
            points = [p for p in points if int(p["id"]) < int(last_id)]
        return self._envelope(points[:ACTIVITY_PAGE], step_size=ACTIVITY_PAGE)

    async def _purchase(
        self, request: web.Request, session_id: str, session: _Session
    ) -> web.Response:
        form = await request.post()
        pupil_id = int(str(form.get("pupil_id", "0")))
        if pupil_id not in {p.id for p in self._visible_pupils(session)}:
            return web.json_response({"success": 0, "error": "Access denied to this pupil"})
        if self.reward_balance[pupil_id] < 10:
            return web.json_response({"success": 0, "error": "Not enough points"})
        self.reward_balance[pupil_id] -= 10
        return self._envelope(
            {
                "single_purchase": True,
                "item_id": int(request.match_info["item"]),
                "balance": self.reward_balance[pupil_id],
            }
        )

    async def _getcode(
        self, request: web.Request, session_id: str, session: _Session
    ) -> web.Response:
        form = await request.post()
        dob, _ = self.student_logins[session.account]
        day, month, year = dob.split("/")
        if form.get("date") != f"{year}-{month}-{day}":
            return web.json_response({"success": 0, "error": "Date of birth does not match"})
        return self._envelope({"code": session.account})


def _canned(name: str, pupil_id: int, balance: int) -> Any:
    """Small, plausible per-pupil data for each endpoint."""
    return {
        "behaviour": {
            "timeline": [
                {
                    "positive": 3,
                    "negative": 1,
                    "name": "Mon",
                    "start": "2026-11-16",
                    "end": "2026-11-16",
                }
            ],
            "positive_reasons": {"Great effort": 3},
            "negative_reasons": {"Late": 1},
            "other_positive": [],
            "other_negative": [],
            "other_positive_count": [],
            "other_negative_count": [],
        },
        "homeworks": [
            {
                "lesson": "Maths",
                "subject": "Mathematics",
                "teacher": "Ms Smith",
                "homework_type": "Homework",
                "id": pupil_id * 10 + 1,
                "title": "Fractions",
                "status": {"state": "not_completed"},
                "due_date": "2026-11-27",
                "issue_date": "2026-11-20",
            }
        ],
        "timetable": [
            {
                "teacher_name": "Ms Smith",
                "lesson_name": "7A/Ma1",
                "subject_name": "Mathematics",
                "period_name": "1",
                "start_time": "2026-11-23T09:00:00+00:00",
                "end_time": "2026-11-23T10:00:00+00:00",
            }
        ],
        "eventbadges": [
            {"id": 1, "name": "Star of the week", "icon": "star.png", "pupil_badges": []}
        ],
        "announcements": [
            {
                "id": 7,
                "title": "Term dates",
                "description": "<p>Term ends 18 December.</p>",
                "school_name": "Sandbox Academy",
                "timestamp": "2026-11-20 08:00:00",
            }
        ],
        "detentions": [],
        "attendance": {"dates": {"2026-11-20": {"AM": {"code": "/", "status": "present"}}}},
        "customfields": {"note": "", "fields": [{"id": 1, "title": "House", "value": "Red"}]},
        "classes": [{"id": 11, "name": "7A/Ma1", "teacher_name": "Ms Smith"}],
        "rewards": [
            {"id": 501, "name": "Homework pass", "price": 10, "stock": 5, "balance": balance}
        ],
    }[name]
