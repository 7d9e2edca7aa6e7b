"""LoadedScript: a tenant's script, registered once, then handling requests.

Per request, `handle` matches in Python and makes at most one protected Lua call (none for
a default 404/405 or a backend mount without middleware). This is the gateway's hot path,
so it calls the runtime's xpcall directly rather than through layers of helpers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Mapping
from itertools import chain
from typing import Any

import lupa.lua54 as lupa

from luascripts.engine.compile import Compiled, compile_script
from luascripts.engine.errors import ScriptLoadError, ScriptMemoryError, ScriptRuntimeError
from luascripts.engine.matching import match
from luascripts.engine.results import EMPTY, decode, failure, router_reject
from luascripts.engine.routes import NO_LUA
from luascripts.engine.runtime import HEADROOM_SLACK, Runtime
from luascripts.engine.types import Limits, Outcome, ProxyAction, RouteInfo, ScriptRequest

MAX_INPUT_BYTES = 1024 * 1024  # path, query, headers... handed to one call
_CALL_OVERHEAD = 2048  # Lua string headers and the call's stack slots


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
        """Route and run one request. Raises ScriptRuntimeError (or its timeout and memory
        subclasses) when the script fails; the runtime stays usable either way."""
        routes = self._compiled.routes
        if routes is None:
            return self._select(req)
        method, path = req.method, req.path
        m = match(routes.root, method, path)
        target = m.target
        if target is not None:
            if target.chain == NO_LUA:  # a backend mount with no middleware
                return Outcome(ProxyAction((target.backend,), path=m.rest), target.pattern,
                               m.params)
            chain_id, pattern, labels = target.chain, target.pattern, target.labels
        else:
            fallback = m.fallback
            assert fallback is not None
            if fallback.chain == NO_LUA:
                return Outcome(router_reject(method, m.allow), None, m.params)
            chain_id, pattern, labels = fallback.chain, None, fallback.labels
        params = m.params
        blob = _header_blob(req.headers)
        # Param values are slices of the path, hence the path counted twice.
        need = (2 * len(path) + len(req.query_string) + len(blob) + len(req.host)
                + len(req.client_ip) + len(req.request_id) + len(req.tenant))
        res = self._call(
            False, need, chain_id, pattern, method, path, req.query_string, req.host,
            req.scheme, req.client_ip, req.tenant, req.request_id, blob,
            *(chain.from_iterable(params.items()) if params else ()))
        return decode(res, method=method, pattern=pattern, params=params, labels=labels,
                      allow=m.allow, backend=target.backend if target is not None else "",
                      rest=m.rest)

    def _select(self, req: ScriptRequest) -> Outcome:
        blob = _header_blob(req.headers)
        quads: list[Any] = []
        need = (len(req.path) + len(req.query_string) + len(blob) + len(req.host)
                + len(req.client_ip) + len(req.request_id) + len(req.tenant))
        for b in req.backends:
            quads += (b.name, b.url, int(b.weight), bool(b.healthy))
            need += len(b.name) + len(b.url) + 64
        res = self._call(True, need, req.method, req.path, req.query_string, req.host,
                         req.scheme, req.client_ip, req.tenant, req.request_id, blob, *quads)
        return decode(res, method=req.method, pattern=None, params=EMPTY, labels=())

    def _call(self, selector: bool, need: int, *args: Any) -> tuple[Any, ...]:
        # Values pushed from Python are allocated outside Lua's protection: bound them first.
        need += _CALL_OVERHEAD + 64 * len(args)
        if need > self._input_cap:
            raise ScriptRuntimeError(
                f"The request is too large to hand to the script ({need} bytes of path, "
                f"query, headers and params; the limit is {self._input_cap}).")
        with self._lock:
            runtime = self._compiled.runtime
            if runtime.limit - runtime.lua.get_memory_used() < need + HEADROOM_SLACK:
                runtime = self._make_room(need)
            fn = runtime.selector_fn if selector else runtime.run_fn
            deadline = time.perf_counter() + self._budget
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
                return res
            timed_out, line = runtime.recover()
            error = failure(res[1], timed_out, line, budget_ms=self.limits.request_cpu_ms,
                            memory_bytes=self.limits.memory_bytes)
            if isinstance(error, ScriptMemoryError):
                self._after_memory_error()
        raise error

    # -- memory -----------------------------------------------------------------------------

    def _make_room(self, need: int) -> Runtime:
        runtime = self._compiled.runtime
        if runtime.ensure_headroom(need):
            return runtime
        # The script keeps more and more state between requests (in upvalues): start over.
        self._replace_runtime()
        runtime = self._compiled.runtime
        if not runtime.ensure_headroom(need):
            raise ScriptMemoryError("The script's runtime has no memory left for this request.")
        return runtime

    def _after_memory_error(self) -> None:
        """A script that keeps state in upvalues can fill its cap for good (every later
        request would fail). If, after a full collection, more than half the budget is
        still held beyond what registration left, start over with a fresh runtime."""
        compiled = self._compiled
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
        old.runtime.close()


def _header_blob(headers: Mapping[str, str]) -> str:
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
