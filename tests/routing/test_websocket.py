"""The WebSocket gateway in-process: an ASGI websocket client driven by hand, a real
WebSocket backend on loopback (tests/e2e/ws_backend.py), fake scripts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from luascripts.engine.types import Outcome, ProxyAction, RejectAction, RespondAction
from routing.gateway import Gateway
from routing.snapshot import SnapshotHolder
from routing.stats import Stats
from routing.websocket import WebSocketGateway, _client_close_code, _handshake_headers
from tests.e2e.backends import free_port
from tests.e2e.ws_backend import WebSocketBackend
from tests.routing.fakes import FakeScript, FakeTransport, backend, snapshot, tenant


@pytest.fixture(scope="module")
def ws_backend():
    server = WebSocketBackend()
    yield server
    server.close()


class Client:
    """The server side of ASGI, as a test drives it: what the app receives and sends."""

    def __init__(self, path: str, *, extensions: bool = True, subprotocols=(),
                 headers=()) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        raw = [(b"host", b"acme.example.com")]
        raw += [(k.encode(), v.encode()) for k, v in headers]
        if subprotocols:  # servers keep the header and parse it into the scope as well
            raw.append((b"sec-websocket-protocol", ", ".join(subprotocols).encode()))
        self.scope = {"type": "websocket", "path": path, "raw_path": path.encode(),
                      "query_string": b"", "headers": raw, "client": ("203.0.113.9", 5000),
                      "server": ("127.0.0.1", 8000), "subprotocols": list(subprotocols),
                      "scheme": "ws"}
        if extensions:
            self.scope["extensions"] = {"websocket.http.response": {}}
        self.inbox.put_nowait({"type": "websocket.connect"})

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        self.got.put_nowait(message)
        if message["type"] == "websocket.close":  # the server answers the close at once
            self.inbox.put_nowait({"type": "websocket.disconnect",
                                   "code": message.get("code", 1000)})

    async def next(self, limit: float = 10) -> dict[str, Any]:
        return await asyncio.wait_for(self.got.get(), limit)


def _app(ws_backend, decide, **conf_overrides):
    from routing.conf import get_conf

    script = FakeScript(decide)
    backends = [backend("ws", port=ws_backend.port),
                backend("down", port=free_port())]
    holder = SnapshotHolder()
    holder.swap(snapshot(tenant("acme", domains=("acme.example.com",), script=script,
                                backends=backends)))
    conf = get_conf()
    if conf_overrides:
        import dataclasses

        conf = dataclasses.replace(conf, **conf_overrides)
    gateway = Gateway(holder=holder, transport=FakeTransport(), stats=Stats(), conf=conf)
    return WebSocketGateway(gateway), script


def _proxy(name="ws"):
    return lambda req: Outcome(ProxyAction(backends=(name,)))


async def test_the_script_sees_req_websocket_and_messages_are_relayed(ws_backend):
    app, script = _app(ws_backend, _proxy())
    client = Client("/echo/one", subprotocols=["chat.v1"])
    task = asyncio.create_task(app(client.scope, client.receive, client.send))
    accept = await client.next()
    assert accept["type"] == "websocket.accept" and accept["subprotocol"] == "chat.v1"
    assert script.seen[0].websocket is True
    assert len(app.sessions) == 1
    client.inbox.put_nowait({"type": "websocket.receive", "text": "hi"})
    assert (await client.next()) == {"type": "websocket.send", "text": "hi"}
    client.inbox.put_nowait({"type": "websocket.receive", "bytes": b"\x00\xff"})
    assert (await client.next()) == {"type": "websocket.send", "bytes": b"\x00\xff"}
    client.inbox.put_nowait({"type": "websocket.disconnect", "code": 4005, "reason": "done"})
    await asyncio.wait_for(task, 10)
    assert not app.sessions
    stats = app.stats
    assert stats.websocket_messages[("acme", "ws", "to_backend")] == 2
    assert stats.websocket_messages[("acme", "ws", "to_client")] == 2
    assert stats.websockets_open[("acme", "ws")] == 0
    assert stats.websocket_closes[("acme", "ws", "4005")] == 1
    await asyncio.sleep(0.2)
    assert ("/echo/one", 4005, "done") in ws_backend.closes


@pytest.mark.parametrize("decide, status, error", [
    (lambda req: Outcome(RejectAction(403, "no")), 403, "rejected"),
    (lambda req: Outcome(RespondAction(418, b"tea", (("x-why", "because"),))), 418, None),
    (_proxy("down"), 502, "backend_refused"),
])
async def test_answers_before_the_upgrade(ws_backend, decide, status, error):
    app, _ = _app(ws_backend, decide)
    client = Client("/x")
    await asyncio.wait_for(app(client.scope, client.receive, client.send), 10)
    start, body = client.sent
    assert start["type"] == "websocket.http.response.start" and start["status"] == status
    assert body["type"] == "websocket.http.response.body"
    names = [name for name, _ in start["headers"]]
    assert b"x-request-id" in names and names.count(b"content-length") == 1
    if error:
        assert json.loads(body["body"])["error"] == error
    else:
        assert body["body"] == b"tea" and (b"x-why", b"because") in start["headers"]


async def test_a_server_without_the_http_response_extension_gets_a_refusal(ws_backend):
    app, _ = _app(ws_backend, lambda req: Outcome(RejectAction(401, "no")))
    client = Client("/x", extensions=False)
    await asyncio.wait_for(app(client.scope, client.receive, client.send), 10)
    assert client.sent == [{"type": "websocket.close", "code": 1008}]


async def test_a_backend_refusing_the_upgrade_is_a_502(ws_backend):
    app, _ = _app(ws_backend, _proxy())
    client = Client("/refuse")
    await asyncio.wait_for(app(client.scope, client.receive, client.send), 10)
    assert client.sent[0]["status"] == 502
    assert json.loads(client.sent[1]["body"])["error"] == "upgrade_refused"


async def test_close_all_closes_both_sides_with_1001(ws_backend):
    app, _ = _app(ws_backend, _proxy())
    client = Client("/echo/drained")
    task = asyncio.create_task(app(client.scope, client.receive, client.send))
    assert (await client.next())["type"] == "websocket.accept"
    assert await asyncio.wait_for(app.close_all(), 10) == 1
    close = await client.next()
    assert close["type"] == "websocket.close" and close["code"] == 1001
    await asyncio.wait_for(task, 10)
    await asyncio.wait_for(app.wait_closed(), 1)
    await asyncio.sleep(0.2)
    assert any(path == "/echo/drained" and code == 1001 for path, code, _ in ws_backend.closes)


async def test_idle_connections_are_closed_with_1001(ws_backend):
    app, _ = _app(ws_backend, _proxy(), websocket_idle_timeout_s=0.3)
    client = Client("/slow")
    task = asyncio.create_task(app(client.scope, client.receive, client.send))
    assert (await client.next())["type"] == "websocket.accept"
    close = await client.next(limit=5)
    assert (close["code"], close["reason"]) == (1001, "idle timeout")
    await asyncio.wait_for(task, 10)


async def test_a_message_over_the_limit_closes_with_1009(ws_backend):
    app, _ = _app(ws_backend, _proxy(), websocket_max_message_bytes=10)
    client = Client("/echo/big")
    task = asyncio.create_task(app(client.scope, client.receive, client.send))
    assert (await client.next())["type"] == "websocket.accept"
    client.inbox.put_nowait({"type": "websocket.receive", "bytes": b"x" * 11})
    close = await client.next()
    assert close["type"] == "websocket.close" and close["code"] == 1009
    await asyncio.wait_for(task, 10)


def test_handshake_headers_drop_the_clients_handshake_and_offer_its_subprotocols():
    headers, offered = _handshake_headers([
        ("host", "b:1"), ("sec-websocket-key", "k"), ("sec-websocket-version", "13"),
        ("sec-websocket-extensions", "permessage-deflate"),
        ("sec-websocket-protocol", "a, b"), ("sec-websocket-protocol", "c"),
        ("x-keep", "1"), ("origin", "http://o")])
    assert list(headers.raw_items()) == [("x-keep", "1"), ("origin", "http://o")]
    assert offered == ["a", "b", "c"]


def test_close_codes_that_cannot_be_sent_are_mapped():
    assert _client_close_code(1005) == 1000
    assert _client_close_code(1006) == 1001
    assert _client_close_code(4001) == 4001
