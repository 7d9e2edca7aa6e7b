"""Flat values returned by dispatch.lua -> Outcome; failed calls -> the right exception.

Everything read here was produced by trusted Lua code as plain strings, numbers and nils
(layouts at the top of dispatch.lua and actions.lua); no tenant table ever reaches here.
Strings come back latin-1 decoded (one char per byte): header values stay that way (the data
plane encodes them with latin-1 again), bodies become bytes, text meant for people
(messages, logs) is re-read as UTF-8.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from luascripts.engine.build import fast_constructor
from luascripts.engine.errors import ScriptMemoryError, ScriptRuntimeError, ScriptTimeoutError
from luascripts.engine.source import diagnostic_from_lua, lua_text
from luascripts.engine.types import (
    Action,
    Diagnostic,
    Outcome,
    ProxyAction,
    RejectAction,
    RespondAction,
)

NOT_FOUND_MESSAGE = "No route matches this path."
_TRACE_MARK = "\nstack traceback:\n"
_TRUSTED_FRAMES = ("sandbox:", "caps:", "helpers:", "router:", "actions:", "request:", "dispatch:")
EMPTY: Mapping[str, str] = MappingProxyType({})


def mib(size: int) -> str:
    return f"{size / (1024 * 1024):g} MiB"


def router_reject(method: str, allow: tuple[str, ...]) -> RejectAction:
    if allow:
        return RejectAction(405, f"Method {method} is not allowed for this path.", allow)
    return RejectAction(404, NOT_FOUND_MESSAGE)


def _pairs(blob: str) -> tuple[tuple[str, str], ...]:
    parts = blob.split("\0")
    return tuple(zip(parts[0::2], parts[1::2], strict=True))


def _names(blob: str | None) -> tuple[str, ...]:
    if not blob:
        return ()
    return tuple(lua_text(n) for n in blob.split("\0"))


_new_outcome = fast_constructor(Outcome)
_new_proxy = fast_constructor(ProxyAction)
_PAD = (None,) * 8
_ACTION_CACHE: dict[tuple[Any, ...], Action] = {}
_ACTION_CACHE_SIZE = 2048


def decode_action(f: tuple[Any, ...], method: str, allow: tuple[str, ...],
                  backend: str, rest: str) -> Action:
    """f = (kind, fields...) padded with None. Actions are immutable, so equal results
    share one instance (cached) instead of being rebuilt per request."""
    kind = f[0]
    if kind == "P":
        action = _ACTION_CACHE.get(f)
        if action is None:
            action = _new_proxy(
                _names(f[1]), f[2], f[3], _pairs(f[6]) if f[6] else (),
                tuple(f[7].split("\0")) if f[7] else (), f[4], f[5])
            if len(_ACTION_CACHE) >= _ACTION_CACHE_SIZE:
                _ACTION_CACHE.clear()
            _ACTION_CACHE[f] = action
        return action
    if kind == "R":
        return RespondAction(f[1], f[2].encode("latin-1"), _pairs(f[3]) if f[3] else ())
    if kind == "J":
        return RejectAction(f[1], lua_text(f[2]), allow if f[1] == 405 else ())
    if kind == "M":
        if not backend:  # a mount's terminal action, kept and returned from another route
            raise ScriptRuntimeError("a route returned the action of a backend mount")
        return _new_proxy((backend,), rest, None, (), (), None, None)
    return router_reject(method, allow)  # "N": the router's own 404/405


def decode(res: tuple[Any, ...], *, method: str, pattern: str | None,
           params: Mapping[str, str], labels: tuple[str, ...], allow: tuple[str, ...] = (),
           backend: str = "", rest: str = "/") -> Outcome:
    """res = (True, ran, request_headers_blob, logs_blob, dropped, kind, fields...)."""
    action = decode_action((res + _PAD)[5:13], method, allow, backend, rest)
    ran, reqh, logs = res[1], res[2], res[3]
    request_headers = None
    if reqh is not None:
        request_headers = dict(_pairs(reqh)) if reqh else {}
    log_lines: tuple[tuple[str, str], ...] = ()
    if logs is not None:
        log_lines = tuple((level, lua_text(msg)) for level, msg in _pairs(logs))
    return _new_outcome(action, pattern, params, labels[:ran] if ran else (), request_headers,
                        log_lines, res[4])


def failure(payload: Any, timed_out: bool, line: int | None, *, budget_ms: float,
            memory_bytes: int, phase: str = "request") -> ScriptRuntimeError:
    """The exception for a protected call that returned (False, payload)."""
    if timed_out:
        where = f" (at line {line})" if line else ""
        return ScriptTimeoutError(
            f"The script ran longer than its {budget_ms:g} ms CPU budget for one {phase} "
            f"and was stopped{where}.",
            diagnostics=(Diagnostic(line, None, "CPU time limit exceeded"),))
    if payload == "not enough memory":  # LUA_ERRMEM: no message handler, no traceback
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
