"""The pull API Chengjiyun calls under ``[apiBaseUrl]``, plus /healthz and /metrics.

Every pull is signed: the sign covers all query parameters except ``sign`` (UTF-8 values as raw
text), the timestamp is valid 600 s, signs are compared in constant time, and a sign already seen
inside its window is refused as a replay. Every answer — refusals, malformed HTTP and our own
bugs included — is ``{"code", "msg"}`` JSON, never an HTML page or a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TextIO

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from syncd.config import Config, ServerConfig
from syncd.core.model import ROLES
from syncd.core.signing import API_WINDOW_S, verify
from syncd.exceptions import ApiError, StoreError
from syncd.log import get_logger
from syncd.metrics import REGISTRY
from syncd.schools import SchoolConfigs
from syncd.server.answers import AnswerCache, envelope, send_answer, shape_users
from syncd.server.connections import (
    ConnectionLimits,
    LimitedSite,
    PullRequestHandler,
    raise_open_files_limit,
)
from syncd.server.health import health, refresh_gauges, stale_after_s
from syncd.server.replay import Admission, ReplayCache
from syncd.server.throttle import ThrottledWarning
from syncd.store import Store

__all__ = [
    "PULL_KEY",
    "SERVED_KEY",
    "Endpoint",
    "NotRunning",
    "PullApi",
    "ReplayCache",
    "ServedSchool",
    "ServedSchools",
    "create_app",
    "create_schools_app",
    "health",
    "listening_port",
    "refresh_gauges",
    "serve_command",
    "stale_after_s",
    "start_schools_server",
    "start_server",
]

log = get_logger(__name__)

Endpoint = Callable[[Store, Mapping[str, str]], Awaitable[Any]]
MAX_QUERY_BYTES = 4096
REPLAY_CAPACITY = 100_000
# A Unix time in seconds has 10 digits until the year 2286; anything longer is not a timestamp
# (and a huge integer would overflow the float arithmetic of the window check).
PLAUSIBLE_TIMESTAMP = re.compile(r"[0-9]{1,11}")


class Cached(StrEnum):
    """Endpoints whose answers depend only on the served snapshot (built once per change)."""

    USERS = "queryUsers"
    CLASS_STATUS = "queryClassStatus"


class NotRunning(StrEnum):
    """Why a school of the configuration is not served now, as ``/healthz`` shows it. Its
    pulls are answered busy (10002), not as an unknown ``orgId``."""

    INVALID = "invalid configuration"
    NOT_STARTED = "not started"
    RESTARTING = "restarting"
    DATABASE_UNAVAILABLE = "database unavailable"


def _answer(code: int, msg: str, data: Any = None, *, status: int = 200) -> web.Response:
    return web.Response(
        body=envelope(code, msg, data),
        status=status,
        content_type="application/json",
        charset="utf-8",
    )


async def _close_when_crowded(request: web.Request, response: web.StreamResponse) -> None:
    """At the connection cap an answer closes its connection, so a waiting client gets in."""
    protocol = request.protocol
    if isinstance(protocol, PullRequestHandler) and protocol.crowded:
        response.force_close()


def _exam_endpoints() -> dict[str, Endpoint]:
    from syncd.server.exams import EXAM_ENDPOINTS

    return dict(EXAM_ENDPOINTS)


class ServedSchool:
    """What the pull API holds for one school: its snapshot, the key its pulls are signed with,
    its replay cache and its answers. Nothing here is shared with another school."""

    def __init__(
        self, config: Config, store: Store, *, replay_capacity: int = REPLAY_CAPACITY
    ) -> None:
        self.config = config
        self.store = store
        self.key = config.chengjiyun.key.reveal()
        self.replays = ReplayCache(API_WINDOW_S, max_entries=replay_capacity)
        self.answers = AnswerCache()
        # Exam answers, valid while the exams' fingerprint stays the same; a new fingerprint
        # starts an empty cache, so answers of replaced or deleted exams are dropped.
        self.exam_answers = AnswerCache()
        self.exams_fingerprint: tuple[int, float, float] | None = None


@dataclass
class ServedSchools:
    """Every school one listener serves, by ``orgId``; the daemon adds and removes schools on
    reload. ``not_running`` names the schools of a directory that are not served, each with
    its :class:`NotRunning` state (never error text)."""

    schools: dict[str, ServedSchool] = field(default_factory=dict)
    not_running: dict[str, NotRunning] = field(default_factory=dict)
    # A directory of schools: /healthz and /metrics report every school by orgId.
    per_school: bool = False

    @classmethod
    def one(cls, config: Config, store: Store, **kwargs: Any) -> ServedSchools:
        return cls({config.chengjiyun.org_id: ServedSchool(config, store, **kwargs)})


class PullApi:
    """The signed pull endpoints: routing by ``orgId``, checks, replay cache, answers."""

    def __init__(self, served: ServedSchools, *, clock: Callable[[], float]) -> None:
        self._served = served
        self._clock = clock
        self._exams = _exam_endpoints()
        self._refused = ThrottledWarning(log, level="info")
        self._busy = ThrottledWarning(log)

    def school(self, org_id: str) -> ServedSchool:
        return self._served.schools[org_id]

    def known(self, name: str) -> bool:
        return name in Cached.__members__.values() or name in self._exams

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["endpoint"]
        if not self.known(name):
            return _answer(30001, "接口不存在", status=404)
        if len(request.query_string.encode()) > MAX_QUERY_BYTES:
            return _answer(30004, f"参数长度超出范围: query over {MAX_QUERY_BYTES} bytes")
        params = {k: v for k, v in request.query.items()}
        if len(params) != len(request.query):
            return _answer(30002, "参数解析错误: a parameter is repeated")
        missing = [p for p in ("orgId", "timestamp", "sign") if not params.get(p)]
        if missing:
            return _answer(30002, f"参数解析错误: missing {', '.join(missing)}")
        school = self._served.schools.get(params["orgId"])
        if school is None and params["orgId"] in self._served.not_running:
            # The directory holds this school but it is not running (restarting on a reload,
            # not started, its file invalid): "try again", not "wrong orgId".
            return _answer(10002, "服务器忙")
        if school is None:
            return _answer(30005, "参数值内容错误: orgId")
        if not PLAUSIBLE_TIMESTAMP.fullmatch(params["timestamp"]):
            return _answer(30003, "参数格式错误: timestamp must be a Unix time in seconds")
        now = self._clock()
        problem = verify(params, school.key, window_s=API_WINDOW_S, now=now)
        if problem is not None:
            self._refused.warn(
                "pull request refused", endpoint=name, org_id=params["orgId"], reason=problem
            )
            return _answer(30006, "验证失败")
        # The sign does not cover the path, so two endpoints asked with the same parameters in
        # the same second share a sign: a replay is the same sign on the same endpoint.
        replay_key = bytes.fromhex(params["sign"]) + name.encode()
        admission = school.replays.admit(replay_key, int(params["timestamp"]), now)
        if admission is Admission.REPLAY:
            self._refused.warn(
                "pull request refused",
                endpoint=name,
                org_id=params["orgId"],
                reason="replayed sign",
            )
            return _answer(30006, "验证失败")
        if admission is Admission.FULL:
            self._busy.warn(
                "pull request refused: replay cache full", endpoint=name, org_id=params["orgId"]
            )
            return _answer(10002, "服务器忙")
        try:
            if name == Cached.USERS:
                return await self._users(request, school, params.get("role"))
            if name == Cached.CLASS_STATUS:
                return await self._cached(
                    request, school, Cached.CLASS_STATUS, school.store.served_class_statuses
                )
            return await self._exam(request, school, name, params)
        except ApiError as err:
            return _answer(err.code, err.msg)

    async def _users(
        self, request: web.Request, school: ServedSchool, role: str | None
    ) -> web.StreamResponse:
        if role is not None and role not in ROLES:
            raise ApiError(30005, f"参数值内容错误: role must be one of {'/'.join(ROLES)}")

        async def load() -> list[str]:
            return await school.store.snapshot.user_records()

        def shape(records: list[str]) -> Any:
            return shape_users(records, role)

        return await self._cached(request, school, f"{Cached.USERS}:{role or ''}", load, shape)

    async def _exam(
        self, request: web.Request, school: ServedSchool, name: str, params: Mapping[str, str]
    ) -> web.StreamResponse:
        """Exam answers are built once per imported exam (and course); refusals are not kept."""
        fingerprint = await school.store.exams.fingerprint()
        if fingerprint != school.exams_fingerprint:
            school.exams_fingerprint = fingerprint
            school.exam_answers = AnswerCache()
        endpoint = self._exams[name]

        async def load() -> Any:
            return await endpoint(school.store, params)

        # The exam endpoints read only examId and course.
        key = "\x00".join((name, params.get("examId", ""), params.get("course", "")))
        answer = await school.exam_answers.get(key, 0, load)
        return await send_answer(request, answer)

    async def _cached(
        self,
        request: web.Request,
        school: ServedSchool,
        key: str,
        load: Callable[[], Awaitable[Any]],
        shape: Callable[[Any], Any] | None = None,
    ) -> web.StreamResponse:
        generation = await school.store.snapshot_generation()
        answer = await school.answers.get(key, generation, load, shape)
        return await send_answer(request, answer)


PULL_KEY = web.AppKey("pull", PullApi)
SERVED_KEY = web.AppKey("served", ServedSchools)


def create_app(
    config: Config,
    store: Store,
    *,
    clock: Callable[[], float] = time.time,
    replay_capacity: int = REPLAY_CAPACITY,
) -> web.Application:
    """The pull API of one school (one configuration file)."""
    served = ServedSchools.one(config, store, replay_capacity=replay_capacity)
    return create_schools_app(config.server, served, clock=clock)


def create_schools_app(
    server: ServerConfig, served: ServedSchools, *, clock: Callable[[], float] = time.time
) -> web.Application:
    """The pull API of every school in ``served``, routed by ``orgId``, plus /healthz and
    /metrics."""
    pull = PullApi(served, clock=clock)

    @web.middleware
    async def json_errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _answer(30001, "接口不存在", status=404)
        except web.HTTPMethodNotAllowed:
            return _answer(30001, "接口不存在: wrong method", status=405)
        except web.HTTPException as err:
            return _answer(30002, f"参数解析错误: {err.reason}", status=err.status)
        except ConnectionError:
            raise  # the client went away mid-answer; aiohttp drops the connection quietly
        except Exception:
            log.exception("pull API request failed", path=request.path)
            return _answer(10001, "未知错误", status=500)

    async def healthz(request: web.Request) -> web.Response:
        report = await _health_of(served, now=clock())
        return web.json_response(
            report,
            status=200 if report["healthy"] else 503,
            dumps=lambda v: json.dumps(v, ensure_ascii=False),
        )

    async def metrics(request: web.Request) -> web.Response:
        for school in list(served.schools.values()):
            await refresh_gauges(school.config, school.store, now=clock())
        response = web.Response(body=generate_latest(REGISTRY))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    limits = ConnectionLimits.from_config(server)
    app = web.Application(middlewares=[json_errors], handler_args=limits.handler_args())
    app.on_response_prepare.append(_close_when_crowded)
    app[PULL_KEY] = pull
    app[SERVED_KEY] = served
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get(f"{server.base_path}/{{endpoint}}", pull.handle)
    return app


async def _health_of(served: ServedSchools, *, now: float) -> dict[str, Any]:
    """One school's report as it is; for a directory, every school's by orgId, and the schools
    that are not running (unhealthy)."""
    reports = {
        org_id: await health(school.config, school.store, now=now)
        for org_id, school in list(served.schools.items())
    }
    if not served.per_school and len(reports) == 1:
        return next(iter(reports.values()))
    return {
        "healthy": all(r["healthy"] for r in reports.values()) and not served.not_running,
        "schools": reports,
        "not_running": dict(served.not_running),
    }


async def start_server(config: Config, store: Store) -> web.AppRunner:
    """The pull API of one school on its ``[server] listen``."""
    return await start_schools_server(config.server, ServedSchools.one(config, store))


async def start_schools_server(server: ServerConfig, served: ServedSchools) -> web.AppRunner:
    """The pull API on ``[server] listen``, under the connection limits of ``[server]``."""
    raise_open_files_limit()
    runner = web.AppRunner(
        create_schools_app(server, served), access_log=None, handle_signals=False
    )
    await runner.setup()
    site = LimitedSite(runner, server.host, server.port, ConnectionLimits.from_config(server))
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info(
        "pull API listening", url=f"{site.name}{server.base_path}/", schools=len(served.schools)
    )
    return runner


def listening_port(runner: web.BaseRunner) -> int:
    """The port a runner from :func:`start_server` listens on (useful with port 0)."""
    for site in runner.sites:
        if isinstance(site, LimitedSite):
            return site.port
    raise LookupError("the runner has no pull API site")


async def serve_command(schools: SchoolConfigs, args: Any, out: TextIO) -> int:
    """``syncd serve``: the pull API of every school alone, until SIGTERM/SIGINT. In a
    directory, a school whose database does not open is reported and not served."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    served = ServedSchools(per_school=schools.is_directory)
    for invalid in schools.invalid:
        served.not_running[invalid.name] = NotRunning.INVALID
    async with contextlib.AsyncExitStack() as stack:
        for org_id, config in schools.schools.items():
            try:
                store = await Store.open(config.store.path, backup=config.store.backup)
            except StoreError as err:
                if not schools.is_directory:
                    raise
                log.error("school not served", org_id=org_id, error=str(err))
                served.not_running[org_id] = NotRunning.DATABASE_UNAVAILABLE
                continue
            await stack.enter_async_context(store)
            served.schools[org_id] = ServedSchool(config, store)
        runner = await start_schools_server(schools.server, served)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
    log.info("pull API stopped")
    return 0
