"""The uvicorn adapter: abort, and serving inherited sockets in a worker process.

- **Back-pressure** is uvicorn's own: its `send` waits on the transport's flow control
  (`FlowControl.drain()`) before writing a body message, so `writable()` has nothing to do.
- **Abort.** uvicorn calls the application with `send` bound to its per-request
  `RequestResponseCycle`; the adapter (the outermost ASGI wrapper) takes the cycle's asyncio
  transport from it and aborts it. Raising instead would work too, but uvicorn logs every such
  exception with a traceback as an application error.
- **Startup** comes with uvicorn's lifespan events; **draining** is uvicorn's graceful
  shutdown on SIGTERM (stop accepting, finish in-flight requests), except for WebSockets:
  uvicorn would close them at once with 1012; they keep going until the drain timeout and
  are then closed by the gateway with 1001 (`_DrainingServer`).
- **WebSockets**: uvicorn's sans-I/O implementation on the `websockets` package, which has
  the "websocket.http.response" extension, close reasons and back-pressure of its own; its
  message limit is set to the data plane's.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

_CYCLE_MODULES = ("uvicorn.protocols.http.httptools_impl", "uvicorn.protocols.http.h11_impl")


class UvicornConnection:
    """`routing.respond.ServerConnection` for one uvicorn request.

    It holds the transport, not uvicorn's request cycle: the cycle holds the scope, which
    holds this object, and that loop would leave every request's scope, cycle and connection
    to the cyclic garbage collector instead of freeing them when the request ends."""

    __slots__ = ("_transport",)

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    async def writable(self) -> None:
        return None  # uvicorn's send already waited for the transport to drain

    async def abort(self) -> None:
        self._transport.abort()
        # The transport reports the loss on the next loop iteration, which marks the cycle
        # disconnected; let it, so uvicorn does not log an incomplete response as an error.
        await asyncio.sleep(0)


def connection_for(send: Any) -> UvicornConnection | None:
    """The connection behind uvicorn's `send`, or None when `send` is not uvicorn's."""
    cycle = getattr(send, "__self__", None)
    if cycle is None or type(cycle).__module__ not in _CYCLE_MODULES:
        return None
    transport = getattr(cycle, "transport", None)
    if not callable(getattr(transport, "abort", None)):
        return None
    return UvicornConnection(transport)


def serve(app: Any, fds: list[int], *, background: Callable[[], Awaitable[None]],
          drain_timeout: float, websockets: Any = None,
          websocket_max_bytes: int = 16 * 1024 * 1024) -> None:
    """Serve `app` on inherited listening sockets with uvloop and httptools until SIGTERM
    (uvicorn's own handlers: stop accepting, finish in-flight requests, bounded; open
    WebSockets are closed with 1001 when the drain timeout is up)."""
    import time

    import uvicorn
    from uvicorn._compat import asyncio_run

    class _DrainingServer(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            deadline = time.monotonic() + drain_timeout
            if websockets is not None and websockets.sessions:
                for server in self.servers:  # stop accepting; open connections go on
                    server.close()
                try:
                    await asyncio.wait_for(websockets.wait_closed(), drain_timeout)
                except TimeoutError:
                    await websockets.close_all()
                self.config.timeout_graceful_shutdown = max(1, int(deadline - time.monotonic()))
            await super().shutdown(sockets)

    sockets = [socket.socket(fileno=fd) for fd in fds]
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_max_size=websocket_max_bytes,
        # uvicorn would otherwise believe X-Forwarded-For from loopback peers and rewrite
        # scope["client"]; the gateway applies its own TRUSTED_PROXIES (routing.headers).
        proxy_headers=False,
        lifespan="on",
        access_log=False,
        server_header=False,
        date_header=True,
        log_level="warning",
        log_config=None,  # uvicorn's records go through our handlers, in our format
        timeout_graceful_shutdown=int(drain_timeout),
    )
    server = _DrainingServer(config)

    async def main() -> None:
        task = asyncio.ensure_future(background())
        try:
            await server.serve(sockets=sockets)
        finally:
            task.cancel()

    asyncio_run(main(), loop_factory=config.get_loop_factory())
