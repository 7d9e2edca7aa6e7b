"""The daphne adapter: back-pressure, abort, startup and draining on daphne and Twisted.

What daphne does not offer through ASGI, and how this module gets it:

- **Back-pressure.** daphne writes every body message straight into Twisted's send buffer,
  however slowly the client reads. Twisted's own flow control is the answer: a push producer
  registered with the connection's `HTTPChannel` (its public `IConsumer.registerProducer`) is
  told `pauseProducing()` when the transport's buffer passes its `bufferSize` (64 KiB) and
  `resumeProducing()` once it has drained. One producer per connection (`_ChannelFlow`);
  `DaphneConnection.writable()` waits while it is paused. A client that takes nothing for
  `SEND_TIMEOUT_S` has its connection dropped (nginx's `send_timeout`).
- **Abort.** `transport.abortConnection()` of the request's channel (`ITCPTransport`).
- **Which connection.** daphne calls the application with
  `send = functools.partial(Server.handle_reply, request)`; the adapter is the outermost
  ASGI wrapper, so it sees exactly that and takes daphne's `WebRequest` (a
  `twisted.web.http.Request`) from it. Nothing else is searched.
- **Startup.** daphne has no lifespan events: `start_when_running()` starts the data plane
  from a reactor timer, which runs inside the asyncio loop the reactor drives.
- **What Twisted and daphne answer on their own** (requests they cannot parse, invalid
  header bytes, their own failures) is made strict and JSON: `daphne_parser.install()`.
- **Serving inherited sockets** and **draining** (`serve()`), used by the worker processes.

`tests/chistone_site/servers/test_daphne.py` runs a real daphne and fails if any of this can
no longer be found (an upgrade of daphne or Twisted), rather than letting responses stream
without back-pressure.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

from chistone_site.servers import daphne_parser

log = logging.getLogger("chistone.servers.daphne")

SEND_TIMEOUT_S = 60.0


class _ChannelFlow:
    """A Twisted push producer for one connection: paused while the client is behind."""

    __slots__ = ("_waiters", "paused", "stopped")

    def __init__(self) -> None:
        self.paused = False
        self.stopped = False
        self._waiters: list[asyncio.Future[None]] = []

    # IPushProducer, called by Twisted's HTTPChannel from the reactor (the same event loop).
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._wake()

    def stopProducing(self) -> None:
        self.stopped = True
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, limit: float) -> bool:
        """Wait while paused; False if still paused after `limit` seconds."""
        deadline = time.monotonic() + limit
        while self.paused and not self.stopped:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                return False
        return True


# One flow per HTTPChannel, kept only as long as the channel lives.
_flows: weakref.WeakKeyDictionary[Any, _ChannelFlow] = weakref.WeakKeyDictionary()


class DaphneConnection:
    """`routing.respond.ServerConnection` for one daphne request."""

    __slots__ = ("_flow", "_request")

    def __init__(self, request: Any, flow: _ChannelFlow) -> None:
        self._request = request
        self._flow = flow

    async def writable(self) -> None:
        flow = self._flow
        if flow.paused and not flow.stopped and not await flow.wait(SEND_TIMEOUT_S):
            log.warning("client took nothing for %.0f s: dropping the connection",
                        SEND_TIMEOUT_S)
            await self.abort()

    async def abort(self) -> None:
        channel = self._request.channel
        transport = getattr(channel, "transport", None)
        if transport is not None:
            transport.abortConnection()

    @property
    def paused(self) -> bool:
        return self._flow.paused


def _flow_for(channel: Any) -> _ChannelFlow | None:
    flow = _flows.get(channel)
    if flow is None:
        flow = _ChannelFlow()
        try:
            channel.registerProducer(flow, True)
        except RuntimeError:  # another producer holds the channel: no back-pressure for us
            return None
        _flows[channel] = flow
    return flow


def connection_for(send: Any) -> DaphneConnection | None:
    """The connection behind daphne's `send`, or None when `send` is not daphne's."""
    if type(send) is not partial or len(send.args) != 1:
        return None
    server_module = sys.modules.get("daphne.server")
    http = sys.modules.get("twisted.web.http")
    if server_module is None or http is None:  # daphne is not what is running
        return None
    if not isinstance(getattr(send.func, "__self__", None), server_module.Server):
        return None
    request = send.args[0]
    if not isinstance(request, http.Request):
        return None
    channel = request.channel
    if channel is None:  # the client is already gone
        return None
    if getattr(channel.transport, "producer", None) is not channel:
        # The channel must be the producer of its transport, or pauses never reach it.
        return None
    flow = _flow_for(channel)
    if flow is None:
        return None
    return DaphneConnection(request, flow)


# -- WebSockets ---------------------------------------------------------------------------------

_REASON_PHRASES = {
    400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
    405: b"Method Not Allowed", 408: b"Request Timeout", 413: b"Content Too Large",
    414: b"URI Too Long", 429: b"Too Many Requests", 431: b"Request Header Fields Too Large",
    500: b"Internal Server Error", 502: b"Bad Gateway", 503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


class DaphneWebSocket:
    """What a websocket scope needs from daphne beyond its ASGI support, which has no
    "websocket.http.response" extension, no close reasons, no accept headers, only close
    codes 1000 and 3000-4999 (autobahn's `sendClose` raises on 1001, 1011, 1014), and no
    back-pressure. `send` handles those messages on daphne's `WebSocketProtocol` (autobahn)
    directly and passes the others on; `receive` adds the close reason autobahn kept."""

    __slots__ = ("_body", "_flow", "_receive", "_send", "_start", "protocol")

    def __init__(self, protocol: Any, send: Any, receive: Any) -> None:
        self.protocol = protocol
        self._send = send
        self._receive = receive
        self._start: dict[str, Any] | None = None
        self._body: list[bytes] = []
        self._flow = _transport_flow(protocol.transport)

    async def receive(self) -> dict[str, Any]:
        message = await self._receive()
        if message.get("type") == "websocket.disconnect" and "reason" not in message:
            message = {**message, "reason": self.protocol.remoteCloseReason or ""}
            if message.get("code") is None:
                message["code"] = self.protocol.remoteCloseCode or 1005
        return message

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        protocol = self.protocol
        if kind == "websocket.http.response.start":
            self._start = message
        elif kind == "websocket.http.response.body":
            self._body.append(message.get("body", b""))
            if not message.get("more_body", False):
                self._respond()
        elif kind == "websocket.accept" and message.get("headers"):
            deferred = getattr(protocol, "handshake_deferred", None)
            if deferred is None:
                return
            del protocol.handshake_deferred
            headers: dict[str, list[str]] = {}
            for name, value in message["headers"]:
                headers.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
            deferred.callback((message.get("subprotocol"), headers))
        elif kind == "websocket.close" and protocol.state == protocol.STATE_OPEN:
            reason = (message.get("reason") or "").encode()[:123]
            protocol.sendCloseFrame(code=message.get("code") or 1000, reasonUtf8=reason or None,
                                    isReply=False)
        else:
            await self._send(message)

    def _respond(self) -> None:
        """The HTTP answer instead of the upgrade, written as the response to the handshake
        (autobahn is still waiting for daphne's accept), then the connection is closed."""
        protocol = self.protocol
        start, self._start = self._start, None
        if start is None or getattr(protocol, "handshake_deferred", None) is None:
            return
        # daphne may still reject on a timer: let it find a deferred that nobody awaits.
        protocol.handshake_deferred = _ignored_deferred()
        status = int(start["status"])
        body = b"".join(self._body)
        lines = [b"HTTP/1.1 %d %s" % (status, _REASON_PHRASES.get(status, b"Error"))]
        names = set()
        for name, value in start.get("headers", ()):
            names.add(name.lower())
            lines.append(name + b": " + value)
        if b"content-length" not in names:
            lines.append(b"content-length: %d" % len(body))
        lines.append(b"connection: close")
        transport = protocol.transport
        if transport is not None:
            transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
            transport.loseConnection()

    async def writable(self) -> None:
        flow = self._flow
        if flow is not None and flow.paused and not flow.stopped \
                and not await flow.wait(SEND_TIMEOUT_S):
            log.warning("WebSocket client took nothing for %.0f s: dropping the connection",
                        SEND_TIMEOUT_S)
            await self.abort()

    async def abort(self) -> None:
        transport = self.protocol.transport
        if transport is not None:
            transport.abortConnection()


def _ignored_deferred() -> Any:
    from twisted.internet import defer

    deferred = defer.Deferred()
    deferred.addErrback(lambda _failure: None)
    return deferred


def _transport_flow(transport: Any) -> _ChannelFlow | None:
    """Back-pressure for a connection daphne upgraded: its HTTP channel, which no longer
    uses the transport, is still registered as the transport's producer; ours replaces it."""
    if transport is None:
        return None
    flow = _flows.get(transport)
    if flow is not None:
        return flow
    http = sys.modules.get("twisted.web.http")
    producer = getattr(transport, "producer", None)
    if producer is not None:
        if http is None or not isinstance(producer, http.HTTPChannel):
            return None  # someone else's: leave it
        transport.unregisterProducer()
    flow = _ChannelFlow()
    try:
        transport.registerProducer(flow, True)
    except RuntimeError:
        return None
    _flows[transport] = flow
    return flow


def websocket_for(send: Any, receive: Any) -> DaphneWebSocket | None:
    """daphne's WebSocket protocol behind `send`, wrapped; None when `send` is not daphne's."""
    if type(send) is not partial or len(send.args) != 1:
        return None
    server_module = sys.modules.get("daphne.server")
    ws_module = sys.modules.get("daphne.ws_protocol")
    if server_module is None or ws_module is None:
        return None
    if not isinstance(getattr(send.func, "__self__", None), server_module.Server):
        return None
    protocol = send.args[0]
    if not isinstance(protocol, ws_module.WebSocketProtocol):
        return None
    for name in ("sendCloseFrame", "STATE_OPEN", "remoteCloseReason", "transport"):
        if not hasattr(protocol, name):
            return None
    return DaphneWebSocket(protocol, send, receive)


def start_when_running(start: Callable[[], Awaitable[None]]) -> None:
    """Start `start()` on the event loop as soon as Twisted's reactor runs (if it is the
    asyncio reactor daphne installs; otherwise there is nothing to do here)."""
    reactor = sys.modules.get("twisted.internet.reactor")
    asyncioreactor = sys.modules.get("twisted.internet.asyncioreactor")
    if reactor is None or asyncioreactor is None:
        return
    if not isinstance(reactor, asyncioreactor.AsyncioSelectorReactor):
        return

    def spawn() -> None:  # a reactor timer runs inside the asyncio loop's run_forever()
        asyncio.get_running_loop().create_task(start())

    reactor.callWhenRunning(reactor.callLater, 0, spawn)


# -- serving inherited sockets (worker processes) ---------------------------------------------


class Drainable(Protocol):
    """The application's in-flight count and draining flag (workers.worker.InflightCounter)."""

    draining: bool
    inflight: int


def install_reactor() -> None:
    """Install the asyncio reactor daphne runs on, over a uvloop event loop when uvloop is
    installed; must happen before anything imports `twisted.internet.reactor`.

    daphne installs Twisted's asyncio reactor over a stock asyncio loop when it is imported,
    unless an asyncio reactor is installed already: this installs it first. Twisted still
    reads and writes the client's sockets itself (through the loop's add_reader and
    add_writer); uvloop runs the loop, its timers and callbacks, and the transports of the
    upstream connections (routing.upstream_h1), which is where the loop's time goes."""
    if "twisted.internet.reactor" not in sys.modules:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
            pass
        else:
            from twisted.internet import asyncioreactor

            loop = uvloop.new_event_loop()
            asyncio.set_event_loop(loop)
            asyncioreactor.install(loop)
    import daphne.server  # noqa: F401


def _accept_one_at_a_time(port: Any) -> None:
    """Share connections fairly among the workers on one shared listening socket.

    Twisted accepts up to `numberAccepts` (100, and growing) connections per wake-up, so the
    first worker to wake takes a whole burst of new keep-alive connections and the others stay
    idle. One accept per wake-up lets every woken worker take its share.
    """
    do_read = port.doRead

    def fair_do_read():
        port.numberAccepts = 1
        return do_read()

    port.doRead = fair_do_read


def _reap_finished_applications(server: Any) -> None:
    """Forget each request's application instance as soon as it returns.

    daphne keeps every finished request (its `WebRequest`, headers, input queue, task and
    scope) in `Server.connections` until `application_checker` runs, once a second: at a
    few thousand requests a second that is a thousand or more dead requests, about 55
    objects each, that Python's cyclic garbage collector walks again and again, and promotes
    to older generations: about 15 us per request in the benchmark (bench/RESULTS.md). The
    application's own `done` callback does what the checker would do for an instance that
    returned once its request is finished (the response sent, or the client gone): drop the
    request's entry. Anything else is left to the checker: an instance that raised or was
    cancelled (the checker logs it and answers the client), or one that returned before its
    request finished."""
    create = server.create_application  # Server.run() makes `connections`: look it up late

    def reap(protocol: Any, task: asyncio.Future) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        connections = server.connections
        details = connections.get(protocol)
        # Only a finished request goes: an entry must keep its instance while it stays, since
        # daphne's shutdown (`kill_all_applications`) reads it from every entry.
        if details is not None and details.get("disconnected") \
                and details.get("application_instance") is task:
            del connections[protocol]

    def create_application(protocol: Any, scope: dict[str, Any]) -> Any:
        queue = create(protocol, scope)
        details = server.connections.get(protocol)
        task = details.get("application_instance") if details is not None else None
        if task is not None:
            task.add_done_callback(partial(reap, protocol))
        return queue

    server.create_application = create_application


class OpenSockets(Protocol):
    """The data plane's open WebSocket connections (routing.websocket.WebSocketGateway)."""

    sessions: Any

    async def close_all(self) -> int: ...


def serve(app: Any, fds: list[int], *, counter: Drainable, shared_socket: bool,
          on_start: Callable[[], Awaitable[None]], drain_timeout: float,
          drain_linger: float, websockets: OpenSockets | None = None,
          websocket_max_bytes: int = 16 * 1024 * 1024) -> None:
    """Serve `app` on inherited listening sockets until SIGTERM/SIGINT, then drain: stop
    accepting, keep answering open connections for `drain_linger` seconds, stop when nothing
    is in flight, or after `drain_timeout`, when open WebSockets are closed with 1001 first.

    daphne's own WebSocket limits are set to the data plane's: messages up to
    `websocket_max_bytes` (daphne's default is 1 MiB), no lifetime limit (daphne closes any
    WebSocket after a day by default; the gateway's idle timeout applies instead), and up to
    five minutes between the handshake and the gateway's answer (the script and the backend
    handshake run in between; daphne's default is 5 s)."""
    from daphne.server import Server
    from twisted.internet import reactor

    server = Server(
        app,
        # The "fd" endpoint adopts an inherited AF_INET listening socket.
        endpoints=[f"fd:fileno={fd}" for fd in fds],
        signal_handlers=False,
        verbosity=0,
        server_name="chistone",
        websocket_timeout=-1,
        websocket_connect_timeout=300,
        websocket_handshake_timeout=300,
        websocket_max_message_size=websocket_max_bytes,
        websocket_max_frame_size=websocket_max_bytes,
    )
    ports: list[Any] = []

    def drain(*_: Any) -> None:
        if counter.draining:
            return
        log.info("worker %s draining", os.getpid())
        counter.draining = True
        for port in ports:
            port.stopListening()
        deadline = time.monotonic() + drain_timeout
        # Keep answering on open connections for a moment (with Connection: close) so
        # clients in the middle of a keep-alive exchange finish on this worker.
        linger_until = time.monotonic() + drain_linger

        stopped = False

        def stop() -> None:
            nonlocal stopped
            if not stopped:
                stopped = True
                reactor.stop()

        def close_websockets_then_stop() -> None:
            if websockets is None or not websockets.sessions:
                stop()
                return
            task = asyncio.get_event_loop().create_task(websockets.close_all())
            task.add_done_callback(lambda _task: reactor.callLater(0.1, stop))
            reactor.callLater(10.0, stop)  # closing handshakes that never end

        def check() -> None:
            now = time.monotonic()
            if counter.inflight <= 0 and now >= linger_until:
                stop()
            elif now > deadline:
                close_websockets_then_stop()
            else:
                reactor.callLater(0.05, check)

        check()

    original_listen_success = server.listen_success

    def listen_success(port: Any) -> Any:
        ports.append(port)
        if shared_socket:
            _accept_one_at_a_time(port)
        return original_listen_success(port)

    server.listen_success = listen_success
    _reap_finished_applications(server)
    daphne_parser.install()
    start_when_running(on_start)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(drain))
    signal.signal(signal.SIGINT, lambda *_: reactor.callFromThread(drain))
    server.run()
