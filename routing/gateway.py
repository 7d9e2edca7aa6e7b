"""The data plane's ASGI application: resolve the tenant, run its script, answer or proxy.

Per request, in order: validate the request (routing.request), read the snapshot once,
resolve the tenant (404 before any Lua runs), run the tenant's script through the one
driver (routing.script_run; while it waits for the body, a response or a call, the worker
serves other requests), turn its outcome into a decision (routing.plan: the same pure
function the dry run uses), then answer directly or proxy through the upstream transport,
streaming both ways, retrying on another backend only when that is safe, apply what
middleware changed on the response (routing.patch), and finally count the request and write
one access-log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from luascripts.engine import Outcome
from luascripts.engine.errors import BodyUnavailable, ResponseUnavailable
from luascripts.engine.script import ScriptRun
from luascripts.engine.types import ExchangeAction, ResponsePatch
from routing import respond
from routing.balancer import Balancer
from routing.conf import GatewayConf, get_conf
from routing.disconnects import DisconnectWatch
from routing.errors import (
    BackendBroke,
    ConfigNotLoaded,
    GatewayError,
    GatewayTimeout,
    PayloadTooLarge,
    RequestTimeout,
    ResponseTooLarge,
    ScriptBusy,
    ScriptFailed,
    TenantNotFound,
    TenantUnavailable,
    error_response,
)
from routing.exchange import LiveEffects, Opened, RequestBody, Upstream, upstream_error
from routing.guard import NEW, OLD
from routing.headers import downstream_headers
from routing.health import HealthRegistry
from routing.logs import current_request
from routing.patch import frame_answer, patch_headers, patch_status
from routing.plan import UpstreamPlan, decide, script_request
from routing.request import ClientRequest, parse_scope
from routing.request_id import new_request_id
from routing.script_run import ScriptGuard, drive
from routing.shadow import ShadowRunner
from routing.shared_state import Store, store_from_conf
from routing.snapshot import BackendEntry, SnapshotHolder, TenantEntry
from routing.stats import Stats, access_line, log_access
from routing.tracing import Tracing, apply_script_entries
from routing.types import Receive, Scope, Send
from routing.upstream import Transport, UpstreamError, UpstreamResponse

log = logging.getLogger("chistone.gateway")
script_log = logging.getLogger("chistone.script")

__all__ = ["Exchange", "Gateway", "ScriptGuard", "one_line"]


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
    version: int | None = None  # the script version that answered (the console links it)
    # X-Chistone-Config: the generation of the snapshot this request was served under.
    config: tuple[bytes, bytes] | None = None
    # The server adapter's back-pressure and abort for this connection (routing.respond).
    connection: respond.ServerConnection | None = None
    span: Any = None  # the request's trace span, when traces are exported (routing.tracing)
    # A guarded rollout's counts this request feeds (routing.guard): its id and side.
    guard: int = 0
    arm: int = 0
    # (tenant, router path, body) when the tenant has a shadow: offered once answered.
    shadow: tuple[TenantEntry, str, RequestBody] | None = None


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
        tracing: Tracing | None = None,
        shared_state: Store | None = None,
    ) -> None:
        self.holder = holder
        self.transport = transport
        self.conf = conf or get_conf()
        self.health = health or HealthRegistry.from_conf(self.conf)
        self.stats = stats or Stats()
        self.disconnects = DisconnectWatch()
        self.balancer = Balancer()
        self.upstream = Upstream(transport=transport, health=self.health, conf=self.conf,
                                 on_retry=self._count_retry, tracing=tracing)
        self.script_guard = script_guard
        self.tracing = tracing
        self.shadow = ShadowRunner(healthy=self.health.is_healthy, guard=script_guard)
        # The worker's one shared-state store (Redis, or this process's memory); its Redis
        # client connects on first use, in the worker's event loop.
        self.shared_state = shared_state or store_from_conf(
            self.conf, self.stats.shared_state_unavailable)

    @property
    def budget(self) -> Any:  # the retry budget (tests drain it)
        return self.upstream.budget

    def _count_retry(self) -> None:
        self.stats.retries += 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"the gateway serves http only, not {scope['type']!r}")
        started = time.perf_counter()
        ex = Exchange(connection=respond.server_connection(scope))
        # Log records written while this request is handled carry its id, tenant and route.
        bound = current_request.set(ex)
        try:
            await self._serve(scope, receive, send, ex, started)
        finally:
            current_request.reset(bound)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, ex: Exchange,
                     started: float) -> None:
        request: ClientRequest | None = None
        tracing = self.tracing
        try:
            request = parse_scope(scope, self.conf)
            ex.request_id = request.request_id
            if tracing is not None:
                ex.span = tracing.start_request(request.headers, request.method)
            await self._handle(request, receive, send, ex)
        except _ClientGone:
            ex.status, ex.error = 499, "client_disconnected"
        except GatewayError as error:
            ex.request_id = ex.request_id or new_request_id()
            ex.status, ex.error = error.status, error.code
            if error.status >= 500:
                log.warning("%s %s: %s (request %s)", error.status, error.code, error.detail,
                            ex.request_id)
            ex.sent = await respond.send_error(send, error, ex.request_id, ex.config)
        except respond.ResponseAborted:  # the server is meant to drop the connection
            raise
        except Exception:  # the last resort: a bug must not become the server's HTML 500
            ex.request_id = ex.request_id or new_request_id()
            ex.error = "internal_error"
            log.exception("request %s: unexpected error in the gateway", ex.request_id)
            sent = await respond.send_internal_error(scope, send, ex.request_id, ex.config)
            if sent is not None:  # else the response had started: its status is what was sent
                ex.status, ex.sent = 500, sent
        finally:
            total = time.perf_counter() - started
            if ex.span is not None:
                tracing.finish_request(ex.span, ex, scope.get("method", ""))  # type: ignore
            self.stats.observe(ex, total, scope, request)
            if ex.shadow is not None and request is not None:  # answered: now the shadow
                tenant, path, body = ex.shadow
                self.shadow.offer(tenant, request, path, body.prefix if body.complete else b"")
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
        ex.tenant, ex.version = tenant.slug, tenant.version_number
        if tenant.config_header is not None:
            ex.config = tenant.config_header
        if tenant.unavailable:
            raise TenantUnavailable(f"Tenant {tenant.slug!r} is unavailable: "
                                    f"{tenant.unavailable}.", retry_after=self.conf.retry_after_s)
        conf = self.conf
        body = RequestBody(receive, conf.chunk_bytes, conf.replay_body_bytes,
                           conf.body_timeout_s)
        script = tenant.script
        if script is None:
            await self._answer(tenant, request, match.path, None, body, None, receive, send, ex)
            return
        version_id = tenant.version_id or 0
        if tenant.rollout is not None or tenant.guard:
            script, version_id = self._pick(tenant, request, ex)
        if tenant.shadow is not None:
            ex.shadow = (tenant, match.path, body)
        waited: list[LiveEffects] = []  # the live effects, made only if the script waits
        try:
            outcome = await self._run_script(tenant, request, match.path, ex, body, waited,
                                             script=script, version_id=version_id)
            await self._answer(tenant, request, match.path, outcome, body,
                               waited[0] if waited else None, receive, send, ex)
        finally:
            if waited:
                waited[0].close()

    @staticmethod
    def _pick(tenant: TenantEntry, request: ClientRequest, ex: Exchange) -> tuple[Any, int]:
        """The version that answers: a running rollout's for its share of the keys
        (routing.rollout), else the active one; which side a guard counts it on."""
        rollout = tenant.rollout
        if rollout is not None and rollout.takes(request):
            ex.version, ex.config = rollout.version_number, rollout.config_header
            ex.guard, ex.arm = tenant.guard, NEW
            return rollout.script, rollout.version_id
        # Without a rollout entry the guard watches a full activation: all of it is new.
        ex.guard, ex.arm = tenant.guard, OLD if rollout is not None else NEW
        return tenant.script, tenant.version_id or 0

    async def _run_script(self, tenant: TenantEntry, request: ClientRequest, path: str,
                          ex: Exchange, body: RequestBody, waited: list[LiveEffects], *,
                          websocket: bool = False, effects: type[LiveEffects] = LiveEffects,
                          script: Any = None, version_id: int | None = None,
                          **effect_args: Any) -> Outcome:
        """The script's outcome (routing.websocket runs the same steps for an upgrade, with
        `websocket=True` and its own effects class). `script` and `version_id`: the version
        `_pick` chose during a rollout; the tenant's active one by default."""
        if script is None:
            script, version_id = tenant.script, tenant.version_id
        elif script is not tenant.script and script.is_selector != tenant.is_selector:
            tenant = replace(tenant, is_selector=script.is_selector)  # a rollout's other kind
        assert script is not None
        version_id = version_id or 0
        sreq = script_request(tenant, request, path, self.health.is_healthy, websocket=websocket)
        guard = self.script_guard
        span = None
        if ex.span is not None:
            span = self.tracing.child(ex.span, "script",  # type: ignore[union-attr]
                                      attributes={"chistone.version": ex.version})
        lua_started = time.perf_counter()
        try:
            # The first step inline (most scripts are done after it); the driver only for
            # scripts that wait.
            if guard is not None:
                guard[0](tenant.slug, version_id)
            try:
                step = script.start(sreq)
            finally:
                if guard is not None:
                    guard[1]()
            if isinstance(step, ScriptRun):
                live = effects(
                    upstream=self.upstream, tenant=tenant, request=request, router_path=path,
                    body=body, ex=ex, conf=self.conf, limits=script.limits,
                    balancer=self.balancer, stats=self.stats, span=span,
                    state=self.shared_state, **effect_args)
                waited.append(live)
                step = await drive(step, live, guard=guard, tenant=tenant.slug,
                                   version=version_id)
            # Lua time: the script's own steps, not the waits between them.
            ex.lua = step.lua_seconds or time.perf_counter() - lua_started
        except BodyUnavailable as exc:
            # req.body() failed for the client's reason and the script let it through.
            ex.lua = time.perf_counter() - lua_started - (ex.upstream or 0.0)
            self._script_logs(tenant, request, getattr(exc, "logs", ()))
            raise body_error(exc, tenant.slug, script.limits.max_request_body_bytes) from None
        except ResponseUnavailable as exc:
            # res.body() failed for the backend's reason and the script let it through.
            ex.lua = time.perf_counter() - lua_started - (ex.upstream or 0.0)
            self._script_logs(tenant, request, getattr(exc, "logs", ()))
            raise response_error(exc, script.limits.max_response_body_bytes) from None
        except Exception as exc:  # ScriptRuntimeError, ScriptTimeoutError, ScriptMemoryError
            ex.lua = time.perf_counter() - lua_started - (ex.upstream or 0.0)
            if body.disconnected:
                raise _ClientGone() from None
            kind = type(exc).__name__
            self.stats.lua_error(tenant.slug, kind)
            self._script_logs(tenant, request, getattr(exc, "logs", ()))
            # Tenant text goes into the log on one line: a newline in error(...) must not let
            # a script forge log lines (another tenant's access-log entry, say).
            message = one_line(str(exc))
            log.error("tenant %s v%s request %s: %s: %s | traceback: %s", tenant.slug,
                      ex.version, request.request_id, kind, message,
                      one_line(getattr(exc, "lua_traceback", "") or ""))
            raise ScriptFailed(f"{kind}: {message}") from None
        finally:
            if span is not None:
                span.set_attribute("chistone.lua_ms", round(ex.lua * 1000, 3))
                span.end()
        outcome = step
        if outcome.route_pattern:  # before the script's log lines, which are tagged with it
            ex.route = outcome.route_pattern
        if outcome.logs:
            self._script_logs(tenant, request, outcome.logs, ex)
        return outcome

    @staticmethod
    def _script_logs(tenant: TenantEntry, request: ClientRequest, logs: Any,
                     ex: Exchange | None = None) -> None:
        for level, message in logs or ():
            if level.startswith("trace."):  # trace.set / trace.event: for the span
                if ex is not None and ex.span is not None:
                    apply_script_entries(ex.span, ((level, message),))
                continue
            numeric = logging.getLevelName(level.upper())
            script_log.log(numeric if isinstance(numeric, int) else logging.INFO,
                           "tenant=%s request_id=%s %s", tenant.slug, request.request_id,
                           message)

    # -- answering ----------------------------------------------------------------------------
    async def _answer(self, tenant: TenantEntry, request: ClientRequest, path: str,
                      outcome: Outcome | None, body: RequestBody, effects: LiveEffects | None,
                      receive: Receive, send: Send, ex: Exchange) -> None:
        patch = outcome.patch if outcome is not None else None
        if outcome is not None and type(outcome.action) is ExchangeAction:
            assert effects is not None
            opened = effects.take(outcome.action.exchange)
            try:
                await self._answer_opened(opened, request, send, ex, patch)
            finally:
                opened.close()
            return
        try:
            decision = decide(tenant, request, path, outcome,
                              healthy=self.health.is_healthy, balancer=self.balancer,
                              total_timeout_s=self.conf.upstream_total_timeout_s)
        except ScriptFailed as exc:
            log.error("tenant %s request %s: %s", tenant.slug, request.request_id, exc.detail)
            raise
        except GatewayError as error:
            if patch is None:
                raise
            await self._send_error(error, request, send, ex, patch)
            return
        if type(decision) is UpstreamPlan:
            payload = decision_payload(outcome, body) if outcome is not None else None
            await self._proxy(decision, request, body, payload, receive, send, ex, patch)
            return
        await self._send_direct(decision.status, list(decision.headers), decision.body,
                                request, send, ex, patch)

    async def _answer_opened(self, opened: Opened, request: ClientRequest, send: Send,
                             ex: Exchange, patch: ResponsePatch | None) -> None:
        if opened.backend is not None:
            ex.backend = opened.backend.name
        if opened.error is not None or opened.response is None:
            error = opened.error
            assert error is not None
            await self._send_error(error, request, send, ex, patch)
            return
        await self._relay(opened.response, opened.backend, request, send, ex, patch,
                          prefix=opened.prefix, complete=opened.complete)
        opened.response = None  # released or aborted by _relay

    async def _send_error(self, error: GatewayError, request: ClientRequest, send: Send,
                          ex: Exchange, patch: ResponsePatch | None) -> None:
        status, headers, body = error_response(error, request.request_id)
        ex.error = error.code
        await self._send_direct(status, headers, body, request, send, ex, patch)

    async def _send_direct(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes,
                           request: ClientRequest, send: Send, ex: Exchange,
                           patch: ResponsePatch | None) -> None:
        """A complete answer, with the patch applied; framing and the request id are ours."""
        status, out, body = frame_answer(status, headers, body, request.request_id, patch)
        if ex.config is not None:
            out.append(ex.config)
        ex.status = status
        ex.sent = len(body)
        await respond.send_response(send, status, out, body)

    # -- proxying ---------------------------------------------------------------------------
    async def _proxy(self, plan: UpstreamPlan, request: ClientRequest, body: RequestBody,
                     payload: bytes | None, receive: Receive, send: Send, ex: Exchange,
                     patch: ResponsePatch | None) -> None:
        if payload is None:
            await body.read_ahead()
            if body.disconnected:
                raise _ClientGone()
        # While the backend answers, a client that leaves cancels the exchange (499).
        task = asyncio.current_task()
        assert task is not None
        watched = None if body.more else self.disconnects.watch(task, receive)
        response: UpstreamResponse | None = None
        upstream_started = time.perf_counter()
        try:
            response, backend = await self.upstream.send(plan, request, body, ex, payload)
            ex.upstream = (ex.upstream or 0.0) + time.perf_counter() - upstream_started
            ex.backend = backend.name
            await self._relay(response, backend, request, send, ex, patch)
            response = None
        except asyncio.CancelledError:
            if watched is None or not watched.disconnected:
                raise
            task.uncancel()
            ex.status, ex.error = 499, "client_disconnected"
        except GatewayError as error:
            if ex.upstream is None or response is None:
                ex.upstream = (ex.upstream or 0.0) + time.perf_counter() - upstream_started
            if patch is None:
                raise
            await self._send_error(error, request, send, ex, patch)
        finally:
            if watched is not None:
                self.disconnects.done(watched)
            if response is not None:
                response.close()

    async def _relay(self, response: UpstreamResponse, backend: BackendEntry | None,
                     request: ClientRequest, send: Send, ex: Exchange,
                     patch: ResponsePatch | None, *, prefix: bytes = b"",
                     complete: bool = False) -> None:
        status = patch_status(response.status, patch)
        bodiless = request.method == "HEAD" or status in (204, 304) or status < 200
        headers = downstream_headers(response.raw_headers, request_id=request.request_id,
                                     head_or_bodiless=bodiless)
        replaced = patch is not None and patch.body is not None
        if replaced or complete:
            whole = patch.body if replaced else prefix  # type: ignore[union-attr]
            assert whole is not None
            if bodiless:
                whole = b""
            if patch is not None or complete:
                headers = patch_headers(headers, patch or ResponsePatch(),
                                        body_length=None if bodiless else len(whole))
            if ex.config is not None:
                headers.append(ex.config)
            ex.status = status
            if replaced and not complete:
                response.close()  # the script answered with its own body: drop the backend's
            else:
                response.release()
            await respond.send_response(send, status, headers, whole)
            ex.sent = len(whole)
            if backend is not None:
                self.health.record_success(backend)
            return
        headers = patch_headers(headers, patch)
        if ex.config is not None:
            headers.append(ex.config)
        ex.status = status
        chunk = prefix
        at_eof = False
        if not chunk and response.ready():  # a small answer is usually complete already
            try:
                chunk = await response.read_chunk()
            except UpstreamError as exc:  # nothing went to the client yet: answer an error
                if backend is not None:
                    self.health.record_failure(backend, f"{type(exc).__name__}: {exc}")
                    raise upstream_error(exc, backend) from None
                raise
            at_eof = response.at_eof()
        await respond.send_response_start(send, status, headers)
        if at_eof:
            await send({"type": "http.response.body", "body": chunk})
            ex.sent = len(chunk)
            response.release()
            if backend is not None:
                self.health.record_success(backend)
            return
        sent = 0
        try:
            if not chunk:
                chunk = await response.read_chunk()
            while chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += len(chunk)
                await respond.wait_writable(ex.connection)
                chunk = await response.read_chunk()
        except UpstreamError as exc:
            ex.sent = sent
            ex.error = "upstream_broke_mid_body"
            name = backend.name if backend is not None else "?"
            if backend is not None:
                self.health.record_failure(backend, f"{type(exc).__name__} mid-body: {exc}")
            log.warning("request %s: backend %s broke after %d bytes (%s); aborting the client "
                        "connection", request.request_id, name, sent, exc)
            response.close()
            await respond.abort(ex.connection)
            return
        ex.sent = sent
        await send({"type": "http.response.body", "body": b""})
        response.release()
        if backend is not None:
            self.health.record_success(backend)


class _ClientGone(Exception):
    """The client disconnected before its request could be answered (logged as 499)."""


def body_error(exc: BodyUnavailable, tenant: str, limit: int) -> Exception:
    """The answer for a request whose script could not have its body (one place for the
    data plane and the dry run)."""
    if exc.reason == "too_large":
        return PayloadTooLarge(f"The request body is larger than this route accepts "
                               f"({limit} bytes).")
    if exc.reason == "timeout":
        return RequestTimeout("The request body did not arrive in time.")
    if exc.reason == "memory":
        log.warning("tenant %s: %s", tenant, one_line(str(exc)))
        return ScriptBusy(f"Tenant {tenant!r} is handling too many request bodies at once; "
                          "retry shortly.", retry_after=1)
    return _ClientGone()


def response_error(exc: ResponseUnavailable, limit: int) -> GatewayError:
    """The answer for a request whose script could not read a backend's body."""
    if exc.reason == "too_large":
        return ResponseTooLarge(f"The backend's answer is larger than this route's script may "
                                f"read ({limit} bytes).")
    if exc.reason == "timeout":
        return GatewayTimeout("The backend's answer did not arrive in time.")
    return BackendBroke("The backend closed the connection or sent an invalid response.")


def decision_payload(outcome: Outcome | None, body: RequestBody) -> bytes | None:
    """The body to send upstream when it is not the client's stream: a script's
    proxy{body = ...}, or the body the script read (forwarded unchanged)."""
    if outcome is not None:
        action_body = getattr(outcome.action, "body", None)
        if isinstance(action_body, bytes):
            return action_body
    if body.complete:
        return body.prefix
    return None


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7f)} | {0x0a: "\\n", 0x0d: "\\r",
                                                              0x09: "\\t"}


def one_line(text: str, limit: int = 4096) -> str:
    """Tenant-supplied text made safe for a log line: control characters escaped, bounded."""
    return text[:limit].translate(_CONTROL)
