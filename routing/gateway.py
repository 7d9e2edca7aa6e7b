"""The data plane's ASGI application: resolve the tenant, run its script, answer or proxy.

Per request, in order: validate the request (routing.request), read the snapshot once,
resolve the tenant (404 before any Lua runs), run the tenant's script, turn its outcome into
a decision (routing.plan: the same pure function the dry run uses), then answer directly or
proxy through the upstream transport, streaming both ways, retrying on another backend only
when that is safe, and finally count the request and write one access-log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from routing import respond
from routing.balancer import Balancer
from routing.conf import GatewayConf, get_conf
from routing.errors import (
    BackendBroke,
    BackendRefused,
    ConfigNotLoaded,
    ConnectTimeout,
    GatewayError,
    GatewayTimeout,
    ScriptFailed,
    TenantNotFound,
    TenantUnavailable,
)
from routing.headers import downstream_headers
from routing.health import HealthRegistry
from routing.logs import current_request
from routing.plan import DirectResponse, UpstreamPlan, decide, script_request
from routing.request import ClientRequest, parse_scope
from routing.request_id import new_request_id
from routing.snapshot import BackendEntry, SnapshotHolder, TenantEntry
from routing.stats import Stats, access_line, log_access
from routing.types import Receive, Scope, Send
from routing.upstream import (
    Body,
    Broken,
    ConnectFailed,
    ConnectTimedOut,
    ReadTimedOut,
    Transport,
    UpstreamError,
    UpstreamResponse,
)

log = logging.getLogger("chistone.gateway")
script_log = logging.getLogger("chistone.script")

WATCH_AFTER_S = 0.05
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
ScriptGuard = tuple[Callable[[str, int], None], Callable[[], None]]


class RetryBudget:
    """Retries earn `ratio` of a token per request, up to a burst; each retry spends one."""

    def __init__(self, ratio: float, burst: float) -> None:
        self.ratio = ratio
        self.burst = burst
        self.tokens = burst

    def deposit(self) -> None:
        if self.tokens < self.burst:
            self.tokens = min(self.burst, self.tokens + self.ratio)

    def withdraw(self) -> bool:
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(slots=True)
class Exchange:
    """What one request did, for the counters and the access log."""

    request_id: str = ""
    tenant: str = "-"
    route: str = "-"
    backend: str = ""
    status: int = 0
    sent: int = 0
    lua: float = 0.0
    upstream: float | None = None
    retries: int = 0
    error: str = ""
    # X-Chistone-Config: the generation of the snapshot this request was served under.
    config: tuple[bytes, bytes] | None = None


class RequestBody:
    """The client's body: bytes when small enough to send again, else a one-shot stream."""

    def __init__(self, receive: Receive, first: bytes, more: bool, *, chunk: int) -> None:
        self.receive = receive
        self.prefix = first
        self.more = more
        self.chunk = chunk
        self.started = False
        self.disconnected = False

    @classmethod
    async def read(cls, receive: Receive, conf: GatewayConf) -> RequestBody:
        message = await receive()
        if message["type"] == "http.disconnect":
            body = cls(receive, b"", False, chunk=conf.chunk_bytes)
            body.disconnected = True
            return body
        data = message.get("body", b"")
        more = message.get("more_body", False)
        if more:  # read ahead: a body that ends within the replay size stays replayable
            parts = [data]
            size = len(data)
            while more and size <= conf.replay_body_bytes:
                message = await receive()
                if message["type"] == "http.disconnect":
                    body = cls(receive, b"", False, chunk=conf.chunk_bytes)
                    body.disconnected = True
                    return body
                piece = message.get("body", b"")
                parts.append(piece)
                size += len(piece)
                more = message.get("more_body", False)
            data = b"".join(parts)
        return cls(receive, data, more, chunk=conf.chunk_bytes)

    @property
    def replayable(self) -> bool:
        return not self.more or not self.started

    def payload(self) -> Body:
        if not self.more:
            return self.prefix or None
        return self._stream()

    async def _stream(self) -> AsyncIterator[bytes]:
        if self.started:
            raise RuntimeError("a streamed request body can be sent once")
        self.started = True
        yield self.prefix
        more = True
        while more:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                raise ConnectionResetError("client disconnected during the upload")
            data = message.get("body", b"")
            more = message.get("more_body", False)
            for start in range(0, len(data), self.chunk):
                yield data[start:start + self.chunk]


class Gateway:
    """The raw ASGI data-plane application (http only; see chistone_site.planes)."""

    def __init__(
        self,
        *,
        holder: SnapshotHolder,
        transport: Transport,
        health: HealthRegistry | None = None,
        stats: Stats | None = None,
        conf: GatewayConf | None = None,
        script_guard: ScriptGuard | None = None,
    ) -> None:
        self.holder = holder
        self.transport = transport
        self.conf = conf or get_conf()
        self.health = health or HealthRegistry.from_conf(self.conf)
        self.stats = stats or Stats()
        self.balancer = Balancer()
        self.budget = RetryBudget(self.conf.retry_budget_ratio, self.conf.retry_budget_min)
        self.script_guard = script_guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"the gateway serves http only, not {scope['type']!r}")
        started = time.perf_counter()
        ex = Exchange()
        # Log records written while this request is handled carry its id, tenant and route.
        bound = current_request.set(ex)
        try:
            await self._serve(scope, receive, send, ex, started)
        finally:
            current_request.reset(bound)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, ex: Exchange,
                     started: float) -> None:
        request: ClientRequest | None = None
        try:
            request = parse_scope(scope, self.conf)
            ex.request_id = request.request_id
            await self._handle(request, receive, send, ex)
        except GatewayError as error:
            ex.request_id = ex.request_id or new_request_id()
            ex.status, ex.error = error.status, error.code
            if error.status >= 500:
                log.warning("%s %s: %s (request %s)", error.status, error.code, error.detail,
                            ex.request_id)
            ex.sent = await respond.send_error(send, error, ex.request_id, ex.config)
        finally:
            total = time.perf_counter() - started
            self.stats.record(ex.tenant, ex.route, ex.status, total=total, upstream=ex.upstream,
                              lua=ex.lua, sent=ex.sent)
            if self.conf.access_log:
                log_access(access_line(
                    request_id=ex.request_id, tenant=ex.tenant, route=ex.route,
                    method=scope.get("method"),
                    path=request.raw_path if request else scope.get("path"),
                    status=ex.status, backend=ex.backend or None, sent=ex.sent,
                    upstream=ex.upstream, total=total, lua=ex.lua, retries=ex.retries,
                    error=ex.error or None, client=request.client_ip if request else None,
                ))

    async def _handle(self, request: ClientRequest, receive: Receive, send: Send,
                      ex: Exchange) -> None:
        snapshot = self.holder.current
        if snapshot is not None:
            ex.config = snapshot.config_header
        if snapshot is None:
            raise ConfigNotLoaded("The gateway has not loaded its configuration yet.",
                                  retry_after=self.conf.retry_after_s)
        match = snapshot.resolver.resolve(request.host, request.raw_path)
        if match is None:
            raise TenantNotFound("No tenant answers for this host and path.")
        tenant = match.tenant
        ex.tenant = tenant.slug
        if tenant.unavailable:
            raise TenantUnavailable(f"Tenant {tenant.slug!r} is unavailable: "
                                    f"{tenant.unavailable}.", retry_after=self.conf.retry_after_s)
        outcome = None
        if tenant.script is not None:
            outcome = self._run_script(tenant, request, match.path, ex)
        try:
            decision = decide(tenant, request, match.path, outcome,
                              healthy=self.health.is_healthy, balancer=self.balancer,
                              total_timeout_s=self.conf.upstream_total_timeout_s)
        except ScriptFailed as exc:
            log.error("tenant %s request %s: %s", tenant.slug, request.request_id, exc.detail)
            raise
        if isinstance(decision, DirectResponse):
            ex.status = decision.status
            ex.sent = len(decision.body)
            await respond.send_response(send, decision.status,
                                        [*decision.headers, snapshot.config_header], decision.body)
            return
        await self._proxy(decision, request, receive, send, ex)

    def _run_script(self, tenant: TenantEntry, request: ClientRequest, path: str,
                    ex: Exchange) -> Any:
        script = tenant.script
        assert script is not None
        sreq = script_request(tenant, request, path, self.health.is_healthy)
        guard = self.script_guard
        if guard is not None:
            guard[0](tenant.slug, tenant.version_id or 0)
        lua_started = time.perf_counter()
        try:
            outcome = script.handle(sreq)
        except Exception as exc:  # ScriptRuntimeError, ScriptTimeoutError, ScriptMemoryError
            ex.lua = time.perf_counter() - lua_started
            kind = type(exc).__name__
            self.stats.lua_error(tenant.slug, kind)
            # Tenant text goes into the log on one line: a newline in error(...) must not let
            # a script forge log lines (another tenant's access-log entry, say).
            message = one_line(str(exc))
            log.error("tenant %s v%s request %s: %s: %s | traceback: %s", tenant.slug,
                      tenant.version_number, request.request_id, kind, message,
                      one_line(getattr(exc, "lua_traceback", "") or ""))
            raise ScriptFailed(f"{kind}: {message}") from None
        finally:
            if guard is not None:
                guard[1]()
        ex.lua = time.perf_counter() - lua_started
        if outcome.route_pattern:  # before the script's log lines, which are tagged with it
            ex.route = outcome.route_pattern
        if outcome.logs:
            for level, message in outcome.logs:
                script_log.log(logging.getLevelName(level.upper()) if isinstance(
                    logging.getLevelName(level.upper()), int) else logging.INFO,
                    "tenant=%s request_id=%s %s", tenant.slug, request.request_id, message)
        return outcome

    # -- proxying ---------------------------------------------------------------------------
    async def _proxy(self, plan: UpstreamPlan, request: ClientRequest, receive: Receive,
                     send: Send, ex: Exchange) -> None:
        body = await RequestBody.read(receive, self.conf)
        if body.disconnected:
            ex.status, ex.error = 499, "client_disconnected"
            return
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        watcher: asyncio.Task[None] | None = None
        disconnected = False

        async def watch() -> None:
            nonlocal disconnected
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected = True
                    task.cancel()
                    return

        def start_watching() -> None:
            nonlocal watcher
            watcher = loop.create_task(watch())

        # Most exchanges end within milliseconds: a task listening for the client's disconnect
        # is only started once this one has taken longer than WATCH_AFTER_S (a cheap timer).
        timer = None if body.more else loop.call_later(WATCH_AFTER_S, start_watching)
        response: UpstreamResponse | None = None
        upstream_started = time.perf_counter()
        try:
            response, backend = await self._send_upstream(plan, request, body, ex)
            ex.backend = backend.name
            await self._relay(response, backend, request, send, ex)
            response = None
        except asyncio.CancelledError:
            if not disconnected:
                raise
            task.uncancel()
            ex.status, ex.error = 499, "client_disconnected"
        finally:
            ex.upstream = time.perf_counter() - upstream_started
            if timer is not None:
                timer.cancel()
            if watcher is not None:
                watcher.cancel()
            if response is not None:
                response.close()

    async def _send_upstream(self, plan: UpstreamPlan, request: ClientRequest,
                             body: RequestBody, ex: Exchange
                             ) -> tuple[UpstreamResponse, BackendEntry]:
        self.budget.deposit()
        backend = plan.backend
        fallbacks = list(plan.fallbacks)
        tries = 0
        while True:
            headers = plan.headers_for(backend)
            if body.more:
                length = next((v for k, v in request.headers if k == "content-length"), None)
                if length is not None:
                    headers.append(("content-length", length))
            try:
                response = await self.transport.send(
                    plan.method, plan.url_for(backend), headers, body.payload(),
                    connect=plan.connect_timeout_s, read=plan.read_timeout_s,
                    total=plan.total_timeout_s)
                return response, backend
            except UpstreamError as exc:
                ex.backend = backend.name
                self.health.record_failure(backend, f"{type(exc).__name__}: {exc}")
                retry = self._retryable(exc, plan.method, body)
                fallbacks = [b for b in fallbacks if self.health.is_healthy(b)]
                if retry and fallbacks and tries < self.conf.retries and self.budget.withdraw():
                    tries += 1
                    ex.retries = tries
                    self.stats.retries += 1
                    log.info("request %s: %s failed (%s), retrying on %s", request.request_id,
                             backend.name, type(exc).__name__, fallbacks[0].name)
                    backend = fallbacks.pop(0)
                    continue
                raise _map_upstream_error(exc, backend) from None

    @staticmethod
    def _retryable(exc: UpstreamError, method: str, body: RequestBody) -> bool:
        if body.disconnected:
            return False
        if not exc.sent:
            return body.replayable
        return isinstance(exc, Broken) and method in IDEMPOTENT and not body.more

    async def _relay(self, response: UpstreamResponse, backend: BackendEntry,
                     request: ClientRequest, send: Send, ex: Exchange) -> None:
        status = response.status
        bodiless = request.method == "HEAD" or status in (204, 304) or status < 200
        headers = downstream_headers(response.raw_headers, request_id=request.request_id,
                                     head_or_bodiless=bodiless)
        if ex.config is not None:
            headers.append(ex.config)
        ex.status = status
        chunk = b""
        at_eof = False
        if response.ready():  # a small answer is usually complete already: one body message
            try:
                chunk = await response.read_chunk()
            except UpstreamError as exc:  # nothing went to the client yet: answer an error
                self.health.record_failure(backend, f"{type(exc).__name__}: {exc}")
                raise _map_upstream_error(exc, backend) from None
            at_eof = response.at_eof()
        await respond.send_response_start(send, status, headers)
        if at_eof:
            await send({"type": "http.response.body", "body": chunk})
            ex.sent = len(chunk)
            response.release()
            self.health.record_success(backend)
            return
        sent = 0
        try:
            if not chunk:
                chunk = await response.read_chunk()
            while chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += len(chunk)
                await respond.wait_writable(send)
                chunk = await response.read_chunk()
        except UpstreamError as exc:
            ex.sent = sent
            ex.error = "upstream_broke_mid_body"
            self.health.record_failure(backend, f"{type(exc).__name__} mid-body: {exc}")
            log.warning("request %s: backend %s broke after %d bytes (%s); aborting the client "
                        "connection", request.request_id, backend.name, sent, exc)
            response.close()
            respond.abort(send)
            return
        ex.sent = sent
        await send({"type": "http.response.body", "body": b""})
        response.release()
        self.health.record_success(backend)


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7f)} | {0x0a: "\\n", 0x0d: "\\r",
                                                              0x09: "\\t"}


def one_line(text: str, limit: int = 4096) -> str:
    """Tenant-supplied text made safe for a log line: control characters escaped, bounded."""
    return text[:limit].translate(_CONTROL)


def _map_upstream_error(exc: UpstreamError, backend: BackendEntry) -> GatewayError:
    name = backend.name
    if isinstance(exc, ConnectFailed):
        return BackendRefused(f"Backend {name!r} refused the connection or could not be reached.")
    if isinstance(exc, ConnectTimedOut):
        return ConnectTimeout(f"Backend {name!r} did not accept a connection in time.")
    if isinstance(exc, ReadTimedOut):
        return GatewayTimeout(f"Backend {name!r} did not answer in time.")
    return BackendBroke(f"Backend {name!r} closed the connection or sent an invalid response.")
