"""Flat values returned by a step of dispatch.lua -> Outcome, Effect or the right exception.

Every position read here comes from luascripts/engine/boundary.py, the one declaration of
what crosses the boundary; everything was produced by trusted Lua code as plain strings,
numbers and nils (no tenant table ever reaches here). A result tuple from xpcall is
(True, <result record values>...), so the value at Lua position p is `res[p]`.

Strings come back latin-1 decoded (one char per byte): header values stay that way (the
data plane encodes them with latin-1 again), bodies become bytes, text meant for people
(messages, logs) is re-read as UTF-8.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from luascripts.engine import boundary as B
from luascripts.engine.build import fast_constructor
from luascripts.engine.effects import (
    Call,
    Effect,
    LimitCheck,
    OpenUpstream,
    ReadBody,
    ReadResponseBody,
    Render,
    SharedOp,
    VerifyJwt,
)
from luascripts.engine.errors import ScriptMemoryError, ScriptRuntimeError, ScriptTimeoutError
from luascripts.engine.source import diagnostic_from_lua, lua_text
from luascripts.engine.types import (
    Action,
    Diagnostic,
    ExchangeAction,
    ProxyAction,
    RejectAction,
    RespondAction,
    ResponsePatch,
)

NOT_FOUND_MESSAGE = "No route matches this path."
_TRACE_MARK = "\nstack traceback:\n"
_TRUSTED_FRAMES = ("sandbox:", "caps:", "helpers:", "router:", "actions:", "request:",
                   "response:", "calls:", "identity:", "state:", "dispatch:", "[C]: in ?",
                   "[C]: in function 'xpcall'")
EMPTY: Mapping[str, str] = MappingProxyType({})

# Positions (Lua's, = Python index in an xpcall result tuple).
_PAYLOAD = len(B.RESULT)  # the wait or fail record starts after the RESULT fields
_PATCH = _PAYLOAD  # "done": the patch, then the action
_ACTION = _PATCH + len(B.PATCH)
_SIZE = _ACTION + B.ACTION_SLOTS + 1
_PAD = (None,) * _SIZE
_EFFECT = _PAYLOAD + len(B.WAIT) - 1  # effects' fields are numbered from WAIT's "op"
_UPSTREAM_ACTION = _EFFECT + len(B.UPSTREAM)


def mib(size: int) -> str:
    return f"{size / (1024 * 1024):g} MiB"


def router_reject(method: str, allow: tuple[str, ...]) -> RejectAction:
    if allow:
        return RejectAction(405, f"Method {method} is not allowed for this path.", allow)
    return RejectAction(404, NOT_FOUND_MESSAGE)


def pairs(blob: str | None) -> tuple[tuple[str, str], ...]:
    """A pairs blob ("n1\\0v1\\0n2\\0v2") as (name, value) pairs."""
    if not blob:
        return ()
    parts = blob.split("\0")
    return tuple(zip(parts[0::2], parts[1::2], strict=True))


def _names(blob: str | None) -> tuple[str, ...]:
    if not blob:
        return ()
    return tuple(lua_text(n) for n in blob.split("\0"))


def _bytes(value: str | None) -> bytes | None:
    return None if value is None else value.encode("latin-1")


_new_proxy = fast_constructor(ProxyAction)
_ACTION_CACHE: dict[tuple[Any, ...], Action] = {}
_ACTION_CACHE_SIZE = 2048
_P, _R, _J, _U = B.PROXY, B.RESPOND, B.REJECT, B.EXCHANGE


def decode_action(f: tuple[Any, ...], at: int, method: str, allow: tuple[str, ...],
                  backend: str, rest: str) -> Action:
    """The action whose fields start after position `at` of `f` (padded with None). Proxy
    actions are immutable, so equal results share one instance (cached) instead of being
    rebuilt per request."""
    kind = f[at + 1]
    if kind == "P":
        key = f[at + 1:at + 1 + len(_P)]
        action = _ACTION_CACHE.get(key)
        if action is None:
            body = f[at + _P.body]
            action = _new_proxy(
                _names(f[at + _P.backends]), f[at + _P.path], f[at + _P.query],
                pairs(f[at + _P.set_headers]),
                tuple(f[at + _P.remove_headers].split("\0")) if f[at + _P.remove_headers]
                else (), f[at + _P.hash_key], f[at + _P.timeout_ms], _bytes(body))
            if body is None or len(body) < 4096:  # large bodies are not worth keeping
                if len(_ACTION_CACHE) >= _ACTION_CACHE_SIZE:
                    _ACTION_CACHE.clear()
                _ACTION_CACHE[key] = action
        return action
    if kind == "R":
        return RespondAction(f[at + _R.status], f[at + _R.body].encode("latin-1"),
                             pairs(f[at + _R.headers]))
    if kind == "J":
        status = f[at + _J.status]
        return RejectAction(status, lua_text(f[at + _J.message]), allow if status == 405 else ())
    if kind == "U":
        return ExchangeAction(f[at + _U.id])
    if kind == "M":
        if not backend:  # a mount's terminal action, kept and returned from another route
            raise ScriptRuntimeError("a route returned the action of a backend mount")
        return _new_proxy((backend,), rest, None, (), (), None, None, None)
    return router_reject(method, allow)  # "N": the router's own 404/405


_PS, _PH, _PR, _PB = (_PATCH + B.PATCH.status, _PATCH + B.PATCH.headers,
                      _PATCH + B.PATCH.removed, _PATCH + B.PATCH.body)


_PATCH_CACHE: dict[tuple[Any, ...], ResponsePatch] = {}
_PATCH_CACHE_SIZE = 1024
_new_patch = fast_constructor(ResponsePatch)


def decode_patch(f: tuple[Any, ...]) -> ResponsePatch | None:
    """The patch of a "done" result. Patches are immutable and a middleware usually makes
    the same one on every request (a header or two): equal ones without a body share one
    instance, decoded once (like proxy actions in decode_action)."""
    status, headers, removed, body = f[_PS], f[_PH], f[_PR], f[_PB]
    if body is None:
        if status is None and headers is None and removed is None:
            return None
        key = (status, headers, removed)
        patch = _PATCH_CACHE.get(key)
        if patch is not None:
            return patch
    # Names arrive lower-case (request.lua checked them at the assignment): the byte form
    # is the text's encoding, split the same way.
    changes: list[tuple[str, str | None]]
    raw: dict[bytes, bytes | None]
    if headers:
        parts = iter(headers.split("\0"))  # name, value, name, value...: zip pairs them
        changes = list(zip(parts, parts, strict=True))
        raw_parts = iter(headers.encode("latin-1").split(b"\0"))
        raw = dict(zip(raw_parts, raw_parts, strict=True))
    else:
        changes, raw = [], {}
    if removed:
        changes.extend((name, None) for name in removed.split("\0"))
        raw.update(dict.fromkeys(removed.encode("latin-1").split(b"\0")))
    patch = _new_patch(status, tuple(changes), _bytes(body), raw)
    if body is None:
        if len(_PATCH_CACHE) >= _PATCH_CACHE_SIZE:
            _PATCH_CACHE.clear()
        _PATCH_CACHE[key] = patch
    return patch


def raw_changes(changes: Any) -> dict[bytes, bytes | None]:
    """A patch's header changes as the relay applies them: lower-case byte names to byte
    values (None: removed)."""
    return {name.lower().encode("latin-1"): None if value is None else value.encode("latin-1")
            for name, value in changes}


def padded(res: tuple[Any, ...]) -> tuple[Any, ...]:
    return res + _PAD if len(res) < _SIZE else res


def request_headers(blob: str | None) -> dict[str, str] | None:
    """The complete new request headers if the script changed them, else None."""
    if blob is None:
        return None
    return dict(pairs(blob)) if blob else {}


def log_lines(blob: str | None) -> tuple[tuple[str, str], ...]:
    if blob is None:
        return ()
    return tuple((level, lua_text(msg)) for level, msg in pairs(blob))


_new_limit_check = fast_constructor(LimitCheck)  # per rate-limited request; Lua checked the
# fields (integers, a boolean)


def decode_effect(f: tuple[Any, ...], backend: str, rest: str,
                  allow: tuple[str, ...]) -> tuple[int, Effect]:
    """(token, effect) of a "wait" result."""
    token = f[_PAYLOAD + B.WAIT.token]
    op = f[_EFFECT + 1]
    if op == "body":
        return token, ReadBody()
    if op == "upstream":
        at = _UPSTREAM_ACTION
        action = decode_action(f, at, "", (), backend, rest)
        assert isinstance(action, ProxyAction)
        return token, OpenUpstream(f[_EFFECT + B.UPSTREAM.id], action,
                                   request_headers(f[_EFFECT + B.UPSTREAM.request_headers]))
    if op == "response_body":
        return token, ReadResponseBody(f[_EFFECT + B.RESPONSE_BODY.id])
    if op == "call":
        c = B.CALL
        return token, Call(
            backend=lua_text(f[_EFFECT + c.backend]), method=f[_EFFECT + c.method],
            path=f[_EFFECT + c.path], query=f[_EFFECT + c.query],
            headers=pairs(f[_EFFECT + c.headers]), body=_bytes(f[_EFFECT + c.body]) or b"",
            timeout_ms=int(f[_EFFECT + c.timeout_ms]))
    if op == "render":
        message = f[_EFFECT + B.RENDER.message]
        status = int(f[_EFFECT + B.RENDER.status])
        return token, Render(status, None if message is None else lua_text(message),
                             allow if status == 405 else ())
    if op == "jwt":
        j = B.JWT
        return token, VerifyJwt(
            token=f[_EFFECT + j.token], keys=_blobs(f[_EFFECT + j.keys]),
            jwks_backend=_text_or_none(f[_EFFECT + j.jwks_backend]),
            jwks_path=f[_EFFECT + j.jwks_path], algorithms=_blobs(f[_EFFECT + j.algorithms]),
            issuer=_text_or_none(f[_EFFECT + j.issuer]),
            audience=tuple(lua_text(a) for a in _blobs(f[_EFFECT + j.audience])),
            leeway_s=float(f[_EFFECT + j.leeway_s] or 0))
    if op == "shared":
        s = B.SHARED
        return token, SharedOp(f[_EFFECT + s.action], f[_EFFECT + s.key], f[_EFFECT + s.value],
                               f[_EFFECT + s.ttl_s], f[_EFFECT + s.delta])
    if op == "limit":
        lim = B.LIMIT
        return token, _new_limit_check(f[_EFFECT + lim.key], f[_EFFECT + lim.rate],
                                       f[_EFFECT + lim.window_s], f[_EFFECT + lim.fail_closed])
    raise ScriptRuntimeError(f"the script asked the gateway for an unknown effect {op!r}")


def _blobs(blob: str | None) -> tuple[str, ...]:
    """A names blob of texts kept as they are (keys, algorithms: latin-1, one char a byte)."""
    return tuple(blob.split("\0")) if blob else ()


def _text_or_none(value: str | None) -> str | None:
    return None if value is None else lua_text(value)


def fail_kind(f: tuple[Any, ...]) -> tuple[str, Any, int | None]:
    """(kind, message, line) of a "fail" result."""
    line = f[_PAYLOAD + B.FAIL.line]
    return (f[_PAYLOAD + B.FAIL.kind], f[_PAYLOAD + B.FAIL.message],
            int(line) if isinstance(line, int | float) else None)


def failure(payload: Any, timed_out: bool, line: int | None, *, budget_ms: float,
            memory_bytes: int, phase: str = "request") -> ScriptRuntimeError:
    """The exception for a protected call that returned (False, payload), or a failed step."""
    if timed_out:
        where = f" (at line {line})" if line else ""
        return ScriptTimeoutError(
            f"The script ran longer than its {budget_ms:g} ms CPU budget for one {phase} "
            f"and was stopped{where}.",
            diagnostics=(Diagnostic(line, None, "CPU time limit exceeded"),))
    if payload == "not enough memory" or (isinstance(payload, str)
                                          and payload.startswith("not enough memory\n")):
        return ScriptMemoryError(
            f"The script used more than its {mib(memory_bytes)} memory limit during a {phase}.",
            diagnostics=(Diagnostic(None, None, "memory limit exceeded"),))
    if isinstance(payload, str):
        message, _, traceback = payload.partition(_TRACE_MARK)
        message, traceback = lua_text(message), lua_text(traceback)
    else:
        # Only if K.on_error could not run: a non-string value is never converted here (its
        # __tostring is tenant code that could loop).
        kind = type(payload).__name__.removeprefix("_Lua").lower()
        message, traceback = f"error() was called with a {kind} value, not a message string", ""
    traceback = "\n".join(line_ for line_ in traceback.splitlines()
                          if not line_.strip().startswith(_TRUSTED_FRAMES))
    diagnostic = diagnostic_from_lua(message, traceback=traceback)
    return ScriptRuntimeError(message, lua_traceback=traceback, diagnostics=(diagnostic,))
