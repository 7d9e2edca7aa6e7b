"""The plane router: which application answers a connection, decided by the port it came to.

- Requests that arrive on the control port (CHISTONE_CONTROL_PORT, compared
  with `scope["server"][1]`) go to Django: the admin and the API.
- Every other request goes to the data-plane gateway, whatever its Host or path: tenant
  traffic can never reach Django, and control-plane requests never reach a tenant.
- `/healthz` (alive) and `/readyz` (configuration loaded: 200, else 503) are answered here,
  on both listeners, before either application; on the data plane these two paths are
  reserved and never reach a tenant.
- WebSocket connections on the data plane go to the WebSocket gateway (routing.websocket:
  routed like any request, relayed to a backend); the control plane refuses them. Lifespan
  events start and stop the data plane's runtime (uvicorn sends them; under daphne, which
  has none, the runtime starts when the reactor runs, or at the latest with the first
  request).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from routing import guard, metrics, observations, respond
from routing.conf import GatewayConf, get_conf
from routing.gateway import Gateway, ScriptGuard
from routing.health import ActiveChecker, HealthRegistry
from routing.request_id import new_request_id
from routing.snapshot import SnapshotHolder
from routing.stats import Stats, install_buffered_access_log, uninstall_access_log
from routing.tracing import Tracing
from routing.types import ASGIApp, Receive, Scope, Send
from routing.upstream import (
    Broken,
    ConnectFailed,
    ConnectTimedOut,
    ReadTimedOut,
    Transport,
    UpstreamError,
    make_transport,
)
from routing.websocket import WebSocketGateway

log = logging.getLogger("chistone.planes")

OBSERVE_EVERY_S = 1.0  # how often a worker writes its rollout and shadow counts
# Container allocations between two young-generation collections in a serving process
# (Python's default is 700). A request's objects die by reference counting, none in cycles
# (bench/RESULTS.md counted zero collected in 15,000 requests), so at the default the
# collector ran every ten or so requests only to walk the objects of the requests in flight
# and promote them; at 10,000 it did not run once in 15,000 benchmark requests.
YOUNG_GC_THRESHOLD = 10_000


def settle_heap() -> None:
    """Once the data plane has started: keep everything loaded so far (Django, the first
    snapshot), which lives as long as the process, out of the cyclic collector's scans, and
    collect the young generation seldom (YOUNG_GC_THRESHOLD)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


@dataclass(frozen=True, slots=True)
class CheckResult:
    """An active health check's verdict: truthy when it passed, else `reason` says why
    (routing.health keeps it for the admin)."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def _check_failure(exc: UpstreamError, limit_s: float) -> str:
    if isinstance(exc, ConnectTimedOut):
        return f"no connection within {limit_s:g} s"
    if isinstance(exc, ConnectFailed):
        return f"connection refused or unreachable ({exc})"
    if isinstance(exc, ReadTimedOut):
        return f"no answer within {limit_s:g} s"
    if isinstance(exc, Broken):
        return f"connection broke ({exc})"
    return f"{type(exc).__name__}: {exc}"


class DataPlane:
    """The per-process runtime of the data plane: snapshot, client, health, watcher, gateway."""

    def __init__(self, *, holder: SnapshotHolder, transport: Transport | None = None,
                 conf: GatewayConf | None = None, script_guard: ScriptGuard | None = None,
                 watch_generation: bool = True) -> None:
        self.conf = conf or get_conf()
        self.holder = holder
        self.transport = transport or make_transport(self.conf)
        self.health = HealthRegistry.from_conf(self.conf)
        self.stats = Stats()
        # Trace export when the standard OTEL_* variables ask for it; None (no cost) otherwise.
        self.tracing = Tracing.create()
        self.gateway = Gateway(holder=holder, transport=self.transport, health=self.health,
                               stats=self.stats, conf=self.conf, script_guard=script_guard,
                               tracing=self.tracing)
        self.websockets = WebSocketGateway(self.gateway)
        self.checker = ActiveChecker(
            self.health, lambda: self.holder.current, self._probe,
            interval=self.conf.health_interval_s, timeout=self.conf.health_timeout_s)
        self.watch_generation = watch_generation
        self.started = False
        self._starting: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._observer: asyncio.Task[None] | None = None
        self._log_handler = None
        self.database_reachable = True

    async def _probe(self, backend: Any, limit_s: float) -> CheckResult:
        """GET the backend's health path through the same client as traffic: a 2xx or 3xx
        within `limit_s` passes; anything else fails with a reason an operator can act on."""
        url = f"{backend.origin}{backend.base_path}{backend.health_check_path}"
        try:
            response = await self.transport.send(
                "GET", url, [("host", backend.host_header),
                             ("user-agent", "chistone-health-check")], None,
                connect=limit_s, read=limit_s, total=limit_s)
        except UpstreamError as exc:
            return CheckResult(False, _check_failure(exc, limit_s))
        status = response.status
        response.close()
        if 200 <= status < 400:
            return CheckResult(True)
        return CheckResult(False, f"answered HTTP {status} (a check passes on 2xx or 3xx)")

    @property
    def ready(self) -> bool:
        return self.holder.current is not None

    async def start(self) -> None:
        """Start once (concurrent callers wait for the same start)."""
        if self.started:
            return
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        from tenants import events

        await self.transport.start()
        self._log_handler = install_buffered_access_log()
        self.holder.subscribe(self.health.prune)
        events.add_listener(self.holder.on_config_change)
        if self.holder.current is None:
            await asyncio.to_thread(self.holder.rebuild)
        settle_heap()
        self.checker.start()
        if self.watch_generation:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        self._reporter = asyncio.get_running_loop().create_task(self._report_metrics())
        self._observer = asyncio.get_running_loop().create_task(self._report_observations())
        self.started = True

    def metrics_report(self) -> dict[str, Any]:
        snapshot = self.holder.current
        return {
            "pid": os.getpid(),
            "generation": snapshot.generation if snapshot is not None else None,
            "build_seconds": snapshot.build_seconds if snapshot is not None else 0.0,
            "reloads": self.holder.reloads,
            "stats": self.stats.report(),
            "health": self.health.report(snapshot),
            "auto_rollbacks": dict(guard.auto_rollbacks),
            "rollouts": [{"tenant": t.slug, "version": t.rollout.version_number,
                          "percent": t.rollout.percent}
                         for t in (snapshot.tenants.values() if snapshot is not None else ())
                         if t.rollout is not None],
            "shadow": {tenant: list(total)
                       for tenant, total in self.gateway.shadow.totals.items()},
        }

    def console_report(self) -> str:
        """The console's view of this worker (routing.traffic) as JSON: its last hour per
        minute and its recent requests."""
        return (f'{{"pid":{os.getpid()},"window":{self.stats.window.to_json()},'
                f'"recent":{json.dumps(self.stats.recent.to_list(), separators=(",", ":"))}}}')

    async def _report_metrics(self) -> None:
        """Once a second, publish this worker's counters for /metrics (routing.metrics) and,
        when it has served requests since, its console report."""
        published = -1
        while True:
            try:
                await asyncio.to_thread(metrics.write_report, self.metrics_report())
                served = len(self.stats.recent.ring) and id(self.stats.recent.ring[-1])
                if served != published:
                    await asyncio.to_thread(metrics.write_text, self.console_report(),
                                            kind="console")
                    published = served
            except Exception:
                log.exception("could not write the metrics report")
            await asyncio.sleep(1.0)

    async def _report_observations(self) -> None:
        """Once a second, off the request path: write what this worker counted for guarded
        rollouts and shadows to the database (routing.observations), where every worker of
        every node adds up; then check the guards it counted for (chistone_site.actions:
        an auto rollback, if one tripped)."""
        failed_once = False
        while True:
            await asyncio.sleep(OBSERVE_EVERY_S)
            shadows, guards = self.gateway.shadow.take(), self.stats.guards.take()
            if not shadows and not guards:
                continue
            try:
                await asyncio.to_thread(_record_observations, shadows, guards)
                failed_once = False
            except Exception as exc:  # the database is down: these counts are lost
                if not failed_once:
                    log.warning("could not record rollout and shadow counts: %s", exc)
                failed_once = True

    async def _watch(self) -> None:
        """Pick up changes committed by other processes (issue 7 extends this)."""
        from tenants.watch import GenerationWatcher

        watcher = GenerationWatcher(interval=0.5, on_reachability=self._reachability)
        try:
            while True:
                current = self.holder.current
                seen = current.generation if current is not None else -1
                if self.holder.from_disk:
                    seen = -1  # the database is back: reload from it, whatever the number
                await watcher.wait_for_change(seen)
                snapshot = await asyncio.to_thread(self.holder.rebuild)
                if snapshot is None:
                    await asyncio.sleep(1.0)
        finally:
            await watcher.close()

    def _reachability(self, reachable: bool) -> None:
        self.database_reachable = reachable

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """readyz: 200 "ready"; 200 "degraded" when serving without the database; else 503."""
        snapshot = self.holder.current
        if snapshot is None:
            return 503, {"status": "not ready", "generation": None,
                         "database": "reachable" if self.database_reachable else "unreachable",
                         "last_error": self.holder.last_error or None}
        degraded = not self.database_reachable or self.holder.from_disk
        return 200, {
            "status": "degraded" if degraded else "ready",
            "generation": snapshot.generation,
            "database": "reachable" if self.database_reachable else "unreachable",
            "snapshot_source": "disk" if self.holder.from_disk else "database",
            "last_error": self.holder.last_error or None,
        }

    async def stop(self) -> None:
        from tenants import events

        events.remove_listener(self.holder.on_config_change)
        if self._reporter is not None:
            self._reporter.cancel()
            self._reporter = None
        if self._observer is not None:
            self._observer.cancel()
            self._observer = None
        if self._watcher is not None:
            self._watcher.cancel()
            try:
                await self._watcher
            except (asyncio.CancelledError, Exception):
                pass
            self._watcher = None
        await self.checker.stop()
        await self.transport.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # flushes the last spans
        uninstall_access_log(self._log_handler)
        self._log_handler = None
        self.started = False
        self._starting = None


def _record_observations(shadows: Any, guards: Any) -> None:
    """In a thread: write one report, then check the guards it counted for."""
    from django.db import close_old_connections

    from chistone_site.actions import check_guards

    close_old_connections()
    rollouts = observations.write(shadows, guards)
    if rollouts:
        check_guards(rollouts)


async def _plain(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await respond.send_response(send, status, [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store")], body)


class PlaneRouter:
    """`application`: sends each scope to the control plane (Django) or the data plane."""

    def __init__(self, *, control_app: ASGIApp, data_plane: DataPlane, control_port: int) -> None:
        self.control_app = control_app
        self.data_plane = data_plane
        self.control_port = control_port

    def is_control(self, scope: Scope) -> bool:
        server = scope.get("server")
        return bool(server) and len(server) > 1 and server[1] == self.control_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        plane = self.data_plane
        if kind == "http":
            path = scope.get("path")
            if path == "/healthz":
                await _plain(send, 200, {"status": "alive"})
                return
            if path == "/readyz":
                if not plane.started:
                    asyncio.get_running_loop().create_task(plane.start())
                await _plain(send, *plane.readiness())
                return
            if path == "/metrics" and self.is_control(scope):
                body = await asyncio.to_thread(metrics.render)
                await respond.send_response(send, 200, [
                    (b"content-type", CONTENT_TYPE_LATEST.encode()),
                    (b"content-length", str(len(body)).encode())], body)
                return
            if self.is_control(scope):
                if not plane.started:
                    await plane.start()
                await self.control_app(scope, receive, send)
            else:
                await self._data(scope, receive, send)
            return
        if kind == "websocket":
            if self.is_control(scope):
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 1008})
                return
            if not plane.started:
                await plane.start()
            await plane.websockets(scope, receive, send)
            return
        raise RuntimeError(f"unsupported ASGI scope type {kind!r}")

    async def _data(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The gateway, with a last-resort guard around what comes before it: whatever
        fails here, a data-plane client gets a JSON 500 with a request id, never the
        server's HTML page (the gateway guards its own requests the same way)."""
        plane = self.data_plane
        try:
            if not plane.started:
                await plane.start()
            await plane.gateway(scope, receive, send)
        except respond.ResponseAborted:
            raise
        except Exception:
            request_id = new_request_id()
            log.exception("request %s: the data plane failed before the gateway answered",
                          request_id)
            await respond.send_internal_error(scope, send, request_id)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.data_plane.start()
                except Exception as exc:
                    log.exception("data plane failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.data_plane.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return
