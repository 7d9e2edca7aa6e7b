"""The fallback backend when nginx is absent: a minimal asyncio HTTP/1.1 server.

Answers every request with the same small 200 body as bench/anchors/backend.nginx.conf, keeps
connections alive, and skips request bodies sent with Content-Length (chunked request bodies
are not supported: the benchmark only sends GETs).

    python bench/anchors/backend.py --port 8080
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

BODY = b'{"ok":true}\n'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"\r\n" + BODY
)
MAX_HEAD = 64 * 1024


def parse_head(head: bytes) -> tuple[int, bool]:
    """(Content-Length, close after answering) from a request head without its blank line."""
    lines = head.split(b"\r\n")
    keep_alive = not lines[0].rstrip().endswith(b"HTTP/1.0")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection":
            token = value.strip().lower()
            keep_alive = token == b"keep-alive" or (keep_alive and token != b"close")
    return length, not keep_alive


class BackendProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.skip = 0  # request body bytes still to discard
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while buffer:
            if self.skip:
                taken = min(self.skip, len(buffer))
                del buffer[:taken]
                self.skip -= taken
                continue
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    self.transport.close()
                return
            try:
                self.skip, close = parse_head(bytes(buffer[:end]))
            except ValueError:
                self.transport.close()
                return
            del buffer[:end + 4]
            self.transport.write(RESPONSE)
            if close:
                self.transport.close()
                return


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(BackendProtocol, host, port, backlog=4096,
                                      reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
