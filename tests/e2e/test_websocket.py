"""WebSockets through the real server, under daphne and under uvicorn (`serve --server`):
a real WebSocket backend (tests/e2e/ws_backend.py) and a real client (the `websockets`
package), routed by a tenant script like any request."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.e2e.backends import free_port
from tests.e2e.ws_backend import WebSocketBackend
from tests.serving import prepare_database, server_env, start_serve

pytestmark = pytest.mark.e2e

SCRIPT = r"""
chi.use(function(req, next)
  if req.headers["x-auth"] ~= nil then
    local res, err = http.request("auth", {path = "/verify", timeout_ms = 2000,
                                           headers = {["x-auth"] = req.headers["x-auth"]}})
    if res == nil then return reject(503, "auth is unavailable: " .. err) end
    if res.status ~= 200 then return reject(401, "not authorized") end
  end
  return next(req)
end)
chi.get("/reject", function(req) return reject(403, "no sockets here") end)
chi.get("/respond", function(req)
  return respond(418, "websocket=" .. tostring(req.websocket), {["x-why"] = "because"})
end)
chi.get("/down", function(req) return proxy("down") end)
chi.get("/rewritten", function(req)
  return proxy("ws", {path = "/echo/rewritten", query = "by=script",
                      set_headers = {["x-script"] = "yes"}})
end)
chi.route("/looked", function(r)
  r.use(function(req, next)
    local res = next(req)  -- on a websocket route: the backend's handshake
    if res.status >= 500 then return proxy("ws", {path = "/echo/fallback"}) end
    res.headers["x-looked"] = tostring(res.status) .. " " .. tostring(res.backend)
    return res
  end)
  r.get("/refuse", function(req) return proxy("ws", {path = "/refuse"}) end)
  r.get("/*", function(req) return proxy("ws", {path = "/echo/looked"}) end)
end)
chi.get("/*", function(req)
  if not req.websocket then return reject(400, "WebSockets only") end
  return proxy("ws")
end)
"""

MAX_MESSAGE = 12 * 1024 * 1024
IDLE_S = 3.0


def _spec(backend: WebSocketBackend) -> dict:
    return {"tenants": [{
        "slug": "wst", "path_prefix": "/wst",
        "backends": [{"name": "ws", "url": backend.url}, {"name": "auth", "url": backend.url},
                     {"name": "down", "url": f"http://127.0.0.1:{free_port()}"}],
        "script": SCRIPT,
    }]}


@pytest.fixture(scope="module")
def ws_backend():
    backend = WebSocketBackend()
    yield backend
    backend.close()


def _serve(server: str, backend: WebSocketBackend, tmp, **extra: str):
    env = server_env(f"sqlite:///{tmp / 'ws.sqlite3'}", tmp,
                     CHISTONE_WEBSOCKET_MAX_MESSAGE_BYTES=str(MAX_MESSAGE),
                     CHISTONE_WEBSOCKET_IDLE_TIMEOUT_S=str(IDLE_S), **extra)
    prepare_database(env, _spec(backend), tmp)
    served = start_serve(env, tmp / "serve.log", "--workers", "1", "--server", server)
    served.wait_ready()
    return served


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def served(request, ws_backend, tmp_path_factory):
    served = _serve(request.param, ws_backend, tmp_path_factory.mktemp(f"ws-{request.param}"))
    served.server = request.param
    yield served
    served.stop()


def _url(served, path: str) -> str:
    return f"ws://127.0.0.1:{served.data_port}/wst{path}"


def _closed(ws) -> ConnectionClosed:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=20)
    return info.value


def _closed_after(ws, message) -> ConnectionClosed:
    try:
        ws.send(message)
    except ConnectionClosed as exc:  # closed while the message was still being sent
        return exc
    return _closed(ws)


def test_messages_both_ways_with_the_proxy_header_rules(served, ws_backend):
    with connect(_url(served, "/echo/a%2Fb?x=1&y=%20"), subprotocols=["chat.v2"],
                 additional_headers={"X-Trace": "t1", "Connection": "Upgrade, X-Hop",
                                     "X-Hop": "secret", "X-Forwarded-For": "6.6.6.6",
                                     "Origin": "http://example.test"},
                 user_agent_header="client-ua/1", open_timeout=10) as ws:
        assert ws.subprotocol == "chat.v2"
        assert ws.response.headers["x-request-id"]
        assert ws.response.headers["x-chistone-config"]
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\x01binary\xff")
        assert ws.recv(timeout=10) == b"\x00\x01binary\xff"
        ws.send("headers?")
        seen = json.loads(ws.recv(timeout=10))
    assert seen["path"] == "/echo/a%2Fb?x=1&y=%20"  # the raw path and query, byte for byte
    assert seen["subprotocol"] == "chat.v2"
    headers = {name.lower(): value for name, value in seen["headers"]}
    names = [name.lower() for name, _ in seen["headers"]]
    assert headers["host"] == f"127.0.0.1:{ws_backend.port}"
    assert names.count("host") == 1
    assert headers["x-trace"] == "t1" and headers["origin"] == "http://example.test"
    assert "x-hop" not in headers  # named in Connection: hop-by-hop
    assert headers["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-request-id"] == ws.response.headers["x-request-id"]
    assert headers["upgrade"] == "websocket"  # the gateway's own handshake, not the client's
    assert "sec-websocket-extensions" not in headers
    assert headers["user-agent"] == "client-ua/1"  # the client's, none of the gateway's


def test_a_script_rewrites_the_target_and_headers(served):
    with connect(_url(served, "/rewritten?q=1"), open_timeout=10) as ws:
        ws.send("headers?")
        seen = json.loads(ws.recv(timeout=10))
    assert seen["path"] == "/echo/rewritten?by=script"
    assert dict((k.lower(), v) for k, v in seen["headers"])["x-script"] == "yes"


def test_a_middleware_sees_the_backend_handshake_and_can_fall_back(served):
    with connect(_url(served, "/looked/x"), open_timeout=10) as ws:
        assert ws.response.headers["x-looked"] == "101 ws"  # on the accept, both servers
        ws.send("headers?")
        assert json.loads(ws.recv(timeout=10))["path"] == "/echo/looked"
    with connect(_url(served, "/looked/refuse"), open_timeout=10) as ws:  # 502: fallback
        ws.send("headers?")
        assert json.loads(ws.recv(timeout=10))["path"] == "/echo/fallback"


def test_fragmented_messages_arrive_whole(served):
    with connect(_url(served, "/fragments"), open_timeout=10) as ws:
        ws.send("go")
        assert ws.recv(timeout=10) == "frag-ment-ed"


def test_ten_mib_each_way(served):
    payload = os.urandom(10 * 1024 * 1024)
    with connect(_url(served, "/echo"), max_size=None, compression=None,
                 open_timeout=10) as ws:
        ws.send(payload)
        back = ws.recv(timeout=60)
    assert hashlib.sha256(back).digest() == hashlib.sha256(payload).digest()


def test_a_thousand_small_messages_each_way(served):
    with connect(_url(served, "/echo"), open_timeout=10) as ws:
        for i in range(1000):
            ws.send(f"m{i}")
        received = [ws.recv(timeout=10) for _ in range(1000)]
    assert received == [f"m{i}" for i in range(1000)]


def test_close_codes_and_reasons_pass_through_both_ways(served, ws_backend):
    with connect(_url(served, "/close?code=4001&reason=bye"), open_timeout=10) as ws:
        ws.send("now")
        closed = _closed(ws)
    assert (closed.rcvd.code, closed.rcvd.reason) == (4001, "bye")

    with connect(_url(served, "/echo/client-closes"), open_timeout=10) as ws:
        ws.send("x")
        ws.recv(timeout=10)
        ws.close(4002, "client done")
    deadline = time.monotonic() + 10
    while ("/echo/client-closes", 4002, "client done") not in ws_backend.closes:
        assert time.monotonic() < deadline, ws_backend.closes
        time.sleep(0.05)


def test_reject_and_respond_answer_in_http_before_the_upgrade(served):
    with pytest.raises(InvalidStatus) as info:
        connect(_url(served, "/reject"), open_timeout=10)
    response = info.value.response
    assert response.status_code == 403
    assert json.loads(response.body)["error"] == "rejected"
    assert response.headers["x-request-id"]

    with pytest.raises(InvalidStatus) as info:
        connect(_url(served, "/respond"), open_timeout=10)
    response = info.value.response
    assert response.status_code == 418
    assert response.body == b"websocket=true"
    assert response.headers["x-why"] == "because"


def test_unknown_tenant_is_a_404_before_the_upgrade(served):
    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://127.0.0.1:{served.data_port}/nobody/here", open_timeout=10)
    assert info.value.response.status_code == 404
    assert json.loads(info.value.response.body)["error"] == "no_tenant"


def test_forward_auth_runs_before_the_upgrade(served, ws_backend):
    before = ws_backend.verified
    with connect(_url(served, "/echo"), additional_headers={"X-Auth": "good"},
                 open_timeout=10) as ws:
        ws.send("in")
        assert ws.recv(timeout=10) == "in"
    with pytest.raises(InvalidStatus) as info:
        connect(_url(served, "/echo"), additional_headers={"X-Auth": "bad"}, open_timeout=10)
    assert info.value.response.status_code == 401
    assert ws_backend.verified == before + 2


def test_a_backend_refusing_the_upgrade_is_a_502(served):
    with pytest.raises(InvalidStatus) as info:
        connect(_url(served, "/refuse"), open_timeout=10)
    assert info.value.response.status_code == 502
    body = json.loads(info.value.response.body)
    assert body["error"] == "upgrade_refused" and "403" in body["detail"]


def test_an_unreachable_backend_is_a_502(served):
    with pytest.raises(InvalidStatus) as info:
        connect(_url(served, "/down"), open_timeout=10)
    assert info.value.response.status_code == 502
    assert json.loads(info.value.response.body)["error"] == "backend_refused"


def test_a_backend_dropping_mid_stream_closes_the_client_with_1014(served):
    with connect(_url(served, "/drop"), open_timeout=10) as ws:
        ws.send("bye")
        closed = _closed(ws)
    assert closed.rcvd.code == 1014


def test_messages_over_the_limit_close_with_1009_either_way(served):
    with connect(_url(served, "/echo"), max_size=None, compression=None,
                 open_timeout=10) as ws:
        closed = _closed_after(ws, b"x" * (MAX_MESSAGE + 1))
    assert closed.rcvd.code == 1009
    with connect(_url(served, "/big"), max_size=None, compression=None,
                 open_timeout=10) as ws:
        ws.send(str(MAX_MESSAGE + 1))
        closed = _closed(ws)
    assert closed.rcvd.code == 1009


def test_an_idle_connection_is_closed_with_1001(served):
    started = time.monotonic()
    with connect(_url(served, "/slow"), open_timeout=10) as ws:
        closed = _closed(ws)
    assert closed.rcvd.code == 1001 and closed.rcvd.reason == "idle timeout"
    assert IDLE_S - 0.5 <= time.monotonic() - started <= IDLE_S + 5


def test_metrics_and_the_access_log(served):
    with connect(_url(served, "/echo/counted"), open_timeout=10) as ws:
        for i in range(3):
            ws.send(f"c{i}")
            ws.recv(timeout=10)
        ws.close(4003, "counted")
    deadline = time.monotonic() + 10
    pattern = re.compile(r'^chistone_websocket_messages_total\{backend="ws",direction="to_client",'
                         r'tenant="wst"\} (\d+)', re.M)
    while True:
        text = httpx.get(f"{served.control}/metrics", timeout=5).text
        match = pattern.search(text)
        lines = [json.loads(line) for line in served.log_text().splitlines()
                 if '"websocket":{' in line and "/echo/counted" in line]
        if match and int(float(match.group(1))) >= 3 and lines:
            break
        assert time.monotonic() < deadline, text[-3000:]
        time.sleep(0.3)
    assert 'chistone_websocket_connections_total{backend="ws",tenant="wst"}' in text
    assert "chistone_websocket_connections_open" in text
    entry = lines[-1]
    assert entry["status"] == 101 and entry["backend"] == "ws"
    socket = entry["websocket"]
    assert socket["messages_in"] == 3 and socket["messages_out"] == 3
    assert socket["close_code"] == 4003 and socket["closed_by"] == "client"
    assert socket["duration_ms"] > 0


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_draining_closes_open_sockets_with_1001_after_the_drain_timeout(server, ws_backend,
                                                                       tmp_path):
    served = _serve(server, ws_backend, tmp_path, CHISTONE_DRAIN_TIMEOUT="2")
    try:
        with connect(_url(served, "/echo/draining"), open_timeout=10) as ws:
            ws.send("before")
            assert ws.recv(timeout=10) == "before"
            served.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            time.sleep(0.5)
            ws.send("while draining")  # still relayed during the drain timeout
            assert ws.recv(timeout=10) == "while draining"
            closed = _closed(ws)
            elapsed = time.monotonic() - signalled
        assert closed.rcvd.code == 1001
        assert 1.5 <= elapsed <= 10
        assert served.process.wait(20) == 0
    finally:
        served.stop()
