"""Stub effects: a waiting script's answers in the dry run and script tests, never the network.

The dry run (API simulate, the admin console, `chistone simulate`) and stored script tests
drive scripts through the same driver as the data plane (routing.script_run) with these
effects instead of the live ones. Answers come from stubs given with the request:

    upstream  {backend name: {"status", "headers", "body"}}  what a proxied backend answers
    calls     {backend name: {"status", "headers", "body"}}  what http.request gets
    either may instead be {"error": "refused" | "timeout" | "broken"} to play a failure

jwt.verify verifies for real with the script's own keys; a JWKS it names comes from the
`calls` stub of that backend (its body, when the status is 200), else the call answers
"keys_unavailable" for tokens those keys do not cover.

Without a stub, a middleware that looks at a proxied response stops the run at the upstream
plan (`NoStub`), and http.request returns nil, "no_stub". Every call and exchange is
recorded for display. Nothing here awaits real I/O: `run_sync` drives a coroutine that uses
only these effects to its end without an event loop.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
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
from luascripts.engine.types import Limits, Outcome
from routing.errors import (
    BackendBroke,
    BackendRefused,
    GatewayError,
    GatewayTimeout,
    error_response,
)
from routing.exchange import render_error_for
from routing.jwt_verify import parse_jwks, verify_effect
from routing.plan import Healthy, UpstreamPlan, call_plan, decide
from routing.request import ClientRequest
from routing.shared_state import LocalStore
from routing.snapshot import TenantEntry

STUB_ERRORS = ("refused", "timeout", "broken")


class StubError(ValueError):
    """A stub that is not {status, headers, body} or {error}; the message says why."""


@dataclass(frozen=True, slots=True)
class Stub:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    error: str | None = None

    @classmethod
    def parse(cls, value: Any, where: str) -> Stub:
        if not isinstance(value, Mapping):
            raise StubError(f"{where}: a stub is an object {{status, headers, body}} or "
                            "{error}")
        unknown = set(value) - {"status", "headers", "body", "error"}
        if unknown:
            raise StubError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        error = value.get("error")
        if error is not None:
            if error not in STUB_ERRORS:
                raise StubError(f"{where}.error must be one of {', '.join(STUB_ERRORS)}")
            return cls(error=error)
        status = value.get("status", 200)
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            raise StubError(f"{where}.status must be an integer from 100 to 599")
        headers = value.get("headers") or {}
        items = headers.items() if isinstance(headers, Mapping) else headers
        pairs: list[tuple[str, str]] = []
        try:
            for name, item in items:
                pairs.append((str(name).lower(), str(item)))
        except (TypeError, ValueError):
            raise StubError(f"{where}.headers must be an object or a list of "
                            "[name, value] pairs") from None
        for name, item in pairs:
            if not name or any(c in name for c in " :\r\n\0") or any(c in item
                                                                      for c in "\r\n\0"):
                raise StubError(f"{where}.headers: {name!r} is not a valid header")
        body = value.get("body", "")
        if not isinstance(body, str):
            raise StubError(f"{where}.body must be a string")
        return cls(status, tuple(pairs), body.encode("utf-8"))


def parse_stubs(value: Any, where: str) -> dict[str, Stub]:
    if value in (None, ""):
        return {}
    if not isinstance(value, Mapping):
        raise StubError(f"{where} must be an object of backend name -> stub")
    return {str(name): Stub.parse(stub, f"{where}.{name}") for name, stub in value.items()}


MAX_SHARED_SEED = 1000  # keys a dry run may seed


def parse_shared_seed(value: Any, where: str) -> dict[str, str | int | float]:
    """`{"key": value}` a dry run or script test starts its private shared state with:
    keys of 1 to 512 bytes, values strings up to 64 KiB or finite numbers (what
    shared.set accepts). Keys and strings as Lua sees them: their UTF-8 bytes."""
    if value in (None, ""):
        return {}
    if not isinstance(value, Mapping):
        raise StubError(f"{where} must be an object of key -> value")
    if len(value) > MAX_SHARED_SEED:
        raise StubError(f"{where} has more than {MAX_SHARED_SEED} keys")
    seed: dict[str, str | int | float] = {}
    for key, item in value.items():
        raw = str(key).encode("utf-8")
        if not 1 <= len(raw) <= 512:
            raise StubError(f"{where}: a key must be 1 to 512 bytes")
        if isinstance(item, str):
            data = item.encode("utf-8")
            if len(data) > 64 * 1024:
                raise StubError(f"{where}.{key}: a value is at most 65536 bytes")
            item = data.decode("latin-1")
        elif isinstance(item, bool) or not isinstance(item, int | float) \
                or item != item or item in (float("inf"), float("-inf")):
            raise StubError(f"{where}.{key} must be a string or a finite number")
        seed[raw.decode("latin-1")] = item
    return seed


def seeded_state(tenant: str, seed: Mapping[str, str | int | float]) -> LocalStore:
    """A private store holding `seed` (no expiry) for one dry run or script test."""
    state = LocalStore()
    for key, item in seed.items():
        run_sync(state.shared(tenant, SharedOp("set", key, item)))
    return state


class NoStub(Exception):
    """A middleware waited for a proxied response and no stub says what the backend answers:
    the dry run stops at the upstream plan."""

    def __init__(self, plan: UpstreamPlan) -> None:
        super().__init__(plan.backend.name)
        self.plan = plan


@dataclass(slots=True)
class StubOpened:
    plan: UpstreamPlan | None
    stub: Stub | None
    error: GatewayError | None = None


@dataclass
class StubEffects:
    """routing.script_run.Effects answered from stubs."""

    tenant: TenantEntry
    request: ClientRequest
    router_path: str
    limits: Limits
    body: bytes = b""
    upstream: Mapping[str, Stub] = field(default_factory=dict)
    calls: Mapping[str, Stub] = field(default_factory=dict)
    healthy: Healthy | None = None
    opened: dict[int, StubOpened] = field(default_factory=dict)
    made_calls: list[dict[str, Any]] = field(default_factory=list)
    exchanges: list[dict[str, Any]] = field(default_factory=list)
    body_read: bool = False
    # shared.* and limit.allow: a store private to this run (a dry run, a script test or a
    # shadow never reads or writes the live shared state)
    state: LocalStore = field(default_factory=LocalStore)

    async def read_body(self) -> BodyAnswer:
        self.body_read = True
        if len(self.body) > self.limits.max_request_body_bytes:
            return BodyAnswer(error="too_large")
        return BodyAnswer(self.body)

    async def open_upstream(self, effect: OpenUpstream) -> Head:
        try:
            plan = decide(self.tenant, self.request, self.router_path,
                          Outcome(effect.action, request_headers=effect.request_headers),
                          healthy=self.healthy or _always)
        except GatewayError as error:
            self.opened[effect.exchange] = StubOpened(None, None, error)
            self.exchanges.append({"backend": None, "status": error.status,
                                   "error": error.code})
            return self._error_head(error)
        assert isinstance(plan, UpstreamPlan)
        stub = self.upstream.get(plan.backend.name)
        if stub is None:
            raise NoStub(plan)
        entry = {"backend": plan.backend.name, "url": plan.url, "method": plan.method}
        if stub.error is not None:
            error = _stub_error(stub.error, plan.backend.name)
            self.opened[effect.exchange] = StubOpened(plan, stub, error)
            self.exchanges.append({**entry, "status": error.status, "error": error.code})
            return self._error_head(error)
        self.opened[effect.exchange] = StubOpened(plan, stub)
        self.exchanges.append({**entry, "status": stub.status, "error": None})
        return Head(stub.status, stub.headers, plan.backend.name)

    def _error_head(self, error: GatewayError) -> Head:
        status, headers, _body = error_response(error, self.request.request_id)
        return Head(status, tuple((k.decode("latin-1"), v.decode("latin-1"))
                                  for k, v in headers), None)

    async def read_response_body(self, effect: ReadResponseBody) -> BodyAnswer:
        opened = self.opened[effect.exchange]
        if opened.error is not None:
            return BodyAnswer(error_response(opened.error, self.request.request_id)[2])
        assert opened.stub is not None
        if len(opened.stub.body) > self.limits.max_response_body_bytes:
            return BodyAnswer(error="too_large")
        return BodyAnswer(opened.stub.body)

    async def call(self, effect: Call) -> CallAnswer:
        record: dict[str, Any] = {"backend": effect.backend, "method": effect.method,
                                  "path": effect.path, "query": effect.query}
        self.made_calls.append(record)
        backend = self.tenant.backends.get(effect.backend)
        if backend is None or not backend.enabled:
            record["error"] = "refused"
            return CallAnswer(error="refused")
        try:
            plan = call_plan(backend, effect, request_id=self.request.request_id)
        except GatewayError as exc:  # pragma: no cover - checked in Lua first
            record["error"] = "broken"
            record["detail"] = str(exc)
            return CallAnswer(error="broken")
        record["url"] = plan.url
        stub = self.calls.get(effect.backend)
        if stub is None:
            record["error"] = "no_stub"
            return CallAnswer(error="no_stub")
        if stub.error is not None:
            record["error"] = stub.error
            return CallAnswer(error=stub.error)
        if len(stub.body) > self.limits.max_response_body_bytes:
            record["error"] = "too_large"
            return CallAnswer(error="too_large")
        record["status"] = stub.status
        return CallAnswer(stub.status, stub.headers, stub.body)

    async def render(self, effect: Render) -> RenderAnswer:
        status, headers, body = render_error_for(effect, self.request.request_id)
        return RenderAnswer(status, tuple((k.decode("latin-1"), v.decode("latin-1"))
                                          for k, v in headers), body)

    async def verify_jwt(self, effect: VerifyJwt) -> JwtAnswer:
        jwks = None
        if effect.jwks_backend is not None:
            record: dict[str, Any] = {"backend": effect.jwks_backend, "method": "GET",
                                      "path": effect.jwks_path, "query": "", "jwks": True}
            self.made_calls.append(record)
            stub = self.calls.get(effect.jwks_backend)
            if stub is None or stub.error is not None or stub.status != 200:
                record["error"] = "no_stub" if stub is None else stub.error or "broken"
            else:
                record["status"] = stub.status
                try:
                    jwks = parse_jwks(stub.body)
                except ValueError:
                    record["error"] = "broken"
        return verify_effect(effect, jwks)

    async def shared(self, effect: SharedOp) -> SharedAnswer:
        return await self.state.shared(self.tenant.slug, effect)

    async def limit(self, effect: LimitCheck) -> LimitAnswer:
        return await self.state.limit(self.tenant.slug, effect)


def _always(_backend: Any) -> bool:
    return True


def _stub_error(kind: str, backend: str) -> GatewayError:
    if kind == "refused":
        return BackendRefused(f"Backend {backend!r} refused the connection (stub).")
    if kind == "timeout":
        return GatewayTimeout(f"Backend {backend!r} did not answer in time (stub).")
    return BackendBroke(f"Backend {backend!r} closed the connection (stub).")


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never waits for real I/O (stub effects only) to its end."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("a dry run waited for real I/O; stub effects never do")
