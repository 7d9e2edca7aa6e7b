"""A real WebSocket backend for the end-to-end tests (the `websockets` package's server), run
on its own event loop in a background thread on 127.0.0.1.

Paths:
- `/echo...`: every message back as it came (text as text, binary as binary); the first
  message `"headers?"` is answered with the handshake's path and headers (JSON).
- `/fragments`: on any message, answers one message sent in three fragments, then echoes.
- `/close`: on the first message closes with the code and reason of the query
  (`?code=4001&reason=bye`).
- `/drop`: on the first message drops the TCP connection without a close frame.
- `/big`: on any message sends back a message of the size it names (`"13000000"`).
- `/slow`: never sends anything.
- `/refuse`: refuses the upgrade with 403.
- `/verify` (plain HTTP): 200 when `X-Auth: good`, else 401 (a forward-auth service).
Subprotocols `chat.v1` and `chat.v2` are supported (the first the client offers is chosen).
"""

from __future__ import annotations

import asyncio
import json
import threading
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response


class WebSocketBackend:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.handshakes: list[tuple[str, list[tuple[str, str]]]] = []
        self.closes: list[tuple[str, int | None, str]] = []  # (path, code, reason) seen here
        self.verified = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the WebSocket backend did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.server = await serve(self._handle, "127.0.0.1", 0, process_request=self._process,
                                  subprotocols=["chat.v1", "chat.v2"],
                                  select_subprotocol=self._select, max_size=64 * 1024 * 1024,
                                  compression=None)
        self.port = self.server.sockets[0].getsockname()[1]

    @staticmethod
    def _select(connection: ServerConnection, offered: list[str]) -> str | None:
        for protocol in offered:
            if protocol in ("chat.v1", "chat.v2"):
                return protocol
        return None

    def _process(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        self.handshakes.append((request.path, list(request.headers.raw_items())))
        if path == "/verify":
            good = request.headers.get("X-Auth") == "good"
            self.verified += 1
            status = HTTPStatus.OK if good else HTTPStatus.UNAUTHORIZED
            return Response(status.value, status.phrase,
                            Headers([("Content-Length", "2"), ("Connection", "close")]),
                            b"ok" if good else b"no")
        if path == "/refuse":
            return connection.respond(HTTPStatus.FORBIDDEN, "no upgrade for you\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        target = urlsplit(ws.request.path)
        path, query = target.path, parse_qs(target.query)
        try:
            if path == "/slow":
                await ws.wait_closed()
                return
            async for message in ws:
                if path == "/close":
                    await ws.close(int(query["code"][0]), query.get("reason", [""])[0])
                    return
                if path == "/drop":
                    ws.transport.abort()
                    return
                if path == "/big":
                    await ws.send(b"x" * int(message))
                    continue
                if path == "/fragments":
                    await ws.send(iter(["frag-", "ment-", "ed"]))
                    continue
                if message == "headers?":
                    await ws.send(json.dumps({"path": ws.request.path,
                                              "headers": list(ws.request.headers.raw_items()),
                                              "subprotocol": ws.subprotocol}))
                    continue
                await ws.send(message)
        finally:
            received = ws.protocol.close_rcvd
            self.closes.append((path, received.code if received else None,
                                received.reason if received else ""))

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
