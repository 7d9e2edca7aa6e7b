"""The data plane's in-process work for one request, without the network or the ASGI server.

What routing.gateway.Gateway does around the proxying for scenario 6's request, with 1,000
tenants in the resolver: parse_scope (validation, headers), resolve, script_request, the Lua
step, decide (the upstream plan), the counters, and the access-log line (JSON, through the
gateway's own access-log handler, to a stream that discards it). Compare with the per-request CPU of
scenario 6 minus scenario 4 in bench/run.py: what the gateway adds on top of the bare
passthrough.
"""

from __future__ import annotations

import io
import logging
from types import MappingProxyType

import pytest

from bench.micro import support
from bench.seed import script_source
from luascripts.engine import load_script
from routing.conf import get_conf
from routing.plan import UpstreamPlan, decide, script_request
from routing.request import parse_scope
from routing.snapshot import BackendEntry, TenantEntry, compile_snapshot
from routing.stats import Stats, access_line, log_access

CONF = get_conf()
SCOPE = {
    "type": "http", "http_version": "1.1", "method": "GET", "scheme": "http",
    "path": "/api/v1/svc40/items/12345", "raw_path": b"/api/v1/svc40/items/12345",
    "query_string": b"page=2&limit=10&sort=desc", "root_path": "",
    "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    "headers": [(b"host", b"t650.bench.local"),
                (b"user-agent", b"chistone-bench/1.0 (wrk)"),
                (b"accept", b"application/json"), (b"accept-encoding", b"gzip, deflate"),
                (b"accept-language", b"en-GB,en;q=0.9"),
                (b"x-request-id", b"4f9c2b1e-7d3a-4c55-9e0b-bench"),
                (b"authorization", b"Bearer bench-token-0123456789abcdef"),
                (b"cookie", b"session=abc123def456; theme=dark")],
}


def _snapshot(tenants: int):
    script = load_script(script_source(50), tenant="shared", backend_names=["backend"])
    entries = []
    for i in range(tenants):
        backend = BackendEntry.from_url(id=i, tenant=f"t{i}", name="backend",
                                        url="http://127.0.0.1:9")
        entries.append(TenantEntry(
            id=i, slug=f"t{i}", name=f"T{i}", prefix="", domains=(support.domain(i),),
            backends=MappingProxyType({"backend": backend}), default_pool=(backend,),
            script=script, version_id=i, version_number=1))
    return compile_snapshot(1, entries)


SNAPSHOT = _snapshot(1000)


class _Discard(io.TextIOBase):
    """A stream that keeps nothing (a StringIO would grow by every benchmarked line)."""

    def write(self, text: str) -> int:
        return len(text)


@pytest.fixture
def quiet_access_log():
    """The access logger as the gateway sets it up (routing.stats' batching handler, when this
    version has one), writing to memory instead of stderr."""
    from routing import stats

    logger = logging.getLogger("chistone.access")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = []
    install = getattr(stats, "install_buffered_access_log", None)
    handler = install() if install is not None else None
    if handler is not None:
        handler.stream = _Discard()
    else:
        logger.addHandler(logging.StreamHandler(_Discard()))
        logger.setLevel(logging.INFO)
        logger.propagate = False
    yield
    if handler is not None:
        stats.uninstall_access_log(handler)
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def _step(stats: Stats, access: bool):
    request = parse_scope(SCOPE, CONF)
    match = SNAPSHOT.resolver.resolve(request.host, request.raw_path)
    tenant = match.tenant
    outcome = tenant.script.handle(script_request(tenant, request, match.path))
    plan = decide(tenant, request, match.path, outcome)
    headers = plan.headers_for(plan.backend)
    url = plan.url_for(plan.backend)
    stats.record(tenant.slug, outcome.route_pattern, 200, total=0.001, upstream=0.0009,
                 lua=0.00002, sent=12)
    if access:
        log_access(access_line(
            request_id=request.request_id, tenant=tenant.slug, route=outcome.route_pattern,
            method="GET", path=request.raw_path, status=200, backend="backend", sent=12,
            upstream=0.0009, total=0.001, lua=0.00002, retries=0, error=None,
            client=request.client_ip))
    return plan, headers, url


def bench_gateway_step(benchmark, quiet_access_log):
    """Everything above, with the access-log line (on by default in production)."""
    stats = Stats()
    plan, headers, url = benchmark(_step, stats, True)
    assert isinstance(plan, UpstreamPlan) and url.endswith("/api/v1/svc40/items/12345?page=2"
                                                           "&limit=10&sort=desc")


def bench_gateway_step_no_access_log(benchmark):
    stats = Stats()
    plan, _headers, _url = benchmark(_step, stats, False)
    assert isinstance(plan, UpstreamPlan)


def bench_parse_scope(benchmark):
    request = benchmark(parse_scope, SCOPE, CONF)
    assert request.host == "t650.bench.local"
