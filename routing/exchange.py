"""One request's dealings with the world: its body, its upstream exchanges, its calls.

- `RequestBody`: the client's body, read lazily from ASGI `receive`. Proxying reads ahead up
  to the replay size (so a small body can be sent again on a retry or a fallback) and
  streams the rest; `req.body()` reads it whole, up to the tenant's limit.
- `Upstream`: sends a planned request to a backend, retrying on another backend only when
  that is safe (nothing sent, or an idempotent method before any answer), within a retry
  budget; failures become the data plane's errors (502/504).
- `LiveEffects`: what a waiting script gets on the data plane (routing.script_run.Effects):
  the body, real upstream exchanges opened when a middleware looks at a response (kept as
  `Opened` until the script's final answer names one), real calls to the tenant's backends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from luascripts.engine.effects import (
    BodyAnswer,
    Call,
    CallAnswer,
    Head,
    JwtAnswer,
    LimitAnswer,
    LimitCheck,
    OpenUpstream,
    ReadResponseBody,
    Render,
    RenderAnswer,
    SharedAnswer,
    SharedOp,
    VerifyJwt,
)
from routing.conf import GatewayConf
from routing.errors import (
    BackendBroke,
    BackendRefused,
    BodyNotReplayable,
    ConnectTimeout,
    GatewayError,
    GatewayTimeout,
    error_response,
    reject_error,
)
from routing.health import HealthRegistry
from routing.jwt_verify import JwksCache, max_age, token_header, verify_effect
from routing.plan import UpstreamPlan, call_plan, decide
from routing.request import ClientRequest
from routing.snapshot import BackendEntry, TenantEntry
from routing.tracing import Tracing
from routing.types import Receive
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

_JWKS_TIMEOUT_MS = 5000  # one JWKS fetch, connect and answer
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class RequestBody:
    """The client's body: bytes when small enough to send again, else a one-shot stream.

    Nothing is read until proxying (`read_ahead`) or the script (`read_all`) needs it."""

    __slots__ = ("chunk", "complete", "disconnected", "more", "prefix", "receive",
                 "replay_bytes", "started", "timeout_s")

    def __init__(self, receive: Receive, chunk: int, replay_bytes: int,
                 timeout_s: float = 30.0) -> None:
        self.receive = receive
        self.timeout_s = timeout_s
        self.prefix = b""  # bytes read so far and not yet sent
        self.more = True  # more bytes may follow the prefix
        self.chunk = chunk
        self.replay_bytes = replay_bytes
        self.started = False  # the stream has been (partly) sent upstream
        self.disconnected = False
        self.complete = False  # read whole by the script: `prefix` is the body

    async def _receive(self) -> bool:
        """Append the next message to the prefix; False when the client disconnected."""
        message = await self.receive()
        if message["type"] == "http.disconnect":
            self.disconnected = True
            self.more = False
            return False
        self.prefix += message.get("body", b"")
        self.more = message.get("more_body", False)
        return True

    async def read_ahead(self) -> None:
        """Read up to the replay size: a body that ends within it stays replayable."""
        if self.started:
            return
        while self.more and len(self.prefix) <= self.replay_bytes:
            if not await self._receive():
                return

    async def read_all(self, limit: int) -> BodyAnswer:
        """The whole body, or why not ("too_large": more than `limit` bytes, what was read
        stays the prefix of the stream; "timeout": not all there within the body timeout;
        "disconnected")."""
        if self.complete:
            return BodyAnswer(self.prefix)
        if self.started:
            return BodyAnswer(error="already sent to a backend")
        try:
            async with asyncio.timeout(self.timeout_s):
                while self.more and len(self.prefix) <= limit:
                    if not await self._receive():
                        return BodyAnswer(error="disconnected")
        except TimeoutError:
            return BodyAnswer(error="timeout")
        if len(self.prefix) > limit:
            return BodyAnswer(error="too_large")
        self.complete = True
        return BodyAnswer(self.prefix)

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
        if self.prefix:
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


class Upstream:
    """Sends planned requests: the process's transport, health, retry budget and counters."""

    def __init__(self, *, transport: Transport, health: HealthRegistry, conf: GatewayConf,
                 on_retry: Callable[[], None], tracing: Tracing | None = None) -> None:
        self.transport = transport
        self.health = health
        self.conf = conf
        self.budget = RetryBudget(conf.retry_budget_ratio, conf.retry_budget_min)
        self.on_retry = on_retry
        self.tracing = tracing
        # The worker's JWKS keys for jwt.verify (routing.jwt_verify), fetched with this
        # process's transport.
        self.jwks = JwksCache(refresh_s=conf.jwks_refresh_s,
                              min_refresh_s=conf.jwks_min_refresh_s)

    async def send(self, plan: UpstreamPlan, request: ClientRequest, body: RequestBody,
                   ex: Any, payload: bytes | None = None, parent: Any = None
                   ) -> tuple[UpstreamResponse, BackendEntry]:
        """The response head from the first backend that answers; raises a GatewayError.
        `payload` replaces the client's body (a script's proxy{body=...} or a body it read).
        With traces on, each attempt is a span under `parent` (else the request's span)."""
        if parent is None:
            parent = ex.span
        self.budget.deposit()
        backend = plan.backend
        fallbacks = list(plan.fallbacks)
        tries = 0
        while True:
            headers = plan.headers_for(backend)
            if payload is not None:
                data: Body = payload
            else:
                if not body.replayable:
                    raise BodyNotReplayable(
                        "The request body was streamed to a backend already and cannot be "
                        "sent again.")
                data = body.payload()
                if body.more:
                    length = next((v for k, v in request.headers if k == "content-length"),
                                  None)
                    if length is not None:
                        headers.append(("content-length", length))
            try:
                if parent is None or self.tracing is None:
                    response = await self.transport.send(
                        plan.method, plan.url_for(backend), headers, data,
                        connect=plan.connect_timeout_s, read=plan.read_timeout_s,
                        total=plan.total_timeout_s)
                    return response, backend
                with self.tracing.client_span(parent, f"upstream {backend.name}", headers, {
                        "chistone.backend": backend.name, "http.request.method": plan.method,
                        "chistone.attempt": tries + 1}) as span:
                    response = await self.transport.send(
                        plan.method, plan.url_for(backend), headers, data,
                        connect=plan.connect_timeout_s, read=plan.read_timeout_s,
                        total=plan.total_timeout_s)
                    span.set_attribute("http.response.status_code", response.status)
                return response, backend
            except UpstreamError as exc:
                ex.backend = backend.name
                self.health.record_failure(backend, f"{type(exc).__name__}: {exc}")
                retry = self._retryable(exc, plan.method, body, payload is not None)
                fallbacks = [b for b in fallbacks if self.health.is_healthy(b)]
                if retry and fallbacks and tries < self.conf.retries and self.budget.withdraw():
                    tries += 1
                    ex.retries += 1
                    self.on_retry()
                    log.info("request %s: %s failed (%s), retrying on %s", request.request_id,
                             backend.name, type(exc).__name__, fallbacks[0].name)
                    backend = fallbacks.pop(0)
                    continue
                raise upstream_error(exc, backend) from None

    @staticmethod
    def _retryable(exc: UpstreamError, method: str, body: RequestBody, bytes_body: bool) -> bool:
        if body.disconnected:
            return False
        if bytes_body:
            return not exc.sent or (isinstance(exc, Broken) and method in IDEMPOTENT)
        if not exc.sent:
            return body.replayable
        return isinstance(exc, Broken) and method in IDEMPOTENT and not body.more


def upstream_error(exc: UpstreamError, backend: BackendEntry) -> GatewayError:
    name = backend.name
    if isinstance(exc, ConnectFailed):
        return BackendRefused(f"Backend {name!r} refused the connection or could not be reached.")
    if isinstance(exc, ConnectTimedOut):
        return ConnectTimeout(f"Backend {name!r} did not accept a connection in time.")
    if isinstance(exc, ReadTimedOut):
        return GatewayTimeout(f"Backend {name!r} did not answer in time.")
    return BackendBroke(f"Backend {name!r} closed the connection or sent an invalid response.")


async def read_bounded(response: UpstreamResponse, limit: int) -> tuple[bytes, bool]:
    """(bytes read, complete): reads until the end or until more than `limit` bytes."""
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await response.read_chunk()
        if not chunk:
            return b"".join(parts), True
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts), False


@dataclass(slots=True)
class Opened:
    """An upstream exchange a script opened; `error` when the gateway answered instead."""

    backend: BackendEntry | None = None
    response: UpstreamResponse | None = None
    error: GatewayError | None = None
    prefix: bytes = b""  # body bytes already read for the script
    complete: bool = False  # `prefix` is the whole body

    def close(self) -> None:
        if self.response is not None:
            self.response.close()
            self.response = None


class LiveEffects:
    """The data plane's answers to a waiting script (routing.script_run.Effects)."""

    def __init__(self, *, upstream: Upstream, tenant: TenantEntry, request: ClientRequest,
                 router_path: str, body: RequestBody, ex: Any, conf: GatewayConf,
                 limits: Any, balancer: Any, stats: Any, span: Any = None,
                 state: Any = None) -> None:
        self.upstream = upstream
        self.tenant = tenant
        self.request = request
        self.router_path = router_path
        self.body = body
        self.ex = ex
        self.conf = conf
        self.limits = limits
        self.balancer = balancer
        self.stats = stats
        self.span = span  # the script's trace span: calls and exchanges go under it
        self.opened: dict[int, Opened] = {}
        self.state = state  # the worker's shared-state store (routing.shared_state)

    async def read_body(self) -> BodyAnswer:
        return await self.body.read_all(self.limits.max_request_body_bytes)

    def plan(self, effect: OpenUpstream) -> UpstreamPlan:
        """The upstream plan of the proxy a middleware looked at (raises GatewayError)."""
        plan = decide(self.tenant, self.request, self.router_path, _outcome(effect),
                      healthy=self.upstream.health.is_healthy, balancer=self.balancer,
                      total_timeout_s=self.conf.upstream_total_timeout_s)
        assert isinstance(plan, UpstreamPlan)
        return plan

    async def open_upstream(self, effect: OpenUpstream) -> Head:
        opened = Opened()
        self.opened[effect.exchange] = opened
        started = time.perf_counter()
        try:
            plan = self.plan(effect)
            payload = effect.action.body
            if payload is None and self.body.complete:
                payload = self.body.prefix
            if payload is None:
                await self.body.read_ahead()
            opened.response, opened.backend = await self.upstream.send(
                plan, self.request, self.body, self.ex, payload, parent=self.span)
        except GatewayError as error:
            if error.status >= 500:
                log.warning("request %s: a script's upstream exchange failed: %s %s: %s",
                            self.request.request_id, error.status, error.code, error.detail)
            opened.error = error
            status, headers, _body = error_response(error, self.request.request_id)
            return Head(status, _text_pairs(headers), None)
        finally:
            self.ex.upstream = (self.ex.upstream or 0.0) + time.perf_counter() - started
        response = opened.response
        return Head(response.status, _text_pairs(response.raw_headers), opened.backend.name)

    async def read_response_body(self, effect: ReadResponseBody) -> BodyAnswer:
        opened = self.opened[effect.exchange]
        if opened.error is not None:
            _status, _headers, body = error_response(opened.error, self.request.request_id)
            return BodyAnswer(body)
        if opened.complete:
            return BodyAnswer(opened.prefix)
        assert opened.response is not None
        limit = self.limits.max_response_body_bytes
        try:
            data, complete = await read_bounded(opened.response, limit - len(opened.prefix))
        except UpstreamError as exc:
            self.upstream.health.record_failure(opened.backend, f"{type(exc).__name__}: {exc}")
            opened.close()
            opened.error = upstream_error(exc, opened.backend)  # type: ignore[arg-type]
            return BodyAnswer(error="timeout" if isinstance(exc, ReadTimedOut) else "broken")
        opened.prefix += data
        if not complete:
            return BodyAnswer(error="too_large")
        opened.complete = True
        opened.response.release()
        self.upstream.health.record_success(opened.backend)  # type: ignore[arg-type]
        return BodyAnswer(opened.prefix)

    async def call(self, effect: Call) -> CallAnswer:
        backend = self.tenant.backends.get(effect.backend)
        if backend is None or not backend.enabled:
            return CallAnswer(error="refused")
        started = time.perf_counter()
        plan = call_plan(backend, effect, request_id=self.request.request_id)
        headers = list(plan.headers)
        tracing = self.upstream.tracing
        span = None
        if tracing is not None and self.span is not None:
            span = tracing.child(self.span, f"call {backend.name}", client=True, attributes={
                "chistone.backend": backend.name, "http.request.method": plan.method,
                "url.path": effect.path})
            tracing.inject(span, headers)
        answer = await self._call(backend, plan, headers, effect.body)
        outcome = answer.error or "ok"
        self.stats.call(self.tenant.slug, effect.backend, outcome,
                        time.perf_counter() - started)
        if span is not None:
            tracing.end(span, status=answer.status or None,  # type: ignore[union-attr]
                        error=answer.error)
        return answer

    async def _call(self, backend: BackendEntry, plan: Any, headers: list[tuple[str, str]],
                    body: bytes) -> CallAnswer:
        health = self.upstream.health
        try:
            response = await self.upstream.transport.send(
                plan.method, plan.url, headers, body or None,
                connect=plan.connect_timeout_s, read=plan.read_timeout_s,
                total=plan.total_timeout_s)
        except (ConnectFailed, ConnectTimedOut) as exc:
            health.record_failure(backend, f"{type(exc).__name__}: {exc}")
            return CallAnswer(error="refused" if isinstance(exc, ConnectFailed) else "timeout")
        except UpstreamError as exc:
            health.record_failure(backend, f"{type(exc).__name__}: {exc}")
            return CallAnswer(error="timeout" if isinstance(exc, ReadTimedOut) else "broken")
        try:
            data, complete = await read_bounded(response, self.limits.max_response_body_bytes)
        except UpstreamError as exc:
            response.close()
            return CallAnswer(error="timeout" if isinstance(exc, ReadTimedOut) else "broken")
        if not complete:
            response.close()
            return CallAnswer(error="too_large")
        response.release()
        health.record_success(backend)
        return CallAnswer(response.status, _text_pairs(response.raw_headers), data)

    async def render(self, effect: Render) -> RenderAnswer:
        status, headers, body = render_error_for(effect, self.request.request_id)
        return RenderAnswer(status, _text_pairs(headers), body)

    async def verify_jwt(self, effect: VerifyJwt) -> JwtAnswer:
        if effect.jwks_backend is None or effect.jwks_path is None:
            return verify_effect(effect, None)
        cache = self.upstream.jwks
        where = (self.tenant.slug, effect.jwks_backend, effect.jwks_path)
        fetch = self._jwks_fetch(effect.jwks_backend, effect.jwks_path)
        jwks = await cache.keys(where, fetch)
        answer = verify_effect(effect, jwks)
        if answer.error == "unknown_key":
            # A kid the cached keys lack (a rotation?): one refresh may know it, at most one
            # per interval and JWKS (JwksCache).
            parsed = token_header(effect.token)
            kid = None if isinstance(parsed, str) else parsed[1].get("kid")
            if kid is not None:
                fresher = await cache.keys(where, fetch, kid)
                if fresher is not jwks:
                    answer = verify_effect(effect, fresher)
        return answer

    def _jwks_fetch(self, name: str, path: str) -> Any:
        """A JWKS fetch from the tenant's backend `name`, as http.request would make it; it
        may run in the background after this request is done."""
        tenant, stats = self.tenant, self.stats

        async def fetch() -> tuple[bytes, float | None] | None:
            backend = tenant.backends.get(name)
            if backend is None or not backend.enabled:
                return None
            effect = Call(backend=name, method="GET", path=path, query="",
                          headers=(("accept", "application/json"),), body=b"",
                          timeout_ms=_JWKS_TIMEOUT_MS)
            plan = call_plan(backend, effect, request_id=self.request.request_id)
            started = time.perf_counter()
            answer = await self._call(backend, plan, list(plan.headers), b"")
            ok = answer.error is None and answer.status == 200
            stats.call(tenant.slug, name, answer.error or ("ok" if ok else "broken"),
                       time.perf_counter() - started)
            if not ok:
                return None
            cache_control = next((v for k, v in answer.headers
                                  if k.lower() == "cache-control"), None)
            return answer.body, max_age(cache_control)

        return fetch

    async def shared(self, effect: SharedOp) -> SharedAnswer:
        return await self.state.shared(self.tenant.slug, effect)

    async def limit(self, effect: LimitCheck) -> LimitAnswer:
        return await self.state.limit(self.tenant.slug, effect)

    def take(self, exchange: int) -> Opened:
        """The exchange the script's final answer names; the others are closed by close()."""
        return self.opened.pop(exchange)

    def close(self) -> None:
        for opened in self.opened.values():
            opened.close()
        self.opened.clear()


def render_error_for(effect: Render, request_id: str
                     ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The gateway's own answer for a reject or the router's 404/405, as the client gets it
    (x-request-id aside, which is added to every answer)."""
    error = reject_error(effect.status, effect.message or "", effect.allow)
    return error_response(error, request_id)


def _outcome(effect: OpenUpstream) -> Any:
    from luascripts.engine.types import Outcome

    return Outcome(effect.action, request_headers=effect.request_headers)


def _text_pairs(headers: Any) -> tuple[tuple[str, str], ...]:
    return tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers)
