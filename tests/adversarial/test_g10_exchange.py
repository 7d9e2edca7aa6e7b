"""Group 10: hostile use of the whole exchange (request bodies, responses, calls).

In process, with the real engine, the real gateway and real backends (the adversarial farm:
an echo backend and a faulty one whose /blackhole never answers and /drip takes seconds).
Each case: the abuser's request ends within its limits with the right status, and a
neighbour tenant (and the abuser's own healthy routes) keep answering.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from routing.conf import get_conf
from routing.gateway import Gateway
from routing.snapshot import SnapshotHolder
from routing.upstream import AiohttpTransport
from tests.routing.asgi import call, http_scope
from tests.routing.fakes import backend, snapshot, tenant

from .support import load

ABUSER = r"""
chi.post("/read", function(req) return respond(200, tostring(#req.body())) end)
chi.post("/stream", function(req) return proxy("echo") end)
chi.get("/drip-read", function(req) return proxy("faulty", {path = "/drip"}) end)
chi.get("/hole-read", function(req) return proxy("faulty", {path = "/blackhole"}) end)
chi.get("/big-read", function(req) return proxy("echo", {path = "/big", query = "n=3000000"}) end)

chi.get("/call-unknown", function(req) http.request("nowhere") return respond(200) end)
chi.get("/call-hole", function(req)
  local res, err = http.request("faulty", {path = "/blackhole", timeout_ms = 300})
  return respond(200, tostring(res) .. " " .. tostring(err))
end)
chi.get("/call-loop", function(req)
  while true do http.request("echo", {path = "/loop"}) end
end)
chi.get("/call-pcall", function(req)
  local ok, res = pcall(http.request, "echo", {path = "/in-pcall"})
  return respond(200, tostring(ok) .. " " .. res.status)
end)
chi.get("/call-coroutine", function(req)
  local res = coroutine.wrap(function() return http.request("echo", {path = "/in-co"}) end)()
  return respond(200, tostring(res.status))
end)
chi.get("/call-metamethod", function(req)
  local lazy = setmetatable({}, {__index = function(_, k)
    return http.request("echo", {path = "/in-" .. k}).status
  end})
  return respond(200, tostring(lazy.index))
end)
chi.get("/call-sort", function(req)
  table.sort({2, 1}, function(a, b) http.request("echo") return a < b end)
  return respond(200)
end)
chi.get("/ok", function(req) return respond(200, "abuser ok") end)
"""

READER_MW = r"""
chi.use(function(req, next)
  local res = next(req)
  res.set_body("seen " .. #res.body())
  return res
end)
"""

NEIGHBOUR = """
chi.get('/ok', function(req) return respond(200, 'neighbour ok') end)
chi.get('/up', function(req) return proxy('echo') end)
"""

CONF = dataclasses.replace(get_conf(), body_timeout_s=0.4, upstream_total_timeout_s=1.0)


@pytest.fixture(scope="module")
def scripts():
    loaded = {
        "abuser": load(ABUSER, tenant="abuser", backends=("echo", "faulty")),
        "reader": load(READER_MW + ABUSER, tenant="reader", backends=("echo", "faulty")),
        "neighbour": load(NEIGHBOUR, tenant="neighbour", backends=("echo",)),
    }
    yield loaded
    for script in loaded.values():
        script.close()


@pytest.fixture
async def gateway(scripts, adv_farm):
    echo, faulty = adv_farm.echo.port, adv_farm.faulty.port

    def backends(slug):
        return [backend("echo", tenant=slug, port=echo, read_ms=2000),
                backend("faulty", tenant=slug, port=faulty, read_ms=2000)]

    holder = SnapshotHolder()
    holder.swap(snapshot(
        tenant("abuser", domains=("abuser.test",), script=scripts["abuser"],
               backends=backends("abuser")),
        tenant("reader", domains=("reader.test",), script=scripts["reader"],
               backends=backends("reader")),
        tenant("neighbour", domains=("neighbour.test",), script=scripts["neighbour"],
               backends=backends("neighbour")[:1]),
    ))
    transport = AiohttpTransport(CONF)
    await transport.start()
    yield Gateway(holder=holder, transport=transport, conf=CONF)
    await transport.close()


async def request(gw, host, path, method="GET", body=b"", **kw):
    started = time.perf_counter()
    result = await call(gw, http_scope(path, method=method, host=host), body, **kw)
    return result, time.perf_counter() - started


async def everyone_else_answers(gw, scripts) -> None:
    for host, text in (("abuser.test", b"abuser ok"), ("neighbour.test", b"neighbour ok")):
        ok, _ = await request(gw, host, "/ok")
        assert (ok.status, ok.body) == (200, text)
    up, _ = await request(gw, "neighbour.test", "/up")
    assert up.status == 200 and up.json()["backend"] == "adv-echo"
    assert all(script.waiting == 0 for script in scripts.values())


# -- request bodies ---------------------------------------------------------------------------


async def test_a_body_bomb_is_cut_at_the_limit_without_reading_the_rest(gateway, scripts):
    chunks = [b"z" * (1024 * 1024)] * 64  # 64 MiB offered
    result, seconds = await request(gateway, "abuser.test", "/read", "POST", chunks)
    assert result.status == 413 and result.json()["error"] == "payload_too_large"
    assert seconds < 2
    await everyone_else_answers(gateway, scripts)


async def test_a_body_bomb_the_script_never_reads_is_streamed_unbuffered(gateway, scripts):
    chunks = [b"z" * (1024 * 1024)] * 24
    result, _ = await request(gateway, "abuser.test", "/stream", "POST", chunks)
    assert result.status == 200
    assert result.json()["body_len"] == 24 * 1024 * 1024


async def test_a_body_that_never_finishes_is_408_after_the_body_timeout(gateway, scripts):
    never = asyncio.Queue()
    never.put_nowait({"type": "http.request", "body": b"x" * 100, "more_body": True})

    async def receive():
        return await never.get()  # the rest never comes

    sent = []

    async def send(message):
        sent.append(message)

    started = time.perf_counter()
    await gateway(http_scope("/read", method="POST", host="abuser.test"), receive, send)
    assert sent[0]["status"] == 408
    assert 0.3 < time.perf_counter() - started < 2
    await everyone_else_answers(gateway, scripts)


# -- responses a middleware reads -------------------------------------------------------------


async def test_a_response_that_never_finishes_while_read_is_504(gateway, scripts):
    result, seconds = await request(gateway, "reader.test", "/drip-read")
    assert result.status == 504 and result.json()["error"] == "gateway_timeout"
    assert seconds < 3
    await everyone_else_answers(gateway, scripts)


async def test_a_response_that_never_starts_while_read_is_504(gateway, scripts):
    result, seconds = await request(gateway, "reader.test", "/hole-read")
    assert result.status == 504
    assert seconds < 3


async def test_a_response_over_the_read_limit_is_502_not_500(gateway, scripts):
    result, _ = await request(gateway, "reader.test", "/big-read")
    assert result.status == 502 and result.json()["error"] == "response_too_large"


async def test_a_response_read_within_limits_is_replaced(gateway, scripts):
    result, _ = await request(gateway, "reader.test", "/ok")
    assert result.status == 200 and result.body == b"seen 9"
    assert result.header("content-length") == "6"


# -- calls ------------------------------------------------------------------------------------


async def test_a_call_to_an_unknown_name_fails_at_its_line(gateway, scripts, caplog):
    result, _ = await request(gateway, "abuser.test", "/call-unknown")
    assert result.status == 500 and result.json()["error"] == "script_error"
    assert "script:8: http.request(): unknown backend 'nowhere'" in caplog.text
    await everyone_else_answers(gateway, scripts)


async def test_a_call_to_a_backend_that_hangs_times_out_on_its_own_budget(gateway, scripts):
    result, seconds = await request(gateway, "abuser.test", "/call-hole")
    assert (result.status, result.body) == (200, b"nil timeout")
    assert 0.25 < seconds < 1.5


async def test_calls_in_a_loop_stop_at_max_calls(gateway, scripts, adv_farm, caplog):
    before = sum(1 for seen in adv_farm.echo.seen if seen.target == "/loop")
    result, _ = await request(gateway, "abuser.test", "/call-loop")
    assert result.status == 500
    assert sum(1 for seen in adv_farm.echo.seen if seen.target == "/loop") - before == 10
    assert "more than 10 calls in one request" in caplog.text


@pytest.mark.parametrize("path,body", [("/call-pcall", b"true 200"), ("/call-coroutine", b"200"),
                                       ("/call-metamethod", b"200")])
async def test_calls_work_from_pcall_coroutines_and_metamethods(gateway, scripts, path, body):
    result, _ = await request(gateway, "abuser.test", path)
    assert (result.status, result.body) == (200, body)


async def test_a_call_where_lua_cannot_wait_is_an_error_not_a_hang(gateway, scripts, caplog):
    result, seconds = await request(gateway, "abuser.test", "/call-sort")
    assert result.status == 500 and seconds < 1
    assert "cannot wait for the gateway here" in caplog.text


async def test_many_waiting_calls_do_not_hold_up_a_neighbour(gateway, scripts):
    abusers = [asyncio.ensure_future(request(gateway, "abuser.test", "/call-hole"))
               for _ in range(50)]
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    ok, _ = await request(gateway, "neighbour.test", "/ok")
    assert ok.status == 200 and time.perf_counter() - started < 0.25
    results = await asyncio.gather(*abusers)
    assert {(r.status, r.body) for r, _ in results} == {(200, b"nil timeout")}
    assert scripts["abuser"].waiting == 0


async def test_a_request_abandoned_while_its_script_waits_frees_the_script(gateway, scripts):
    """The server cancels the request's task (the client went away, the worker drains):
    the waiting coroutine is closed at once, not left in the tenant's runtime."""
    task = asyncio.ensure_future(request(gateway, "abuser.test", "/call-hole"))
    await asyncio.sleep(0.05)
    assert scripts["abuser"].waiting == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert scripts["abuser"].waiting == 0
    await everyone_else_answers(gateway, scripts)


def test_a_script_waiting_longer_than_the_hang_timeout_is_not_a_stuck_worker(live, same_worker):
    """The watchdog marks only the steps that run Lua: a request whose script waits 4.5 s
    for a backend (the live server's hang timeout is 3 s) is answered, and the worker that
    served it is still the one serving afterwards (`same_worker`)."""
    from .conftest import WATCHDOG_S

    assert WATCHDOG_S < 4.5
    with live.client(timeout=15) as client:
        response = client.get("/wait-long", headers={"Host": "adv.test"})
    assert (response.status_code, response.text) == (200, "late")
    assert "stopped answering" not in live.log_text()
