"""The gateway in-process, with a scripted transport and stand-in scripts (unit level)."""

import asyncio
import json
import logging

import pytest

from luascripts.engine.types import Outcome, ProxyAction, RejectAction, RespondAction
from routing.gateway import Gateway
from routing.respond import ResponseAborted
from routing.snapshot import SnapshotHolder
from routing.upstream import Broken, ConnectFailed, ConnectTimedOut, ReadTimedOut
from tests.routing.asgi import call, http_scope
from tests.routing.fakes import FakeResponse, FakeScript, FakeTransport, backend, snapshot, tenant


def make(transport, *tenants, **kw):
    holder = SnapshotHolder()
    holder.swap(snapshot(*tenants))
    return Gateway(holder=holder, transport=transport, **kw)


def two_backends(script=None, **kw):
    return tenant("acme", domains=("acme.example.com",), script=script,
                  backends=[backend("a", port=9001), backend("b", port=9002)], **kw)


def always(action, pattern="/x"):
    return FakeScript(lambda req: Outcome(action, route_pattern=pattern))


async def test_unknown_tenant_is_404_json_and_no_script_runs():
    script = always(RespondAction(200, b"hi"))
    gw = make(FakeTransport(), two_backends(script))
    result = await call(gw, http_scope("/", host="nobody.example"))
    assert result.status == 404
    body = result.json()
    assert body["error"] == "no_tenant" and body["request_id"] == result.header("x-request-id")
    assert script.seen == []


async def test_not_loaded_is_503():
    gw = Gateway(holder=SnapshotHolder(), transport=FakeTransport())
    result = await call(gw, http_scope("/"))
    assert result.status == 503 and result.header("retry-after") == "5"
    assert result.json()["error"] == "config_not_loaded"


async def test_bad_request_is_400_before_anything():
    gw = make(FakeTransport(), two_backends())
    for scope in (http_scope("/", host=None), http_scope("//evil/x"),
                  http_scope("/", headers=[("host", "second.example")])):
        result = await call(gw, scope)
        assert result.status == 400, scope
        assert result.json()["error"] == "bad_request"


async def test_proxy_round_trip():
    upstream = FakeResponse(200, [(b"Content-Type", b"text/plain"), (b"Connection", b"X-Hop"),
                                  (b"X-Hop", b"1"), (b"Set-Cookie", b"a=1"),
                                  (b"Set-Cookie", b"b=2")], [b"hello"])
    transport = FakeTransport(upstream)
    script = always(ProxyAction(backends=("b",), path="/v2/x"))
    gw = make(transport, two_backends(script))
    result = await call(gw, http_scope("/x", method="POST", query="q=1",
                                       headers=[("x-request-id", "rid-1"),
                                                ("connection", "x-secret"), ("x-secret", "s")]),
                        body=b"payload")
    assert result.status == 200 and result.body == b"hello"
    assert result.header("x-request-id") == "rid-1"
    assert result.headers_all("set-cookie") == ["a=1", "b=2"]
    assert result.header("x-hop") is None
    assert upstream.released
    sent = transport.calls[0]
    assert sent.url == "http://127.0.0.1:9002/v2/x?q=1"
    assert sent.body == b"payload"
    names = [n for n, _ in sent.headers]
    assert "x-secret" not in names and "connection" not in names
    assert dict(sent.headers)["x-request-id"] == "rid-1"


async def test_streamed_request_body_keeps_content_length():
    transport = FakeTransport()
    gw = make(transport, two_backends())
    big = [b"x" * 50_000, b"y" * 50_000, b"z" * 50_000]
    result = await call(gw, http_scope("/up", method="PUT",
                                       headers=[("content-length", "150000")]), body=big)
    assert result.status == 200
    sent = transport.calls[0]
    assert sent.body == b"".join(big)
    assert dict(sent.headers)["content-length"] == "150000"


async def test_retry_when_nothing_reached_the_first_backend():
    transport = FakeTransport(ConnectFailed("refused"), FakeResponse(200, chunks=[b"second"]))
    gw = make(transport, two_backends(always(ProxyAction(backends=("a", "b")))))
    result = await call(gw, http_scope("/", method="POST"), body=b"x")
    assert result.status == 200 and result.body == b"second"
    assert [c.url.split("/")[2] for c in transport.calls] == ["127.0.0.1:9001", "127.0.0.1:9002"]
    assert dict(transport.calls[1].headers)["host"] == "127.0.0.1:9002"
    assert gw.stats.retries == 1


async def test_non_idempotent_request_is_not_retried_after_it_was_sent():
    transport = FakeTransport(Broken("reset"), FakeResponse())
    gw = make(transport, two_backends(always(ProxyAction(backends=("a", "b")))))
    result = await call(gw, http_scope("/", method="POST"), body=b"x")
    assert result.status == 502 and result.json()["error"] == "backend_broke"
    assert len(transport.calls) == 1


async def test_idempotent_request_is_retried_after_a_reset():
    transport = FakeTransport(Broken("reset"), FakeResponse(200, chunks=[b"ok"]))
    gw = make(transport, two_backends(always(ProxyAction(backends=("a", "b")))))
    result = await call(gw, http_scope("/", method="PUT"), body=b"x")
    assert result.status == 200 and len(transport.calls) == 2
    assert transport.calls[1].body == b"x"


async def test_timeouts_are_504_and_not_retried():
    transport = FakeTransport(ReadTimedOut("slow"), FakeResponse())
    gw = make(transport, two_backends(always(ProxyAction(backends=("a", "b")))))
    result = await call(gw, http_scope("/"))
    assert result.status == 504 and len(transport.calls) == 1
    transport = FakeTransport(ConnectTimedOut("syn"))
    gw = make(transport, two_backends(always(ProxyAction(backends=("a",)))))
    result = await call(gw, http_scope("/"))
    assert result.status == 504 and result.json()["error"] == "connect_timeout"


async def test_refused_single_backend_is_502():
    gw = make(FakeTransport(ConnectFailed("refused")),
              two_backends(always(ProxyAction(backends=("a",)))))
    result = await call(gw, http_scope("/"))
    assert result.status == 502 and result.json()["error"] == "backend_refused"


async def test_retry_budget_caps_retries():
    transport = FakeTransport(*[ConnectFailed("x")] * 40)
    gw = make(transport, two_backends(always(ProxyAction(backends=("a", "b")))))
    gw.budget.tokens = 1.0
    gw.budget.ratio = 0.0
    await call(gw, http_scope("/"))
    await call(gw, http_scope("/"))
    assert gw.stats.retries == 1


async def test_passive_health_takes_a_backend_out():
    transport = FakeTransport(*[ConnectFailed("refused")] * 3)
    gw = make(transport, two_backends(always(ProxyAction(backends=("a",)))))
    for _ in range(3):
        assert (await call(gw, http_scope("/"))).status == 502
    result = await call(gw, http_scope("/"))
    assert result.status == 503 and result.json()["error"] == "no_healthy_backend"
    assert len(transport.calls) == 3


async def test_backend_breaking_mid_body_aborts_the_response():
    upstream = FakeResponse(200, [(b"Content-Length", b"100")], [b"part", Broken("reset")])
    upstream.ready = lambda: False
    gw = make(FakeTransport(upstream), two_backends())
    with pytest.raises(ResponseAborted):
        await call(gw, http_scope("/"))
    assert upstream.closed


async def test_script_failure_is_500_without_details_and_other_tenants_work(caplog):
    def boom(req):
        raise RuntimeError("attempt to index a nil value (secret internals)")

    bad = tenant("bad", domains=("bad.example",), script=FakeScript(boom))
    good = two_backends(always(RespondAction(200, b"fine")))
    gw = make(FakeTransport(), bad, good)
    with caplog.at_level(logging.ERROR):
        result = await call(gw, http_scope("/", host="bad.example"))
    assert result.status == 500
    assert "secret internals" not in result.body.decode()
    assert result.json()["request_id"] in caplog.text and "secret internals" in caplog.text
    assert gw.stats.lua_errors == {("bad", "RuntimeError"): 1}
    assert (await call(gw, http_scope("/"))).body == b"fine"


async def test_reject_404_405_from_router():
    gw = make(FakeTransport(), two_backends(always(RejectAction(405, "nope", ("GET", "HEAD")))))
    result = await call(gw, http_scope("/", method="POST"))
    assert result.status == 405 and result.header("allow") == "GET, HEAD"
    gw = make(FakeTransport(), two_backends(always(RejectAction(404, "no route"))))
    result = await call(gw, http_scope("/"))
    assert result.status == 404 and result.json()["error"] == "no_route"


async def test_unavailable_tenant_is_503():
    gw = make(FakeTransport(), two_backends(unavailable="script version 3 was disabled"))
    result = await call(gw, http_scope("/"))
    assert result.status == 503 and "version 3" in result.json()["detail"]


async def test_client_disconnect_cancels_the_upstream_exchange():
    cancelled = asyncio.Event()

    async def hang(_call):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    gw = make(FakeTransport(hang), two_backends())
    await asyncio.wait_for(call(gw, http_scope("/"), disconnect_after=0.05), 2)
    assert cancelled.is_set()
    assert any(key[2] == 499 for key in gw.stats.series)


async def test_access_log_and_counters(caplog):
    gw = make(FakeTransport(FakeResponse(201, chunks=[b"abc"])),
              two_backends(always(ProxyAction(backends=("a",)), pattern="/users/{id}")))
    with caplog.at_level(logging.INFO, logger="chistone.access"):
        result = await call(gw, http_scope("/users/7", headers=[("x-request-id", "r-9")]))
    assert result.status == 201
    lines = [json.loads(r.message) for r in caplog.records if r.name == "chistone.access"]
    assert len(lines) == 1
    line = lines[0]
    assert line["tenant"] == "acme" and line["route"] == "/users/{id}" and line["status"] == 201
    assert line["backend"] == "a" and line["bytes"] == 3 and line["request_id"] == "r-9"
    assert line["upstream_ms"] is not None and line["lua_ms"] is not None
    series = gw.stats.series[("acme", "/users/{id}", 201)]
    assert series.requests == 1 and series.latency.count == 1
    assert gw.stats.report()["requests"][0]["status"] == 201


async def test_no_script_round_robin_by_weight():
    transport = FakeTransport(*[FakeResponse() for _ in range(4)])
    gw = make(transport, tenant("acme", domains=("acme.example.com",),
                                backends=[backend("a", port=9001, weight=3),
                                          backend("b", port=9002, weight=1)]))
    for _ in range(4):
        await call(gw, http_scope("/"))
    ports = [c.url.split(":")[2].split("/")[0] for c in transport.calls]
    assert sorted(ports) == ["9001", "9001", "9001", "9002"]


class Exploding(FakeTransport):
    """An upstream client with a bug: raises something that is no UpstreamError."""

    async def send(self, *args, **kw):
        raise ValueError("Forbidden control character detected in headers.")


async def test_an_unexpected_exception_is_a_json_500_with_the_request_id(caplog):
    gw = make(Exploding(), two_backends(always(ProxyAction(backends=("a",)))),
              stats=None)
    with caplog.at_level(logging.INFO):
        result = await call(gw, http_scope("/x", headers=[("x-request-id", "rid-boom")]))
    assert result.status == 500
    assert result.header("content-type") == "application/json"
    body = result.json()
    assert body["error"] == "internal_error" and body["request_id"] == "rid-boom"
    assert "Forbidden" not in result.body.decode()  # the detail stays in the log
    assert any("rid-boom" in r.getMessage() and r.exc_info for r in caplog.records)
    (series,) = [key for key in gw.stats.series]
    assert series[2] == 500  # counted (and logged) with the status the client got


async def test_a_bug_after_the_response_started_aborts_the_connection():
    upstream = FakeResponse(200, [(b"Content-Length", b"100")], [b"part", b"more"])
    upstream.ready = lambda: False

    class BadChunk(FakeTransport):
        async def send(self, *args, **kw):
            response = await super().send(*args, **kw)
            reads = iter([b"part"])

            async def read_chunk():
                for chunk in reads:
                    return chunk
                raise KeyError("a bug while streaming")

            response.read_chunk = read_chunk
            return response

    gw = make(BadChunk(upstream), two_backends())
    started = []

    async def strict_send(message):  # a second start is refused, as daphne and uvicorn do
        if message["type"] == "http.response.start":
            if started:
                raise RuntimeError("HTTP response has already been started")
            started.append(message["status"])

    scope = http_scope("/")
    with pytest.raises(ResponseAborted):
        await gw(scope, _receive_body(), strict_send)
    assert started == [200]
    assert upstream.closed
    (series,) = [key for key in gw.stats.series]
    assert series[2] == 200  # the status that went out, not a 500 nobody saw


def _receive_body():
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    return receive
