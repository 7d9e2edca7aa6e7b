"""The whole Lua step: load_script(...).handle(ScriptRequest) -> Outcome.

Matching in Python, then one protected Lua call through the middleware into the handler, and
the decoding of its result. The request is scenario 6's (8 headers, a query string, route 40
of 50); `not_found` is a path no route matches: the middleware still runs (in Lua), then the
router's default 404.
"""

from __future__ import annotations

import pytest

from bench.micro import support
from bench.seed import script_source
from luascripts.engine import ProxyAction, RejectAction, ScriptRequest, load_script

_LOADED = {}


def _script(routes: int):
    if routes not in _LOADED:
        _LOADED[routes] = load_script(script_source(routes), tenant="bench",
                                      backend_names=["backend"])
    return _LOADED[routes]


def _request(path: str) -> ScriptRequest:
    return ScriptRequest("GET", path, "page=2&limit=10&sort=desc", "bench.local", "http",
                         "127.0.0.1", support.HEADERS, "bench",
                         "4f9c2b1e-7d3a-4c55-9e0b-bench")


@pytest.mark.parametrize("routes", [50, 1000])
def bench_lua_step_proxy(benchmark, routes):
    loaded = _script(routes)
    req = _request(support.bench_request_path(routes))
    outcome = benchmark(loaded.handle, req)
    assert isinstance(outcome.action, ProxyAction) and outcome.action.backends == ("backend",)


def bench_lua_step_not_found(benchmark):
    loaded = _script(50)
    outcome = benchmark(loaded.handle, _request("/nowhere"))
    assert isinstance(outcome.action, RejectAction) and outcome.action.status == 404


def bench_load_script_50_routes(benchmark):
    """Registering one tenant's script: a fresh sandboxed Lua state, registration, compile."""
    source = script_source(50)
    loaded = benchmark(load_script, source, tenant="bench", backend_names=["backend"])
    assert len(loaded.routes) == 50
