"""Route matching in the engine's tree (luascripts.engine.matching.match), 50 and 1,000 routes.

Two scripts: the harness's (`bench/seed.py`: one middleware, `GET /api/v1/svc<i>/items/{id}`
for every i; the request hits 80 % down the table, like scenario 6's route 40 of 50), and a
mixed one (static, `{param}`, `{param:regexp}`, a backend mount and sub-routers; several
requests, including a 404). Pure Python: no Lua runs while matching.
"""

from __future__ import annotations

import pytest

from bench.micro import support
from bench.seed import script_source
from luascripts.engine import load_script
from luascripts.engine.matching import match

_SCRIPTS: dict[tuple[str, int], object] = {}


def _root(kind: str, routes: int):
    key = (kind, routes)
    if key not in _SCRIPTS:
        if kind == "bench":
            loaded = load_script(script_source(routes), tenant="t", backend_names=["backend"])
        else:
            loaded = load_script(support.mixed_script(routes), tenant="t",
                                 backend_names=support.MIXED_BACKENDS)
        assert len(loaded.routes) == routes
        _SCRIPTS[key] = loaded
    return _SCRIPTS[key]._compiled.routes.root


@pytest.mark.parametrize("routes", [50, 1000])
def bench_match_bench_script(benchmark, routes):
    root = _root("bench", routes)
    path = support.bench_request_path(routes)
    found = benchmark(match, root, "GET", path)
    assert found.target is not None and found.params == {"id": "12345"}


@pytest.mark.parametrize("routes", [50, 1000])
def bench_match_mixed_script(benchmark, routes):
    """Five requests per round (static, {id}, {id:regexp}, mount, 404): time / 5 per match."""
    root = _root("mixed", routes)
    requests = support.mixed_paths(routes)

    def five():
        return [match(root, method, path) for method, path in requests]

    found = benchmark(five)
    assert [m.target is not None for m in found] == [True, True, True, True, False]
