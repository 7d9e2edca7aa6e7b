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
import sys
from collections.abc import Awaitable

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

        # A plain function that hands back the server's awaitable: one coroutine frame less
        # on every send of every request.
        def send_closing(message) -> Awaitable[None]:
            if self.draining and message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            return send(message)

        try:
            await self.app(scope, receive, send_closing)
        finally:
            self.inflight -= 1


def _load_application(server: str) -> tuple[InflightCounter, object]:
    """The application as this worker serves it: the server's adapter outermost (it must see
    the server's own `send`), then the in-flight counter, then the planes."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chistone_site.settings")
    from chistone_site.asgi import router
    from chistone_site.servers import adapt

    counter = InflightCounter(router)
    return counter, adapt(counter, server=server)


async def _beat_forever() -> None:
    slot = heartbeat.current()
    while slot is not None:
        slot.beat()
        await asyncio.sleep(HEARTBEAT_INTERVAL)


def _server_websocket_limit() -> int:
    """The server's own message limit: above the gateway's, so that a message just over the
    gateway's limit arrives whole and is refused with a clean 1009 from the gateway (a server
    that refuses mid-message may reset the connection before the client reads the close
    frame); far larger ones are cut off by the server, also with 1009."""
    from routing.conf import get_conf

    limit = get_conf().websocket_max_message_bytes
    return limit + max(limit // 8, 64 * 1024)


def _websockets():
    """The data plane's open WebSockets (closed with 1001 when a drain's time is up)."""
    from chistone_site.asgi import data_plane

    return data_plane.websockets


def run_daphne(fds: list[int], *, shared_socket: bool) -> None:
    from chistone_site.servers import daphne

    daphne.install_reactor()  # before the application loads anything of Twisted
    counter, app = _load_application("daphne")
    daphne.serve(app, fds, counter=counter, shared_socket=shared_socket,
                 on_start=_beat_forever, drain_timeout=DRAIN_TIMEOUT, drain_linger=DRAIN_LINGER,
                 websockets=_websockets(),
                 websocket_max_bytes=_server_websocket_limit())


def run_uvicorn(fds: list[int]) -> None:
    from chistone_site.servers import uvicorn

    _, app = _load_application("uvicorn")
    uvicorn.serve(app, fds, background=_beat_forever, drain_timeout=DRAIN_TIMEOUT,
                  websockets=_websockets(),
                  websocket_max_bytes=_server_websocket_limit())


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
