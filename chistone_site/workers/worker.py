"""One worker process: serve the ASGI application on listening sockets it inherited.

Started by the supervisor as `python -m chistone_site.workers.worker --server daphne
--fds 3,4`. SIGTERM drains: stop accepting, let in-flight requests finish (bounded), exit.
The worker beats its heartbeat slot from its event loop, so a blocked loop is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time

from chistone_site.conf import process_environment
from chistone_site.workers import heartbeat

log = logging.getLogger("chistone.worker")
HEARTBEAT_INTERVAL = 0.25
_environment = process_environment()  # read before Django is set up
DRAIN_TIMEOUT = _environment.drain_timeout_s
DRAIN_LINGER = 0.5


class InflightCounter:
    """ASGI wrapper counting requests in progress, so a drain knows when it is done.

    While draining, every response carries `Connection: close`, so keep-alive clients move
    to another worker after their current request instead of finding the connection gone.
    """

    def __init__(self, app) -> None:
        self.app = app
        self.inflight = 0
        self.draining = False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        self.inflight += 1

        async def send_closing(message) -> None:
            if self.draining and message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, receive, send_closing)
        finally:
            self.inflight -= 1


def _load_application():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chistone_site.settings")
    from chistone_site.asgi import application

    return InflightCounter(application)


async def _beat_forever() -> None:
    slot = heartbeat.current()
    while slot is not None:
        slot.beat()
        await asyncio.sleep(HEARTBEAT_INTERVAL)


def _accept_one_at_a_time(port) -> None:
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


def run_daphne(fds: list[int], *, shared_socket: bool) -> None:
    from daphne.server import Server
    from twisted.internet import reactor

    app = _load_application()
    server = Server(
        app,
        # The "fd" endpoint adopts an inherited AF_INET listening socket.
        endpoints=[f"fd:fileno={fd}" for fd in fds],
        signal_handlers=False,
        verbosity=0,
        server_name="chistone",
    )
    ports = []

    def started(port):
        ports.append(port)
        return port

    def drain(*_):
        if app.draining:
            return
        log.info("worker %s draining", os.getpid())
        app.draining = True
        for port in ports:
            port.stopListening()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        # Keep answering on open connections for a moment (with Connection: close) so
        # clients in the middle of a keep-alive exchange finish on this worker.
        linger_until = time.monotonic() + DRAIN_LINGER

        def check():
            now = time.monotonic()
            if (app.inflight <= 0 and now >= linger_until) or now > deadline:
                reactor.stop()
            else:
                reactor.callLater(0.05, check)

        check()

    original_listen_success = server.listen_success

    def listen_success(port):
        started(port)
        if shared_socket:
            _accept_one_at_a_time(port)
        return original_listen_success(port)

    server.listen_success = listen_success
    reactor.callWhenRunning(
        lambda: asyncio.ensure_future(_beat_forever(), loop=reactor._asyncioEventloop)
    )
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(drain))
    signal.signal(signal.SIGINT, lambda *_: reactor.callFromThread(drain))
    server.run()


def run_uvicorn(fds: list[int]) -> None:
    import uvicorn

    app = _load_application()
    sockets = [socket.socket(fileno=fd) for fd in fds]
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        server_header=False,
        date_header=True,
        log_level="warning",
        log_config=None,  # uvicorn's records go through our handlers, in our format
        timeout_graceful_shutdown=int(DRAIN_TIMEOUT),
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        beat = asyncio.ensure_future(_beat_forever())
        try:
            await server.serve(sockets=sockets)
        finally:
            beat.cancel()

    from uvicorn._compat import asyncio_run

    # uvicorn installs its own SIGTERM/SIGINT handlers: stop accepting, finish in-flight.
    asyncio_run(main(), loop_factory=config.get_loop_factory())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", choices=("daphne", "uvicorn"), default="daphne")
    parser.add_argument("--fds", required=True, help="comma-separated inherited socket fds")
    parser.add_argument("--shared-socket", action="store_true",
                        help="the sockets are shared with other workers (not SO_REUSEPORT)")
    args = parser.parse_args(argv)
    fds = [int(fd) for fd in args.fds.split(",")]
    # Until Django's LOGGING takes over (when the application loads), in the same format.
    from routing.logs import make_formatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(_environment.log_format))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    if args.server == "uvicorn":
        run_uvicorn(fds)
    else:
        run_daphne(fds, shared_socket=args.shared_socket)


if __name__ == "__main__":
    main()
