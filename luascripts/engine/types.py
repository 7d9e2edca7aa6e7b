"""The engine's public value types: what goes into a script and what comes out.

Plain frozen dataclasses with no Django and no lupa imports. The data plane, validation, the
admin's dry run and the API's simulate all speak these types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

Header = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-runtime budgets. CPU budgets are wall-clock deadlines checked by a Lua count hook."""

    request_cpu_ms: float = 50.0
    register_cpu_ms: float = 1000.0
    memory_bytes: int = 32 * 1024 * 1024
    max_source_bytes: int = 256 * 1024
    max_log_lines: int = 20  # per request (and per registration); the rest are counted, not kept
    max_log_line_bytes: int = 2048
    max_body_bytes: int = 1024 * 1024  # respond() bodies
    max_headers: int = 100  # headers a script may set per action
    max_header_bytes: int = 8192  # one header value
    max_string_bytes: int = 4 * 1024 * 1024  # string.rep/gsub/format results, pattern subjects
    max_request_body_bytes: int = 1024 * 1024  # req.body(); over it the request answers 413
    max_response_body_bytes: int = 1024 * 1024  # res.body() and http.request() bodies
    max_calls: int = 10  # http.request() calls per request
    call_timeout_ms: int = 1000  # http.request() without timeout_ms
    max_state_calls: int = 50  # shared.* and limit.allow() calls per request

    def to_lua(self) -> dict[str, int | float]:
        """Every limit by name: the one table the Lua modules are configured from."""
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A syntax, registration or limit error, located in the script where possible."""

    line: int | None
    column: int | None
    message: str

    def to_dict(self) -> dict[str, object]:
        return {"line": self.line, "column": self.column, "message": self.message}


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """One row of a script's route table, for display and validation results."""

    method: str  # "GET", ..., or "*" for every method
    pattern: str  # the full pattern, route and mount prefixes included
    middleware: int  # middleware that wraps this route (inherited ones included)
    target: str = ""  # "" for a Lua handler, "backend:NAME" for a mount to a backend
    # The middleware's labels, outermost first: "name (line N)" or "line N" (router.lua).
    labels: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"method": self.method, "pattern": self.pattern,
                "middleware": self.middleware, "target": self.target,
                "labels": list(self.labels)}


@dataclass(frozen=True, slots=True)
class ValidationResult:
    valid: bool
    errors: tuple[Diagnostic, ...] = ()
    routes: tuple[RouteInfo, ...] = ()
    is_selector: bool = False
    warnings: tuple[Diagnostic, ...] = ()  # the script loads, but something in it is wrong


@dataclass(frozen=True, slots=True)
class BackendView:
    """What a script may know about a backend (selector scripts receive a list of these)."""

    name: str
    url: str
    weight: int
    healthy: bool


@dataclass(frozen=True, slots=True)
class ScriptRequest:
    """The request as a tenant's router sees it."""

    method: str
    path: str  # raw path after the tenant's prefix, percent-encoding intact, starts with "/"
    query_string: str  # raw query string without "?"
    host: str
    scheme: str
    client_ip: str
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "
    tenant: str
    request_id: str
    backends: Sequence[BackendView] = ()
    websocket: bool = False  # the client asked to upgrade to a WebSocket


@dataclass(frozen=True, slots=True)
class ProxyAction:
    backends: tuple[str, ...]  # one name, or several to balance among (healthy ones, by weight)
    path: str | None = None  # upstream path (raw, starts with "/"); None = the original path
    query: str | None = None  # raw query string; None = the original query
    set_headers: tuple[Header, ...] = ()
    remove_headers: tuple[str, ...] = ()  # lower-case names
    hash_key: str | None = None  # consistent choice among `backends`
    timeout_ms: int | None = None
    body: bytes | None = None  # replaces the request body (Content-Length follows)


@dataclass(frozen=True, slots=True)
class RespondAction:
    status: int
    body: bytes = b""
    headers: tuple[Header, ...] = ()


@dataclass(frozen=True, slots=True)
class RejectAction:
    """An error answer. 404/405 from the router come back as this too (405 carries `allow`)."""

    status: int
    message: str
    allow: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ExchangeAction:
    """Answer with an upstream exchange the script already made and looked at (`next()`
    returned it and the script read its status, headers or body); `exchange` is its id."""

    exchange: int


Action = ProxyAction | RespondAction | RejectAction | ExchangeAction


@dataclass(frozen=True, slots=True)
class ResponsePatch:
    """What middleware changed on the response it got from `next()`, applied by the host to
    the final answer: the status, headers (a value of None removes every header of that
    name) and a replacement body (Content-Length follows it)."""

    status: int | None = None
    headers: tuple[tuple[str, str | None], ...] = ()
    body: bytes | None = None
    # `headers` as the data plane applies them (lower-case byte names, byte values, None:
    # removed), encoded once when the patch is decoded; None: encode from `headers`.
    raw: Mapping[bytes, bytes | None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of running a script for one request."""

    action: Action
    route_pattern: str | None = None  # the full matched pattern; None when nothing matched
    params: Mapping[str, str] = field(default_factory=dict)
    middleware: tuple[str, ...] = ()  # labels of the middleware that ran, outermost first
    # The complete request headers after the script changed `req.headers`; None if unchanged.
    request_headers: Mapping[str, str] | None = None
    logs: tuple[tuple[str, str], ...] = ()  # (level, message) lines the script logged
    dropped_logs: int = 0
    patch: ResponsePatch | None = None  # changes middleware made to the response
    lua_seconds: float = 0.0  # time spent running Lua (waits excluded), every step together
