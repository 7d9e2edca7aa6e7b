"""From a script's outcome to what the gateway will do: a pure, network-free decision.

`decide()` is what the data plane runs for every request, and what the admin's dry-run console
and the API's simulate endpoint call (chistone_site.simulation) to show what would happen:
which backend, which exact upstream URL, which headers, or which direct answer. No I/O, no clock, no
database; health and balancing come in as arguments.

Where a request may go: a script names backends, never hosts. The upstream URL is built only
from the registered backend's origin and base path plus a path that passed `check_path`
(exactly one leading "/", no CR/LF/NUL, no dot segments), so `//evil/x`, `http://evil/` or
`/a/../admin` can never steer a request anywhere else. Without a rewrite the raw path after
the tenant's prefix (what the router saw) and the raw query go upstream byte-for-byte.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from luascripts.engine.build import fast_constructor
from luascripts.engine.types import (
    Outcome,
    ProxyAction,
    RejectAction,
    RespondAction,
    ScriptRequest,
)
from routing.balancer import Balancer, pick_hashed
from routing.errors import (
    BadRequest,
    GatewayError,
    NoHealthyBackend,
    ScriptFailed,
    reject_error,
)
from routing.headers import HOP_BY_HOP, is_field_name, is_field_value, upstream_request_headers
from routing.request import ClientRequest, check_path, check_query
from routing.snapshot import BackendEntry, TenantEntry

Healthy = Callable[[BackendEntry], bool]


def _always(_backend: BackendEntry) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class UpstreamPlan:
    """Where and how to send one request upstream."""

    tenant: str
    backend: BackendEntry
    fallbacks: tuple[BackendEntry, ...]  # other healthy candidates, tried on a retry
    method: str
    path: str  # upstream path: the backend's base path + the approved path
    query: str
    headers: tuple[tuple[str, str], ...]
    connect_timeout_s: float
    read_timeout_s: float
    total_timeout_s: float

    @property
    def url(self) -> str:
        return self.url_for(self.backend)

    def url_for(self, backend: BackendEntry) -> str:
        path = backend.base_path + self.path[len(self.backend.base_path):]
        return f"{backend.origin}{path}?{self.query}" if self.query else f"{backend.origin}{path}"

    def headers_for(self, backend: BackendEntry) -> list[tuple[str, str]]:
        if backend is self.backend:
            return list(self.headers)
        return [("host", backend.host_header) if name == "host" else (name, value)
                for name, value in self.headers]

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "proxy", "backend": self.backend.name, "url": self.url,
            "method": self.method, "path": self.path, "query": self.query,
            "headers": [list(h) for h in self.headers],
            "fallbacks": [b.name for b in self.fallbacks],
            "timeouts_s": {"connect": self.connect_timeout_s, "read": self.read_timeout_s,
                           "total": self.total_timeout_s},
        }


@dataclass(frozen=True, slots=True)
class DirectResponse:
    """An answer the gateway gives itself (a script's respond())."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def to_dict(self) -> dict[str, Any]:
        return {"type": "respond", "status": self.status,
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in self.headers],
                "body": self.body.decode("utf-8", "replace")}


Decision = UpstreamPlan | DirectResponse
# Built for every request: the same frozen objects, without the dataclass __init__'s cost.
_new_script_request = fast_constructor(ScriptRequest)
_new_plan = fast_constructor(UpstreamPlan)


def script_request(tenant: TenantEntry, request: ClientRequest, router_path: str,
                   healthy: Healthy = _always, *, websocket: bool = False) -> ScriptRequest:
    """What the tenant's script sees. Selector scripts also get the backends and their health.
    `websocket`: the client asked to upgrade (`req.websocket` in Lua)."""
    headers: dict[str, str] = {}
    for name, value in request.headers:
        previous = headers.get(name)
        headers[name] = value if previous is None else f"{previous}, {value}"
    headers["x-request-id"] = request.request_id
    return _new_script_request(
        method=request.method, path=router_path, query_string=request.query,
        host=request.host, scheme=request.forwarded_proto, client_ip=request.client_ip,
        headers=headers, tenant=tenant.slug, request_id=request.request_id,
        backends=tenant.backend_views(healthy) if tenant.is_selector else (),
        websocket=websocket,
    )


def decide(
    tenant: TenantEntry,
    request: ClientRequest,
    router_path: str,
    outcome: Outcome | None,
    *,
    healthy: Healthy = _always,
    balancer: Balancer | None = None,
    total_timeout_s: float = 300.0,
) -> Decision:
    """The plan for `outcome` (None: the tenant has no script, proxy to its backends).

    Raises a GatewayError for a reject, a 404/405 from the router, an unknown backend or an
    invalid rewrite (500), or no healthy backend (503).
    """
    if outcome is None:
        return _plan(tenant, request, router_path, ProxyAction(backends=()), None,
                     healthy, balancer, total_timeout_s)
    action = outcome.action
    if isinstance(action, ProxyAction):
        return _plan(tenant, request, router_path, action, outcome.request_headers,
                     healthy, balancer, total_timeout_s)
    if isinstance(action, RespondAction):
        return respond(action, request.request_id)
    if isinstance(action, RejectAction):
        raise reject_error(action.status, action.message, tuple(action.allow))
    raise ScriptFailed(f"the script returned an unknown action {action!r}")


def respond(action: RespondAction, request_id: str) -> DirectResponse:
    if not 100 <= action.status <= 599 or 100 <= action.status < 200:
        raise ScriptFailed(f"respond() with invalid status {action.status}")
    out: list[tuple[bytes, bytes]] = []
    for name, value in action.headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in ("content-length", "x-request-id"):
            continue
        _check_header(lower, value)
        out.append((lower.encode("latin-1"), value.encode("latin-1")))
    body = action.body if isinstance(action.body, bytes) else str(action.body).encode()
    if action.status in (204, 304):
        body = b""
    else:
        out.append((b"content-length", str(len(body)).encode()))
    out.append((b"x-request-id", request_id.encode("latin-1")))
    return DirectResponse(action.status, tuple(out), body)


def _check_header(name: str, value: str) -> None:
    if not is_field_name(name) or not is_field_value(value):  # also `\x01`: the client raises
        raise ScriptFailed(f"the script set an invalid header {name!r}")
    try:
        name.encode("latin-1")
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ScriptFailed(f"the script set a header {name!r} that is not latin-1") from None


def _candidates(tenant: TenantEntry, names: Sequence[str]) -> list[BackendEntry]:
    if not names:
        return list(tenant.default_pool)
    chosen: list[BackendEntry] = []
    for name in names:
        backend = tenant.backends.get(name)
        if backend is None:
            raise ScriptFailed(f"the script chose unknown backend {name!r}")
        if backend.enabled and backend not in chosen:
            chosen.append(backend)
    if len(chosen) > 1:
        weighted = [b for b in chosen if b.weight > 0]
        chosen = weighted or chosen
    return chosen


def _plan(tenant: TenantEntry, request: ClientRequest, router_path: str, action: ProxyAction,
          script_headers: Mapping[str, str] | None, healthy: Healthy,
          balancer: Balancer | None, total_timeout_s: float) -> UpstreamPlan:
    candidates = _candidates(tenant, action.backends)
    if not candidates:
        raise NoHealthyBackend(f"tenant {tenant.slug!r} has no enabled backend for this route")
    usable = [b for b in candidates if healthy(b)]
    if not usable:
        names = ", ".join(b.name for b in candidates)
        raise NoHealthyBackend(f"no healthy backend among: {names}")
    if action.hash_key is not None and action.hash_key != "":
        backend = pick_hashed(action.hash_key, usable)
    elif balancer is not None:
        backend = balancer.pick(tenant.slug, usable)
    else:
        backend = max(usable, key=lambda b: b.weight)
    fallbacks = tuple(b for b in usable if b is not backend)

    path = router_path if action.path is None else action.path
    try:
        check_path(path)
        query = request.query if action.query is None else check_query(action.query)
    except BadRequest as exc:
        if action.path is None and action.query is None:
            raise
        raise ScriptFailed(f"the script rewrote the request to an invalid target: {exc.detail}"
                           ) from None
    headers = _headers(request, script_headers, action)
    clean = headers is request.headers
    total = action.timeout_ms / 1000 if action.timeout_ms else total_timeout_s
    return _new_plan(
        tenant=tenant.slug,
        backend=backend,
        fallbacks=fallbacks,
        method=request.method,
        path=backend.base_path + path,
        query=query,
        headers=tuple(upstream_request_headers(
            headers, host=backend.host_header, forwarded_for=request.forwarded_for,
            peer=request.peer, forwarded_host=request.host_header,
            proto=request.forwarded_proto, client=request.client_ip,
            request_id=request.request_id, clean=clean,
        )),
        connect_timeout_s=min(backend.connect_timeout_s, total),
        read_timeout_s=min(backend.read_timeout_s, total),
        total_timeout_s=total,
    )


def _headers(request: ClientRequest, script_headers: Mapping[str, str] | None,
             action: ProxyAction) -> Iterable[tuple[str, str]]:
    if script_headers is None and not action.set_headers and not action.remove_headers:
        return request.headers
    if script_headers is not None:
        headers = [(name.lower(), value) for name, value in script_headers.items()]
    else:
        headers = list(request.headers)
    if action.remove_headers or action.set_headers:
        drop = {name.lower() for name in action.remove_headers}
        drop.update(name.lower() for name, _ in action.set_headers)
        headers = [(name, value) for name, value in headers if name not in drop]
        for name, value in action.set_headers:
            _check_header(name.lower(), value)
            headers.append((name.lower(), value))
    for name, value in headers:
        _check_header(name, value)
    return headers


@dataclass(frozen=True, slots=True)
class CallPlan:
    """A script's http.request to one of its tenant's backends. Only the registered backend's
    origin and base path, plus a checked path and query, make the URL: a script names a
    backend, never an address. The headers are the script's (minus hop-by-hop and the
    gateway-managed ones) plus Host and the request id."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    connect_timeout_s: float
    read_timeout_s: float
    total_timeout_s: float


def call_plan(backend: BackendEntry, call: Any, *, request_id: str) -> CallPlan:
    path = check_path(call.path)
    query = check_query(call.query)
    headers = [(name.lower(), value) for name, value in call.headers]
    for name, value in headers:
        _check_header(name, value)
    out = [(name, value) for name, value in headers
           if name not in HOP_BY_HOP and name not in ("host", "content-length", "x-request-id",
                                                       "expect")]
    out.append(("host", backend.host_header))
    out.append(("x-request-id", request_id))
    total = call.timeout_ms / 1000
    url = f"{backend.origin}{backend.base_path}{path}"
    return CallPlan(call.method, f"{url}?{query}" if query else url, tuple(out),
                    min(backend.connect_timeout_s, total), total, total)


def error_decision(error: GatewayError) -> dict[str, Any]:
    return {"type": "error", "status": error.status, "error": error.code,
            "detail": error.public_detail()}
