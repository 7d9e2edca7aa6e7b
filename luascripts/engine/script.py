"""LoadedScript: a tenant's script, registered once, then handling requests.

`compile_script` is the one path from source to a ready script, shared by `load_script` and
`validate`: source checks, a fresh sandboxed runtime, registration under the registration
budget, route compilation, chain definition. Per request, `handle` matches in Python and
makes at most one protected Lua call (none for a default 404/405 or an unguarded mount).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from itertools import chain
from typing import Any

import lupa.lua54 as lupa

from luascripts.engine.errors import (
    ScriptLoadError,
    ScriptMemoryError,
    ScriptRuntimeError,
)
from luascripts.engine.matching import Match, match
from luascripts.engine.results import EMPTY, decode, failure, router_reject
from luascripts.engine.routes import NO_LUA, CompiledRoutes, compile_routes, pattern_errors
from luascripts.engine.runtime import HEADROOM_SLACK, Runtime
from luascripts.engine.source import check_source, diagnostic_from_lua
from luascripts.engine.types import (
    Diagnostic,
    Limits,
    Outcome,
    ProxyAction,
    RouteInfo,
    ScriptRequest,
)

MAX_INPUT_BYTES = 1024 * 1024  # path + query + headers handed to one call
_CALL_OVERHEAD = 2048  # Lua string headers and the call's stack slots


@dataclass(slots=True)
class Compiled:
    runtime: Runtime
    routes: CompiledRoutes | None  # None for a selector script
    is_selector: bool


def compile_script(source: str | bytes, *, backend_names: Collection[str] | None,
                   limits: Limits) -> Compiled:
    """Source -> registered runtime and compiled routes, or ScriptLoadError."""
    data, problem = check_source(source, limits)
    if data is None:
        raise ScriptLoadError((problem,))  # type: ignore[arg-type]
    names = None if backend_names is None else sorted(backend_names)
    runtime = Runtime(limits)
    try:
        return _register(runtime, data, names, limits)
    except BaseException:
        runtime.close()
        raise


def _register(runtime: Runtime, data: bytes, names: list[str] | None,
              limits: Limits) -> Compiled:
    deadline = time.perf_counter() + limits.register_cpu_ms / 1000
    try:
        res = runtime.register(data, "", names, deadline)
    except lupa.LuaMemoryError:
        runtime.recover()
        raise ScriptLoadError((Diagnostic(None, None, _memory_message(limits)),)) from None
    if res[0] is not True:
        timed_out, line = runtime.recover()
        err = failure(res[1], timed_out, line, budget_ms=limits.register_cpu_ms,
                      memory_bytes=limits.memory_bytes, phase="registration")
        diagnostics = [_load_diagnostic(err, data, timed_out, line, limits)]
        exported = runtime.export()
        if exported[0] is True:
            diagnostics += pattern_errors(exported[1:], names)
        raise ScriptLoadError(tuple(sorted(diagnostics, key=lambda d: d.line or 0)))
    status = res[1]
    if status == "syntax":
        raise ScriptLoadError((diagnostic_from_lua(str(res[2]), data),))
    if status == "empty":
        raise ScriptLoadError((Diagnostic(None, None,
                                          "The script registers no routes and defines no "
                                          "on_route_request(request, backends) function."),))
    if status == "badselector":
        raise ScriptLoadError((Diagnostic(None, None,
                                          "on_route_request must be a function, "
                                          f"not a {res[2]}."),))
    is_selector = bool(res[2])
    if is_selector:
        return Compiled(runtime, None, True)
    exported = runtime.export()
    if exported[0] is not True:
        raise ScriptLoadError((Diagnostic(None, None, _memory_message(limits)),))
    compiled, errors = compile_routes(exported[1:], names)
    if compiled is None:
        raise ScriptLoadError(tuple(sorted(errors, key=lambda d: d.line or 0)))
    runtime.define_chains(compiled.chains)
    return Compiled(runtime, compiled, False)


def _memory_message(limits: Limits) -> str:
    return (f"Loading the script used more than its {limits.memory_bytes // (1024 * 1024)} "
            "MiB memory limit.")


def _load_diagnostic(err: ScriptRuntimeError, data: bytes, timed_out: bool,
                     line: int | None, limits: Limits) -> Diagnostic:
    if timed_out:
        return Diagnostic(line, None, f"Loading the script took longer than its "
                                      f"{limits.register_cpu_ms:g} ms CPU budget.")
    if err.diagnostics and err.diagnostics[0].message == "memory limit exceeded":
        return Diagnostic(None, None, _memory_message(limits))
    return err.diagnostics[0] if err.diagnostics else Diagnostic(None, None, err.message)


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

    def close(self) -> None:
        with self._lock:
            self._compiled.runtime.close()

    # -- requests -------------------------------------------------------------------------

    def handle(self, req: ScriptRequest) -> Outcome:
        compiled = self._compiled
        if compiled.is_selector:
            return self._select(req)
        m: Match = match(compiled.routes.root, req.method, req.path)  # type: ignore[union-attr]
        target = m.target
        if target is not None:
            if target.chain == NO_LUA:  # a backend mount with no middleware
                return Outcome(ProxyAction((target.backend,), path=m.rest), target.pattern,
                               m.params)
            chain_id, pattern, labels = target.chain, target.pattern, target.labels
        else:
            fallback = m.fallback
            if fallback.chain == NO_LUA:  # type: ignore[union-attr]
                return Outcome(router_reject(req.method, m.allow), None, m.params)
            chain_id, pattern, labels = fallback.chain, None, fallback.labels  # type: ignore
        params = m.params
        args: list[Any] = [0.0, chain_id, pattern, req.method, req.path, req.query_string,
                           req.host, req.scheme, req.client_ip, req.tenant, req.request_id,
                           _header_blob(req.headers)]
        if params:
            args.extend(chain.from_iterable(params.items()))
        res = self._call(0, args)
        return decode(res, method=req.method, pattern=pattern, params=params, labels=labels,
                      allow=m.allow, backend=target.backend if target is not None else "",
                      rest=m.rest)

    def _select(self, req: ScriptRequest) -> Outcome:
        args: list[Any] = [0.0, req.method, req.path, req.query_string, req.host, req.scheme,
                           req.client_ip, req.tenant, req.request_id, _header_blob(req.headers)]
        for b in req.backends:
            args += (b.name, b.url, int(b.weight), bool(b.healthy))
        res = self._call(1, args)
        return decode(res, method=req.method, pattern=None, params=EMPTY, labels=())

    def _call(self, which: int, args: list[Any]) -> tuple[Any, ...]:
        # Strings pushed from Python are allocated outside Lua's protection: bound them.
        need = sum(map(len, args[3:12] if which == 0 else args[1:10])) + _CALL_OVERHEAD
        if len(args) > 12:
            need += sum(map(len, map(str, args[12:])))
        if need > self._input_cap:
            raise ScriptRuntimeError(
                f"The request is too large to hand to the script ({need} bytes of path, "
                f"query and headers; the limit is {self._input_cap}).")
        with self._lock:
            runtime = self._runtime_with_room(need)
            args[0] = time.perf_counter() + self._budget
            call = runtime.run_selector if which else runtime.run
            try:
                try:
                    res = call(*args)
                except UnicodeEncodeError:
                    res = call(*[_as_bytes_text(a) for a in args])
            except lupa.LuaMemoryError:
                runtime.recover()
                raise failure("not enough memory", False, None, budget_ms=0,
                              memory_bytes=self.limits.memory_bytes) from None
            except lupa.LuaError as exc:  # outside protection: should not happen; start over
                self._replace_runtime()
                raise ScriptRuntimeError(f"The script runtime failed: {exc}") from None
            if res[0] is True:
                return res
            timed_out, line = runtime.recover()
        raise failure(res[1], timed_out, line, budget_ms=self.limits.request_cpu_ms,
                      memory_bytes=self.limits.memory_bytes)

    def _runtime_with_room(self, need: int) -> Runtime:
        runtime = self._compiled.runtime
        if runtime.limit - runtime.lua.get_memory_used() >= need + HEADROOM_SLACK \
                or runtime.ensure_headroom(need):
            return runtime
        # The script keeps more and more state between requests (in upvalues): start over.
        self._replace_runtime()
        runtime = self._compiled.runtime
        if not runtime.ensure_headroom(need):
            raise ScriptMemoryError("The script's runtime has no memory left for this request.")
        return runtime

    def _replace_runtime(self) -> None:
        old = self._compiled
        try:
            self._compiled = compile_script(self._source, backend_names=self._backend_names,
                                            limits=self.limits)
        except ScriptLoadError as exc:
            raise ScriptMemoryError(f"The script's runtime could not be rebuilt: {exc}") from None
        old.runtime.close()


def _header_blob(headers: Any) -> str:
    """Headers as "\\nname\\0value" per header: one string to push instead of two per header.
    dispatch.lua looks names up in it with a plain find, so a NUL or LF inside a name or a
    value (which HTTP parsers refuse anyway) is removed rather than trusted."""
    if not headers:
        return ""
    blob = "\n" + "\n".join(map("\0".join, headers.items()))
    n = len(headers)
    # A NUL or LF inside a name could fake another header in the blob: check both counts.
    if blob.count("\0") != n or blob.count("\n") != n:
        blob = "".join(f"\n{_scrub(k)}\0{_scrub(v)}" for k, v in headers.items())
    return blob


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
