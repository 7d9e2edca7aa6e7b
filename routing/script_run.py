"""The one driver of tenant scripts: start a request's script, answer what it waits for.

A script that waits (req.body(), a response's status, res.body(), http.request) comes back
from the engine as a `ScriptRun` naming an effect. `drive` obtains each answer from an
`Effects` object and resumes the script, until it is done. The data plane drives scripts
with live effects (routing.exchange: the client's body, real upstream exchanges, calls to
backends); the dry run and script tests with stub effects (routing.stubs), so a test runs
the same script through the same driver as production and only the answers differ.

Only the time spent running Lua counts against the script's CPU budget (the engine charges
each step), and the watchdog marks are set around each step, never around a wait: a request
waiting for a slow backend is not a stuck worker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from luascripts.engine import LoadedScript, Outcome, ScriptRequest
from luascripts.engine.effects import (
    Answer,
    BodyAnswer,
    Call,
    CallAnswer,
    Effect,
    Head,
    JwtAnswer,
    LimitAnswer,
    LimitCheck,
    OpenUpstream,
    ReadBody,
    ReadResponseBody,
    Render,
    RenderAnswer,
    SharedAnswer,
    SharedOp,
    VerifyJwt,
)
from luascripts.engine.script import ScriptRun

# The watchdog's marks: enter(tenant slug, version id) before Lua runs, leave() after.
ScriptGuard = tuple[Callable[[str, int], None], Callable[[], None]]


class Effects(Protocol):
    """Where a waiting script's answers come from."""

    async def read_body(self) -> BodyAnswer: ...

    async def open_upstream(self, effect: OpenUpstream) -> Head: ...

    async def read_response_body(self, effect: ReadResponseBody) -> BodyAnswer: ...

    async def call(self, effect: Call) -> CallAnswer: ...

    async def render(self, effect: Render) -> RenderAnswer: ...

    async def verify_jwt(self, effect: VerifyJwt) -> JwtAnswer: ...

    async def shared(self, effect: SharedOp) -> SharedAnswer: ...

    async def limit(self, effect: LimitCheck) -> LimitAnswer: ...


# Which Effects method answers an effect, by the effect's type: one lookup per wait.
_ANSWERERS: dict[type, Callable[[Effects, Any], Awaitable[Answer]]] = {
    ReadBody: lambda effects, _effect: effects.read_body(),
    OpenUpstream: lambda effects, effect: effects.open_upstream(effect),
    ReadResponseBody: lambda effects, effect: effects.read_response_body(effect),
    Call: lambda effects, effect: effects.call(effect),
    Render: lambda effects, effect: effects.render(effect),
    VerifyJwt: lambda effects, effect: effects.verify_jwt(effect),
    SharedOp: lambda effects, effect: effects.shared(effect),
    LimitCheck: lambda effects, effect: effects.limit(effect),
}


async def answer(effects: Effects, effect: Effect | None) -> Answer:
    answerer = _ANSWERERS.get(type(effect))
    if answerer is None:
        raise TypeError(f"unknown effect {effect!r}")
    return await answerer(effects, effect)


async def run_script(script: LoadedScript, request: ScriptRequest,
                     effects: Effects | Callable[[], Effects], *,
                     guard: ScriptGuard | None = None, tenant: str = "",
                     version: int = 0) -> Outcome:
    """Run `request` through `script` to its Outcome. `effects` may be a factory, called
    only if the script waits (most do not: nothing to build per request then). Raises what
    the engine raises (ScriptRuntimeError and subclasses); a waiting script is cancelled
    when this is (the client went away) or when answering it fails."""
    if guard is not None:
        guard[0](tenant, version)
    try:
        step = script.start(request)
    finally:
        if guard is not None:
            guard[1]()
    if isinstance(step, Outcome):
        return step
    if callable(effects):
        effects = effects()
    return await drive(step, effects, guard=guard, tenant=tenant, version=version)


async def drive(run: ScriptRun, effects: Effects, *, guard: ScriptGuard | None = None,
                tenant: str = "", version: int = 0) -> Outcome:
    step: Outcome | ScriptRun = run
    try:
        while isinstance(step, ScriptRun):
            result = await answer(effects, step.effect)
            if guard is not None:
                guard[0](tenant, version)
            try:
                step = step.resume(result)
            finally:
                if guard is not None:
                    guard[1]()
    except BaseException:
        if isinstance(step, ScriptRun):
            step.cancel()
        raise
    return step
