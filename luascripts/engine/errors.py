"""The engine's exceptions, drawn as one hierarchy.

    ScriptError
    +-- ScriptLoadError      the source cannot become a LoadedScript (syntax, registration,
    |                        bad pattern, limits hit while registering); carries diagnostics
    +-- ScriptRuntimeError   a handler, middleware or selector failed for one request
        +-- ScriptTimeoutError   ... by running past its CPU deadline
        +-- ScriptMemoryError    ... by going over the runtime's memory cap
        +-- BodyUnavailable      ... because req.body() failed for the client's reason and
            |                        the script did not catch it (`reason` says which)
            +-- BodyTooLarge     ... a body over the limit (413)
            +-- RuntimeBusy      ... the runtime cannot hold one more body now (503)
        +-- ResponseUnavailable  ... because res.body() failed for the backend's reason
                                 (`reason`: too_large, timeout, broken) and was not caught

Timeouts and memory errors are runtime errors too, so a caller that only wants "this request
failed because of the script" catches ScriptRuntimeError. Messages are written for the
tenant's developers: they name the line and the limit, never Python internals.
"""

from __future__ import annotations

from luascripts.engine.types import Diagnostic


class ScriptError(Exception):
    """Base class; `diagnostics` locates the problem in the script where that is known."""

    def __init__(self, message: str, diagnostics: tuple[Diagnostic, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.diagnostics = diagnostics


class ScriptLoadError(ScriptError):
    """The script was refused at load time; `diagnostics` lists every problem found."""

    def __init__(self, diagnostics: tuple[Diagnostic, ...]) -> None:
        lines = [_describe(d) for d in diagnostics] or ["unknown error"]
        summary = lines[0] if len(lines) == 1 else f"{len(lines)} problems: " + "; ".join(lines)
        super().__init__(f"The script could not be loaded: {summary}", diagnostics)


class ScriptRuntimeError(ScriptError):
    """A request failed inside the script; `lua_traceback` is for the gateway's log."""

    def __init__(self, message: str, *, lua_traceback: str = "",
                 diagnostics: tuple[Diagnostic, ...] = ()) -> None:
        super().__init__(message, diagnostics)
        self.lua_traceback = lua_traceback


class ScriptTimeoutError(ScriptRuntimeError):
    """The script ran past its CPU deadline and was stopped."""


class ScriptMemoryError(ScriptRuntimeError):
    """The script went over its runtime's memory cap."""


class BodyUnavailable(ScriptRuntimeError):
    """req.body() failed and the script did not catch the error. `reason`: "too_large",
    "timeout" (the client was too slow), "disconnected", "memory"."""

    reason = "unavailable"


class BodyTooLarge(BodyUnavailable):
    """A request body over `max_request_body_bytes`: the request is answered 413."""

    reason = "too_large"


class ResponseUnavailable(ScriptRuntimeError):
    """res.body() failed because of the backend (a body over `max_response_body_bytes`, too
    slow, broken) and the script did not catch the error: the gateway answers 502 or 504."""

    reason = "unavailable"


class RuntimeBusy(BodyUnavailable):
    """The tenant's runtime holds so many bodies of concurrent requests that one more does
    not fit under its memory cap: this request is answered 503, the others go on."""

    reason = "memory"


def _describe(diagnostic: Diagnostic) -> str:
    if diagnostic.line is None:
        return diagnostic.message
    return f"line {diagnostic.line}: {diagnostic.message}"
