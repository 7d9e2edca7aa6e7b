"""Server adapters: everything that depends on which ASGI server runs the application.

The data plane (`routing/`) speaks ASGI only. What ASGI cannot express, each adapter offers
through one small interface (`routing.respond.ServerConnection`, put into every http scope
as `scope["extensions"]["chistone.connection"]`): wait until the client can take more bytes
(back-pressure) and drop the connection (abort). Each adapter module also owns the rest of
its server's specifics: starting the data plane when the server runs, adopting inherited
listening sockets, draining on SIGTERM.

- `chistone_site.servers.daphne`: daphne on Twisted (the default server).
- `chistone_site.servers.uvicorn`: uvicorn (httptools, uvloop).

`adapt(app)` wraps an application for whichever of the two calls it (decided on the first
request, from what the server hands over); `adapt(app, server="daphne")` insists on one and
logs an error on every request it cannot adapt, so a server upgrade that moves what the
adapter needs cannot silently cost the data plane its back-pressure.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from routing.respond import CONNECTION_EXTENSION
from routing.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("chistone.servers")

SERVERS = ("daphne", "uvicorn")
WEBSOCKET_HTTP_RESPONSE = "websocket.http.response"  # the ASGI extension's name


class AdapterError(RuntimeError):
    """The server does not offer what its adapter needs (its internals moved)."""


ConnectionFactory = Callable[[Send], object | None]


def _factories() -> dict[str, ConnectionFactory]:
    from chistone_site.servers import daphne, uvicorn

    return {"daphne": daphne.connection_for, "uvicorn": uvicorn.connection_for}


class ServerAdapter:
    """ASGI wrapper (outermost, so it sees the server's own `send`): puts the server's
    connection controls into each http scope."""

    def __init__(self, app: ASGIApp, *, server: str | None = None) -> None:
        if server is not None and server not in SERVERS:
            raise ValueError(f"unknown server {server!r}; expected one of {SERVERS}")
        self.app = app
        self.server = server
        self._factory: ConnectionFactory | None = None
        if server is not None:
            self._factory = _factories()[server]
        self._reported = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # uvicorn offers what the WebSocket gateway needs; daphne needs its adapter.
            if self.server in (None, "daphne"):
                from chistone_site.servers import daphne

                socket = daphne.websocket_for(send, receive)
                if socket is not None:
                    extensions = scope.setdefault("extensions", {})
                    extensions[WEBSOCKET_HTTP_RESPONSE] = {}
                    extensions[CONNECTION_EXTENSION] = socket
                    send, receive = socket.send, socket.receive
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http":
            connection = self._connection(send)
            if connection is not None:
                extensions = scope.get("extensions")
                if extensions is None:
                    scope["extensions"] = {CONNECTION_EXTENSION: connection}
                else:
                    extensions[CONNECTION_EXTENSION] = connection
        await self.app(scope, receive, send)

    def _connection(self, send: Send) -> object | None:
        factory = self._factory
        if factory is None:
            if self.server is not None or self._reported:
                return None
            for name, candidate in _factories().items():  # first request: which server?
                connection = candidate(send)
                if connection is not None:
                    self._factory, self.server = candidate, name
                    return connection
            self._reported = True
            log.info("no server adapter for %r: plain ASGI (no back-pressure hook, abort by "
                     "raising)", send)
            return None
        connection = factory(send)
        if connection is None and not self._reported:
            self._reported = True
            log.error("the %s adapter cannot reach the server's connection through %r: "
                      "responses stream without back-pressure and aborts fall back to "
                      "raising. A server upgrade moved what chistone_site/servers/%s.py "
                      "needs; tests/chistone_site/servers/ shows what.", self.server, send,
                      self.server)
        return connection


def adapt(app: ASGIApp, *, server: str | None = None) -> ServerAdapter:
    return ServerAdapter(app, server=server)


def start_when_serving(start: Callable[[], Awaitable[None]]) -> None:
    """Start `start()` as soon as the server runs, for servers without lifespan events
    (daphne); servers with lifespan events start the data plane on `lifespan.startup`."""
    from chistone_site.servers import daphne

    daphne.start_when_running(start)
