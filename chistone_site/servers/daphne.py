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
    """Install the asyncio reactor daphne runs on (importing daphne.server does it); must
    happen before anything imports `twisted.internet.reactor`."""
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


def serve(app: Any, fds: list[int], *, counter: Drainable, shared_socket: bool,
          on_start: Callable[[], Awaitable[None]], drain_timeout: float,
          drain_linger: float) -> None:
    """Serve `app` on inherited listening sockets until SIGTERM/SIGINT, then drain: stop
    accepting, keep answering open connections for `drain_linger` seconds, stop when nothing
    is in flight (or after `drain_timeout`)."""
    from daphne.server import Server
    from twisted.internet import reactor

    server = Server(
        app,
        # The "fd" endpoint adopts an inherited AF_INET listening socket.
        endpoints=[f"fd:fileno={fd}" for fd in fds],
        signal_handlers=False,
        verbosity=0,
        server_name="chistone",
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

        def check() -> None:
            now = time.monotonic()
            if (counter.inflight <= 0 and now >= linger_until) or now > deadline:
                reactor.stop()
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
    daphne_parser.install()
    start_when_running(on_start)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(drain))
    signal.signal(signal.SIGINT, lambda *_: reactor.callFromThread(drain))
    server.run()
