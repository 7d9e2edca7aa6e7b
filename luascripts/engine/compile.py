"""From source text to a registered runtime with compiled routes (or ScriptLoadError).

`compile_script` is the one path shared by `load_script` and `validate`: source checks, a
fresh sandboxed runtime, registration under the registration budget, route compilation,
chain definition. Every problem becomes a Diagnostic with a line where one is known.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass

import lupa.lua54 as lupa

from luascripts.engine.errors import ScriptLoadError, ScriptRuntimeError
from luascripts.engine.results import failure, mib
from luascripts.engine.routes import CompiledRoutes, compile_routes, pattern_errors
from luascripts.engine.runtime import Runtime
from luascripts.engine.source import check_source, diagnostic_from_lua
from luascripts.engine.types import Diagnostic, Limits


@dataclass(slots=True)
class Compiled:
    runtime: Runtime
    routes: CompiledRoutes | None  # None for a selector script
    is_selector: bool
    loaded_bytes: int = 0  # Lua memory right after registration


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
        res = runtime.register(data, names, deadline)
    except lupa.LuaMemoryError:
        runtime.recover()
        raise ScriptLoadError((Diagnostic(None, None, _memory_message(limits)),)) from None
    if res[0] is not True:
        timed_out, line = runtime.recover()
        err = failure(res[1], timed_out, line, budget_ms=limits.register_cpu_ms,
                      memory_bytes=limits.memory_bytes, phase="registration")
        diagnostics = [_load_diagnostic(err, timed_out, line, limits)]
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
        return Compiled(runtime, None, True, _loaded_bytes(runtime, limits))
    exported = runtime.export()
    if exported[0] is not True:
        raise ScriptLoadError((Diagnostic(None, None, _memory_message(limits)),))
    compiled, errors = compile_routes(exported[1:], names)
    if compiled is None:
        raise ScriptLoadError(tuple(sorted(errors, key=lambda d: d.line or 0)))
    runtime.define_chains(compiled.chains)
    return Compiled(runtime, compiled, False, _loaded_bytes(runtime, limits))


def _loaded_bytes(runtime: Runtime, limits: Limits) -> int:
    """Memory held once loaded. A script holding most of its budget at load would fail (and
    be rebuilt, at registration cost) on every request: refuse it now instead."""
    runtime.collect()
    used = runtime.memory_used()
    if used - runtime.baseline > limits.memory_bytes * 3 // 4:
        raise ScriptLoadError((Diagnostic(None, None, (
            f"Once loaded, the script holds {(used - runtime.baseline) // 1024} KiB, more "
            f"than three quarters of its {limits.memory_bytes // 1024} KiB memory limit; "
            "requests need the rest.")),))
    return used


def _memory_message(limits: Limits) -> str:
    return f"Loading the script used more than its {mib(limits.memory_bytes)} memory limit."


def _load_diagnostic(err: ScriptRuntimeError, timed_out: bool, line: int | None,
                     limits: Limits) -> Diagnostic:
    if timed_out:
        return Diagnostic(line, None, f"Loading the script took longer than its "
                                      f"{limits.register_cpu_ms:g} ms CPU budget.")
    if err.diagnostics and err.diagnostics[0].message == "memory limit exceeded":
        return Diagnostic(None, None, _memory_message(limits))
    return err.diagnostics[0] if err.diagnostics else Diagnostic(None, None, err.message)
