"""LoadedScript: a tenant's script, registered once, then handling requests.

Per request, `start` matches in Python and makes at most one protected Lua call (none for a
default 404/405 or a backend mount without middleware). A script that does not wait is
done after that call and `start` returns its `Outcome`: the gateway's hot path, so it calls
the runtime's xpcall directly rather than through layers of helpers. A script that waits
(req.body(), a response's status, http.request) comes back as a `ScriptRun` whose `effect`
says what it waits for; the caller obtains the answer and calls `run.resume(answer)`, as
often as needed (routing.script_run drives this for the data plane, the dry run and script
tests alike). Only the time spent running Lua counts against the CPU budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Mapping
from itertools import chain
from typing import Any

import lupa.lua54 as lupa

from luascripts.engine import boundary as B
from luascripts.engine.build import fast_constructor
from luascripts.engine.compile import Compiled, compile_script
from luascripts.engine.effects import (
    Answer,
    BodyAnswer,
    CallAnswer,
    Effect,
    Head,
    JwtAnswer,
    LimitAnswer,
    RenderAnswer,
    SharedAnswer,
)
from luascripts.engine.errors import (
    BodyTooLarge,
    BodyUnavailable,
    ResponseUnavailable,
    RuntimeBusy,
    ScriptLoadError,
    ScriptMemoryError,
    ScriptRuntimeError,
)
from luascripts.engine.matching import match
from luascripts.engine.results import (
    _ACTION,
    _PAD,
    _SIZE,
    EMPTY,
    decode_action,
    decode_effect,
    decode_patch,
    fail_kind,
    failure,
    log_lines,
    padded,
    request_headers,
    router_reject,
)
from luascripts.engine.routes import NO_LUA
from luascripts.engine.runtime import HEADROOM_SLACK, Runtime
from luascripts.engine.types import Limits, Outcome, ProxyAction, RouteInfo, ScriptRequest

_new_outcome = fast_constructor(Outcome)  # per request: skip the dataclass __init__
MAX_INPUT_BYTES = 1024 * 1024  # path, query, headers... handed to one call
_CALL_OVERHEAD = 2048  # Lua string headers and the call's stack slots
_R = B.RESULT
_STATE, _RAN, _REQH, _LOGS, _DROPPED = _R.state, _R.ran, _R.request_headers, _R.logs, \
    _R.dropped_logs


# What a request matched, kept by a waiting run to decode what comes back. A plain tuple
# (built for every request, so it must be cheap): method, pattern, params, labels, allow,
# backend (of a mount), rest (the path below a mount).
_Match = tuple
_METHOD, _PATTERN, _PARAMS, _LABELS, _ALLOW, _BACKEND, _REST = range(7)


class ScriptRun:
    """One request whose script waits for the host. `effect` is what it waits for; call
    `resume(answer)` with the answer (it returns the Outcome, or this run waiting again), or
    `cancel()` to give up. Not thread-safe: one driver per run."""

    __slots__ = ("_m", "_runtime", "_script", "dropped", "effect", "logs", "token", "used_s")

    def __init__(self, script: LoadedScript, runtime: Runtime, m: _Match) -> None:
        self._script = script
        self._runtime = runtime
        self._m = m
        self.token = 0
        self.effect: Effect | None = None
        self.used_s = 0.0  # Lua time so far
        self.logs: list[tuple[str, str]] = []
        self.dropped = 0

    def resume(self, answer: Answer) -> Outcome | ScriptRun:
        if self.token == 0:
            raise RuntimeError("this script run is not waiting")
        token, self.token = self.token, 0
        script, runtime = self._script, self._runtime
        args, need = _answer_args(answer)
        if not script._fits(runtime, need):
            # Concurrent requests fill the runtime: this one's answer does not fit now. It
            # gets an error the script sees at its line (req.body(): 503 unless caught).
            args, need = _answer_args(_without_payload(answer))
        return script._step(runtime, "resume", need, (token, *args), self._m, self)

    def cancel(self) -> None:
        """The request is abandoned (client gone, gateway failure): free its coroutine."""
        if self.token:
            token, self.token = self.token, 0
            script = self._script
            script._abandon(self._runtime, token, script._budget - self.used_s)


class LoadedScript:
    """A registered script for one tenant and version. Thread-safe; one Lua state inside."""

    def __init__(self, source: str | bytes, *, tenant: str,
                 backend_names: Collection[str] | None, limits: Limits) -> None:
        self.tenant = tenant
        self.limits = limits
        self._source = source
        self._backend_names = backend_names
        self._lock = threading.Lock()
        self._compiled = compile_script(source, backend_names=backend_names, limits=limits)
        routes = self._compiled.routes
        self.routes: tuple[RouteInfo, ...] = routes.routes if routes is not None else ()
        self.is_selector = self._compiled.is_selector
        self._budget = limits.request_cpu_ms / 1000
        self._input_cap = min(MAX_INPUT_BYTES, limits.memory_bytes // 4)

    @property
    def memory_used(self) -> int:
        """Bytes the script's Lua state holds (sandbox included)."""
        with self._lock:
            return self._compiled.runtime.memory_used()

    @property
    def waiting(self) -> int:
        """Requests of this script suspended, waiting for the host."""
        return self._compiled.runtime.pending

    def close(self) -> None:
        with self._lock:
            self._compiled.runtime.close()

    # -- requests -------------------------------------------------------------------------

    def handle(self, req: ScriptRequest) -> Outcome:
        """Route and run one request that must not wait (tests, tools). A script that waits
        raises ScriptRuntimeError here; drive those with `start` and `ScriptRun.resume`."""
        result = self.start(req)
        if isinstance(result, ScriptRun):
            effect = type(result.effect).__name__
            result.cancel()
            raise ScriptRuntimeError(
                f"The script waits for the gateway ({effect}); run it through a driver "
                "(routing.script_run) rather than handle().")
        return result

    def start(self, req: ScriptRequest) -> Outcome | ScriptRun:
        """Route and run one request: its Outcome, or a ScriptRun waiting for an effect.
        Raises ScriptRuntimeError (or a subclass) when the script fails; the runtime stays
        usable either way."""
        routes = self._compiled.routes
        if routes is None:
            return self._select(req)
        method, path = req.method, req.path
        m = match(routes.root, method, path)
        target = m.target
        fallback_status = 0
        if target is not None:
            if target.chain == NO_LUA:  # a backend mount with no middleware
                return Outcome(ProxyAction((target.backend,), path=m.rest), m.pattern,
                               m.params)
            chain_id, pattern, labels = target.chain, m.pattern, target.labels
        else:
            fallback = m.fallback
            assert fallback is not None
            if fallback.chain == NO_LUA:
                return Outcome(router_reject(method, m.allow), m.pattern, m.params)
            # chi reports the pattern of the mounts on the way (None at the root)
            chain_id, pattern, labels = fallback.chain, m.pattern, fallback.labels
            fallback_status = 405 if m.allow else 404
        params = m.params
        blob = _header_blob(req.headers)
        # Param values are slices of the path, hence the path counted twice.
        need = (2 * len(path) + len(req.query_string) + len(blob) + len(req.host)
                + len(req.client_ip) + len(req.request_id) + len(req.tenant))
        matched = (method, pattern, params, labels, m.allow,
                   target.backend if target is not None else "", m.rest)
        args = (chain_id, pattern, fallback_status, method, path, req.query_string, req.host,
                req.scheme, req.client_ip, req.tenant, req.request_id, blob, req.websocket,
                None, *(chain.from_iterable(params.items()) if params else ()))
        # The hot path, inline: one protected call, and most scripts are done after it (their
        # Lua time is the caller's to measure: Outcome.lua_seconds stays 0 then).
        started = time.perf_counter()
        runtime, res = self._call(self._compiled.runtime, "run", need, args, self._budget)
        if res[_STATE] == "done":
            return self._done(res + _PAD if len(res) < _SIZE else res, matched, None, 0.0)
        return self._first_step(runtime, res, matched, time.perf_counter() - started)

    def _select(self, req: ScriptRequest) -> Outcome | ScriptRun:
        blob = _header_blob(req.headers)
        need = (len(req.path) + len(req.query_string) + len(blob) + len(req.host)
                + len(req.client_ip) + len(req.request_id) + len(req.tenant))
        parts: list[str] = []
        for b in req.backends:
            parts += (_scrub(b.name), _scrub(b.url), str(int(b.weight)),
                      "1" if b.healthy else "0")
            need += len(b.name) + len(b.url) + 64
        backends = "\0".join(parts)
        return self._step(
            self._compiled.runtime, "run", need,
            (0, None, 0, req.method, req.path, req.query_string, req.host, req.scheme,
             req.client_ip, req.tenant, req.request_id, blob, req.websocket, backends),
            (req.method, None, EMPTY, (), (), "", "/"), None)

    def _step(self, runtime: Runtime, which: str, need: int, args: tuple[Any, ...],
              m: _Match, run: ScriptRun | None) -> Outcome | ScriptRun:
        used = run.used_s if run is not None else 0.0
        started = time.perf_counter()
        try:
            runtime, res = self._call(runtime, which, need, args, self._budget - used)
        except BaseException:
            if run is not None:  # the coroutine is gone or is freed here
                self._abandon(runtime, args[0], self._budget - used)
            raise
        finally:
            used += time.perf_counter() - started
        if run is None:
            return self._first_step(runtime, res, m, used)
        return self._next_step(runtime, res, m, used, run)

    def _first_step(self, runtime: Runtime, res: tuple[Any, ...], m: _Match,
                    used: float) -> Outcome | ScriptRun:
        state = res[_STATE]
        if state == "wait":
            run = ScriptRun(self, runtime, m)
            runtime.pending += 1
            return self._next_step(runtime, res, m, used, run)
        if state == "done":
            return self._done(padded(res), m, None, used)
        raise self._failed(padded(res), None)

    def _next_step(self, runtime: Runtime, res: tuple[Any, ...], m: _Match, used: float,
                   run: ScriptRun) -> Outcome | ScriptRun:
        state = res[_STATE]
        if state == "wait":
            f = padded(res)
            run.used_s = used
            if f[_LOGS] is not None or f[_DROPPED]:
                run.logs.extend(log_lines(f[_LOGS]))
                run.dropped += f[_DROPPED] or 0
            run.token, run.effect = decode_effect(f, m[_BACKEND], m[_REST], m[_ALLOW])
            return run
        runtime.pending -= 1
        if state == "done":
            return self._done(padded(res), m, run, used)
        raise self._failed(padded(res), run)

    def _done(self, f: tuple[Any, ...], m: _Match, run: ScriptRun | None,
              used: float) -> Outcome:
        action = decode_action(f, _ACTION, m[_METHOD], m[_ALLOW], m[_BACKEND], m[_REST])
        ran = f[_RAN]
        logs = log_lines(f[_LOGS]) if f[_LOGS] is not None else ()
        dropped = f[_DROPPED] or 0
        if run is not None and (run.logs or run.dropped):
            logs = (*run.logs, *logs)
            dropped += run.dropped
        reqh = f[_REQH]
        return _new_outcome(action, m[_PATTERN], m[_PARAMS], m[_LABELS][:ran] if ran else (),
                            None if reqh is None else request_headers(reqh), logs, dropped,
                            decode_patch(f), used)

    def _failed(self, f: tuple[Any, ...], run: ScriptRun | None) -> ScriptRuntimeError:
        kind, message, line = fail_kind(f)
        limits = self.limits
        error = failure(message, kind == "timeout", line, budget_ms=limits.request_cpu_ms,
                        memory_bytes=limits.memory_bytes)
        if kind.startswith("body:"):
            reason = kind[5:]
            cls = {"too_large": BodyTooLarge, "memory": RuntimeBusy}.get(reason, BodyUnavailable)
            error = cls(error.message, lua_traceback=error.lua_traceback,
                        diagnostics=error.diagnostics)
            error.reason = reason
        elif kind.startswith("upstream:"):
            error = ResponseUnavailable(error.message, lua_traceback=error.lua_traceback,
                                        diagnostics=error.diagnostics)
            error.reason = kind[9:]
        elif kind == "memory":
            with self._lock:
                self._after_memory_error()
        if kind in ("timeout", "error"):
            self._collect_if_heavy()
        logs = log_lines(f[_LOGS])
        if run is not None:
            logs = (*run.logs, *logs)
        error.logs = logs  # type: ignore[attr-defined]
        return error

    def _call(self, runtime: Runtime, which: str, need: int, args: tuple[Any, ...],
              remaining_s: float) -> tuple[Runtime, tuple[Any, ...]]:
        # Values pushed from Python are allocated outside Lua's protection: bound them first.
        need += _CALL_OVERHEAD + 64 * len(args)
        if which == "run" and need > self._input_cap:
            raise ScriptRuntimeError(
                f"The request is too large to hand to the script ({need} bytes of path, "
                f"query, headers and params; the limit is {self._input_cap}).")
        with self._lock:
            if runtime.limit - runtime.lua.get_memory_used() < need + HEADROOM_SLACK:
                runtime = self._make_room(runtime, need, which)
            fn = runtime.run_fn if which == "run" else runtime.resume_fn
            deadline = time.perf_counter() + max(remaining_s, 0.0)
            try:
                try:
                    res = runtime.xpcall(fn, runtime.on_error, deadline, *args)
                except UnicodeEncodeError:  # text beyond latin-1: hand Lua its UTF-8 bytes
                    res = runtime.xpcall(fn, runtime.on_error, deadline,
                                         *[_as_bytes_text(a) for a in args])
            except lupa.LuaMemoryError:
                runtime.recover()
                self._after_memory_error()
                raise failure("not enough memory", False, None, budget_ms=0,
                              memory_bytes=self.limits.memory_bytes) from None
            except lupa.LuaError as exc:  # outside protection: should not happen; start over
                self._replace_runtime()
                raise ScriptRuntimeError(f"The script runtime failed: {exc}") from None
            if res[0] is True:
                return runtime, res
            timed_out, line = runtime.recover()
            error = failure(res[1], timed_out, line, budget_ms=self.limits.request_cpu_ms,
                            memory_bytes=self.limits.memory_bytes)
            if isinstance(error, ScriptMemoryError):
                self._after_memory_error()
        raise error

    def _fits(self, runtime: Runtime, need: int) -> bool:
        need += _CALL_OVERHEAD + 64
        with self._lock:
            return runtime.lua is not None and runtime.ensure_headroom(need)

    def _abandon(self, runtime: Runtime, token: int, remaining_s: float) -> None:
        """Free a waiting request's coroutine (if Lua still holds it) and forget the run.
        Its to-be-closed variables run, within what is left of its CPU budget."""
        with self._lock:
            if runtime.lua is not None:
                deadline = time.perf_counter() + max(remaining_s, 0.0)
                try:
                    ok = runtime.call(runtime.cancel_fn, deadline, token)[0]
                except lupa.LuaError:
                    ok = False
                if ok is not True:
                    runtime.recover()
            runtime.pending -= 1

    # -- memory -----------------------------------------------------------------------------

    def _make_room(self, runtime: Runtime, need: int, which: str) -> Runtime:
        if runtime.ensure_headroom(need):
            return runtime
        if which != "run" or runtime.pending > 0 or runtime is not self._compiled.runtime:
            # Concurrent requests hold what fills the cap (bodies, most likely): this one
            # fails, they go on. Starting a new runtime here would lift the bound.
            raise RuntimeBusy(
                f"The script's runtime holds {runtime.pending} waiting requests and has no "
                "memory left for another one now.")
        # The script keeps more and more state between requests (in upvalues): start over.
        self._replace_runtime()
        runtime = self._compiled.runtime
        if not runtime.ensure_headroom(need):
            raise ScriptMemoryError("The script's runtime has no memory left for this request.")
        return runtime

    def _collect_if_heavy(self) -> None:
        """A failed request can leave a lot behind (a runaway recursion's stack of many
        megabytes): collect it now, outside any request's budget, rather than in the middle
        of whichever request allocates next."""
        with self._lock:
            compiled = self._compiled
            runtime = compiled.runtime
            if runtime.lua is not None and \
                    runtime.memory_used() - compiled.loaded_bytes > self.limits.memory_bytes // 4:
                runtime.collect()

    def _after_memory_error(self) -> None:
        """A script that keeps state in upvalues can fill its cap for good (every later
        request would fail). If, after a full collection, more than half the budget is
        still held beyond what registration left, start over with a fresh runtime -- unless
        waiting requests hold it (their bodies are freed as they finish)."""
        compiled = self._compiled
        if compiled.runtime.pending > 0:
            return
        compiled.runtime.collect()
        if compiled.runtime.memory_used() - compiled.loaded_bytes > self.limits.memory_bytes // 2:
            self._replace_runtime()

    def _replace_runtime(self) -> None:
        old: Compiled = self._compiled
        try:
            self._compiled = compile_script(self._source, backend_names=self._backend_names,
                                            limits=self.limits)
        except ScriptLoadError as exc:
            raise ScriptMemoryError(f"The script's runtime could not be rebuilt: {exc}") from None
        if old.runtime.pending == 0:
            old.runtime.close()
        # else: the runs waiting on it keep it alive; it is freed with the last of them.


def _answer_args(answer: Answer) -> tuple[tuple[Any, ...], int]:
    """The answer as K.resume's arguments (boundary.py's answer records), and its size."""
    if isinstance(answer, Head):
        blob = _header_blob_pairs(answer.headers)
        return B.HEAD_ANSWER.pack(status=answer.status, headers=blob,
                                  backend=answer.backend), len(blob) + 256
    if isinstance(answer, BodyAnswer):
        body = None if answer.body is None else answer.body.decode("latin-1")
        return B.BODY_ANSWER.pack(body=body, error=answer.error), len(body or "") + 64
    if isinstance(answer, CallAnswer):
        if answer.error is not None:
            return B.CALL_ANSWER.pack(error=answer.error), 64
        blob = _header_blob_pairs(answer.headers)
        body = answer.body.decode("latin-1")
        return B.CALL_ANSWER.pack(status=answer.status, headers=blob, body=body), \
            len(blob) + len(body) + 256
    if isinstance(answer, RenderAnswer):
        blob = _header_blob_pairs(answer.headers)
        body = answer.body.decode("latin-1")
        return B.RENDER_ANSWER.pack(status=answer.status, headers=blob, body=body), \
            len(blob) + len(body) + 256
    if isinstance(answer, JwtAnswer):
        claims = answer.claims_json
        return B.JWT_ANSWER.pack(claims=claims, error=answer.error), len(claims or "") + 64
    if isinstance(answer, SharedAnswer):
        value = answer.value
        return B.SHARED_ANSWER.pack(value=value, error=answer.error), \
            (len(value) if isinstance(value, str) else 0) + 64
    if isinstance(answer, LimitAnswer):  # (per rate-limited request: no Record.pack)
        return _limit_args(answer), 128
    raise TypeError(f"not an answer: {answer!r}")


_LA = B.LIMIT_ANSWER
_LIMIT_ORDER = tuple(sorted(("allowed", "limit", "remaining", "reset_s", "degraded", "error"),
                            key=lambda field: getattr(_LA, field)))
assert _LIMIT_ORDER == _LA.fields, "LIMIT_ANSWER's fields changed: update _limit_args"


def _limit_args(a: LimitAnswer) -> tuple[Any, ...]:
    return (a.allowed, a.limit, a.remaining, a.reset_s, a.degraded, a.error)


def _without_payload(answer: Answer) -> Answer:
    """The answer to give when its payload does not fit in the runtime now."""
    if isinstance(answer, BodyAnswer):
        return BodyAnswer(error="memory")
    if isinstance(answer, CallAnswer):
        return CallAnswer(error="too_large")
    if isinstance(answer, RenderAnswer):
        return RenderAnswer(answer.status, (), b"")
    if isinstance(answer, JwtAnswer):
        return JwtAnswer(error="memory")
    if isinstance(answer, SharedAnswer):
        return SharedAnswer(error="memory")
    if isinstance(answer, LimitAnswer):
        return answer
    return Head(answer.status, (), getattr(answer, "backend", None))


def _header_blob(headers: Mapping[str, str]) -> str:
    """Headers as "\\nname\\0value" per header: one string to push instead of two per header.
    request.lua looks names up in it with a plain find, so a NUL or LF inside a name or a
    value (which HTTP parsers refuse anyway) is removed rather than trusted."""
    if not headers:
        return ""
    blob = "\n" + "\n".join(map("\0".join, headers.items()))
    n = len(headers)
    # A NUL or LF inside a name could fake another header in the blob: check both counts.
    if blob.count("\0") != n or blob.count("\n") != n:
        blob = "".join(f"\n{_scrub(k)}\0{_scrub(v)}" for k, v in headers.items())
    return blob


def _header_blob_pairs(headers: Any) -> str:
    """A response's (name, value) pairs as a lookup blob: lower-case names, repeated headers
    joined with ", " as for requests. What the script reads is a view: headers it does not
    change reach the client exactly as the backend sent them, repeats included."""
    joined: dict[str, str] = {}
    for name, value in headers:
        name = name.lower()
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return _header_blob(joined)


def _scrub(text: str) -> str:
    return text.replace("\0", "").replace("\n", "").replace("\r", "")


def _as_bytes_text(value: Any) -> Any:
    """A str with characters beyond latin-1 becomes its UTF-8 bytes, one char per byte."""
    if isinstance(value, str):
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            return value.encode("utf-8").decode("latin-1")
    return value


def load_script(source: str | bytes, *, tenant: str,
                backend_names: Collection[str] | None = None,
                limits: Limits = Limits()) -> LoadedScript:
    """Register `source` in a fresh sandbox; ScriptLoadError lists every problem found."""
    return LoadedScript(source, tenant=tenant, backend_names=backend_names, limits=limits)
