"""The pull API Chengjiyun calls under ``[apiBaseUrl]`` (seed 003), plus /healthz and /metrics.

Every pull is signed: the sign covers all query parameters except ``sign`` (UTF-8 values as raw
text), the timestamp is valid 600 s, signs are compared in constant time, and a sign already seen
inside its window is refused as a replay. Every answer — refusals and our own bugs included — is
``{"code", "msg"}`` JSON, never an HTML page or a traceback.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TextIO

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from syncd.config import Config
from syncd.core.model import ROLES
from syncd.core.signing import API_WINDOW_S, verify
from syncd.cron import interval_s
from syncd.exceptions import ApiError
from syncd.log import get_logger
from syncd.metrics import HELD_DELETIONS, LAST_SUCCESS, QUEUE_DEPTH, REGISTRY, SECONDS_SINCE_SUCCESS
from syncd.store import Store

__all__ = ["Endpoint", "create_app", "health", "serve_command", "start_server"]

log = get_logger(__name__)

Endpoint = Callable[[Store, Mapping[str, str]], Awaitable[Any]]
MAX_QUERY_BYTES = 4096
STORE_KEY = web.AppKey("store", Store)
CONFIG_KEY = web.AppKey("config", Config)


class ReplayCache:
    """Signs seen, each kept until its own timestamp leaves the window (a request stamped in the
    future stays valid longer, so must its sign); bounded, soonest-expiring evicted first."""

    def __init__(self, window_s: float, max_entries: int = 100_000) -> None:
        self._window_s = window_s
        self._max = max_entries
        self._expires: dict[str, float] = {}
        self._queue: list[tuple[float, str]] = []  # heap of (expires_at, key)

    def seen_before(self, key: str, timestamp: float, now: float) -> bool:
        while self._queue and (self._queue[0][0] < now or len(self._queue) > self._max):
            _, old = heapq.heappop(self._queue)
            self._expires.pop(old, None)
        if key in self._expires:
            return True
        expires_at = timestamp + self._window_s
        self._expires[key] = expires_at
        heapq.heappush(self._queue, (expires_at, key))
        return False


async def _query_users(store: Store, params: Mapping[str, str]) -> Any:
    role = params.get("role")
    if role is not None and role not in ROLES:
        raise ApiError(30005, f"参数值内容错误: role must be one of {'/'.join(ROLES)}")
    return await store.served_users(role)


async def _query_class_status(store: Store, params: Mapping[str, str]) -> Any:
    return await store.served_class_statuses()


def _endpoints() -> dict[str, Endpoint]:
    endpoints: dict[str, Endpoint] = {
        "queryUsers": _query_users,
        "queryClassStatus": _query_class_status,
    }
    from syncd.server.exams import EXAM_ENDPOINTS

    endpoints.update(EXAM_ENDPOINTS)
    return endpoints


def _answer(code: int, msg: str, data: Any = None, *, status: int = 200) -> web.Response:
    body: dict[str, Any] = {"code": code, "msg": msg}
    if code == 0:
        body["data"] = data
    return web.json_response(body, status=status, dumps=lambda v: json.dumps(v, ensure_ascii=False))


def create_app(
    config: Config, store: Store, *, clock: Callable[[], float] = time.time
) -> web.Application:
    base = config.server.base_path
    endpoints = _endpoints()
    replays = ReplayCache(API_WINDOW_S)
    key = config.chengjiyun.key.reveal()

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
        except Exception:
            log.exception("pull API request failed", path=request.path)
            return _answer(10001, "未知错误", status=500)

    async def pull(request: web.Request) -> web.Response:
        name = request.match_info["endpoint"]
        endpoint = endpoints.get(name)
        if endpoint is None:
            return _answer(30001, "接口不存在", status=404)
        if len(request.query_string.encode()) > MAX_QUERY_BYTES:
            return _answer(30004, f"参数长度超出范围: query over {MAX_QUERY_BYTES} bytes")
        params = {k: v for k, v in request.query.items()}
        if len(params) != len(request.query):
            return _answer(30002, "参数解析错误: a parameter is repeated")
        missing = [p for p in ("orgId", "timestamp", "sign") if not params.get(p)]
        if missing:
            return _answer(30002, f"参数解析错误: missing {', '.join(missing)}")
        if params["orgId"] != config.chengjiyun.org_id:
            return _answer(30005, "参数值内容错误: orgId")
        now = clock()
        problem = verify(params, key, window_s=API_WINDOW_S, now=now)
        if problem is not None:
            log.info("pull request refused", endpoint=name, reason=problem)
            return _answer(30006, "验证失败")
        # The sign does not cover the path, so two endpoints asked with the same parameters in
        # the same second share a sign: a replay is the same sign on the same endpoint.
        if replays.seen_before(f"{name}:{params['sign'].lower()}", int(params["timestamp"]), now):
            log.info("pull request refused", endpoint=name, reason="replayed sign")
            return _answer(30006, "验证失败")
        try:
            data = await endpoint(store, params)
        except ApiError as err:
            return _answer(err.code, err.msg)
        return _answer(0, "success", data)

    async def healthz(request: web.Request) -> web.Response:
        report = await health(config, store, now=clock())
        return web.json_response(
            report,
            status=200 if report["healthy"] else 503,
            dumps=lambda v: json.dumps(v, ensure_ascii=False),
        )

    async def metrics(request: web.Request) -> web.Response:
        await refresh_gauges(config, store, now=clock())
        response = web.Response(body=generate_latest(REGISTRY))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    app = web.Application(middlewares=[json_errors])
    app[STORE_KEY] = store
    app[CONFIG_KEY] = config
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get(f"{base}/{{endpoint}}", pull)
    return app


def stale_after_s(config: Config, source: str) -> float:
    """``[safety] stale_after_s``, or three times the source's schedule interval."""
    if config.safety.stale_after_s:
        return float(config.safety.stale_after_s)
    return 3 * interval_s(getattr(config.schedule, source))


async def health(config: Config, store: Store, *, now: float) -> dict[str, Any]:
    """Liveness plus, per enabled source, its state and last success; unhealthy if failing or stale."""
    states = await store.source_states()
    sources: dict[str, Any] = {}
    healthy = True
    for source in config.enabled_sources:
        state = states.get(source, {})
        last_success = state.get("last_success_at")
        limit = stale_after_s(config, source)
        stale = last_success is not None and now - last_success > limit
        failing = state.get("state") == "failing"
        status = (
            "failing"
            if failing
            else "stale"
            if stale
            else "ok"
            if last_success
            else "waiting for first poll"
        )
        healthy = healthy and not failing and not stale
        sources[source] = {
            "status": status,
            "last_success_at": last_success,
            "consecutive_failures": state.get("consecutive_failures", 0),
            "last_error": state.get("last_error"),
            "stale_after_s": limit,
        }
    return {"healthy": healthy, "sources": sources, "queue": await store.queue_depth()}


async def refresh_gauges(config: Config, store: Store, *, now: float) -> None:
    depth = await store.queue_depth()
    for kind in ("addUser", "updateUser", "classStatus", "deleteUser"):
        QUEUE_DEPTH.labels(kind=kind).set(depth.get(kind, 0))
    HELD_DELETIONS.set(len(await store.held_deletions()))
    for source, state in (await store.source_states()).items():
        if state.get("last_success_at"):
            LAST_SUCCESS.labels(source=source).set(state["last_success_at"])
            SECONDS_SINCE_SUCCESS.labels(source=source).set(now - state["last_success_at"])


async def start_server(config: Config, store: Store) -> web.AppRunner:
    runner = web.AppRunner(create_app(config, store), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port)
    await site.start()
    log.info("pull API listening", url=f"http://{config.server.listen}{config.server.base_path}/")
    return runner


async def serve_command(config: Config, args: Any, out: TextIO) -> int:
    """``syncd serve``: the pull API alone, until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with await Store.open(config.store.path) as store:
        runner = await start_server(config, store)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
    log.info("pull API stopped")
    return 0
