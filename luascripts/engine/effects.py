"""What a waiting script asks the host for (effects), and what the host answers.

A script waits when it reads the request body, looks at the response of a proxy (or of a
reject, which the gateway renders), reads a response body or calls a backend. The engine
turns each such wait into one of the `Effect` values below; whoever drives the script (the
data plane, the dry run, script tests: routing.script_run) obtains the answer and resumes
the script with it. Effects are plain data: they can be logged, counted and stubbed.
"""

from __future__ import annotations

from dataclasses import dataclass

from luascripts.engine.types import Header, ProxyAction


@dataclass(frozen=True, slots=True)
class ReadBody:
    """`req.body()`: the whole request body, up to `max_request_body_bytes`."""


@dataclass(frozen=True, slots=True)
class OpenUpstream:
    """A middleware looked at the response of a proxy: make the upstream exchange now and
    answer with its head. `exchange` is the id the script refers to it by afterwards."""

    exchange: int
    action: ProxyAction
    request_headers: dict[str, str] | None  # the complete headers if the script changed them


@dataclass(frozen=True, slots=True)
class ReadResponseBody:
    """`res.body()` of exchange `exchange`, up to `max_response_body_bytes`."""

    exchange: int


@dataclass(frozen=True, slots=True)
class Call:
    """`http.request(backend, ...)` to one of the tenant's own backends."""

    backend: str
    method: str
    path: str
    query: str
    headers: tuple[Header, ...]
    body: bytes
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class Render:
    """The head and body of an answer the gateway gives itself (a reject, the router's
    404/405), which a middleware looked at."""

    status: int
    message: str | None  # a reject's message; None for the router's own answer
    allow: tuple[str, ...] = ()  # a 405's Allow list


@dataclass(frozen=True, slots=True)
class VerifyJwt:
    """`jwt.verify(token, opts)`: check a JWT's signature and claims against the script's
    keys (`keys`: JWK JSON or PEM texts) and/or a JWKS the tenant's backend `jwks_backend`
    serves at `jwks_path` (routing.jwt_verify)."""

    token: str
    keys: tuple[str, ...]
    jwks_backend: str | None
    jwks_path: str | None
    algorithms: tuple[str, ...]
    issuer: str | None
    audience: tuple[str, ...]  # any one of them must be in the token's "aud"
    leeway_s: float


@dataclass(frozen=True, slots=True)
class SharedOp:
    """`shared.get/set/incr/delete(key, ...)` on the tenant's shared state (the host adds the
    tenant: a script names keys inside its own namespace only). `value` is a str (bytes as
    latin-1 text) or a number; `ttl_s` None means no expiry."""

    action: str  # "get" | "set" | "incr" | "delete"
    key: str
    value: str | int | float | None = None
    ttl_s: float | None = None
    delta: int | float | None = None


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """`limit.allow(key, rate, window_s [, {fail = "closed"}])`: may one more request go
    through `key`'s limit of `rate` per sliding `window_s` seconds? Counts it when it may."""

    key: str
    rate: int
    window_s: int
    fail_closed: bool = False


Effect = (ReadBody | OpenUpstream | ReadResponseBody | Call | Render | VerifyJwt | SharedOp
          | LimitCheck)


# -- answers ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Head:
    """Status and headers of a response (an upstream's, or the gateway's own error answer
    when the exchange failed: 502, 503, 504)."""

    status: int
    headers: tuple[Header, ...]
    backend: str | None = None


@dataclass(frozen=True, slots=True)
class BodyAnswer:
    """A body, or why there is none: "too_large", "memory" (the tenant's runtime cannot hold
    it now), "broken", "timeout", "disconnected"."""

    body: bytes | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CallAnswer:
    """An answer to `http.request`: status, headers, body; or `error`, one of "timeout",
    "refused", "broken", "too_large", "no_stub"."""

    status: int = 0
    headers: tuple[Header, ...] = ()
    body: bytes = b""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RenderAnswer:
    status: int
    headers: tuple[Header, ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class JwtAnswer:
    """The verified claims as a JSON object, or `error`: a fixed reason word ("expired",
    "bad_signature", "unknown_key", ...; never key material), or "invalid_key:<n>" when the
    script's n-th inline key cannot be used (a script error at the call)."""

    claims_json: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SharedAnswer:
    """The value `shared.*` returns (get: the value or None; set/delete: True; incr: the new
    number), or `error`: "quota", "unavailable", "not_a_number"."""

    value: str | int | float | bool | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class LimitAnswer:
    """`limit.allow`'s verdict and `info`; `degraded`: the shared store could not be asked and
    the request was let through (fail open); `error` "unavailable": refused for that reason
    (fail closed)."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    degraded: bool = False
    error: str | None = None


Answer = (Head | BodyAnswer | CallAnswer | RenderAnswer | JwtAnswer | SharedAnswer
          | LimitAnswer)
