"""Real HTTP/1.1 backends for the end-to-end tests: asyncio servers on 127.0.0.1.

A raw server (not a framework) so tests control framing exactly: resets mid-body, responses
carrying both Content-Length and Transfer-Encoding, slow drips. Each backend runs on a
shared event loop in a background thread and records what it received.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import socket
import struct
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

GZIP_TEXT = b"chistone passes compressed bytes through untouched. " * 200
GZIPPED = gzip.compress(GZIP_TEXT, mtime=0)
LINGER_RST = struct.pack("ii", 1, 0)  # close with RST, not FIN
PATTERN = bytes(range(256)) * 256  # 64 KiB


def pattern_bytes(n: int) -> bytes:
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Sockets bound and never listening, kept for the whole test process: connecting to their
# ports is refused, and no server started later can take a port (a port that was merely free
# once was, and a "refused" backend then answered 200).
_DEAD: list[socket.socket] = []


def dead_url() -> str:
    """The URL of a backend that refuses every connection."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _DEAD.append(sock)
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


@dataclass
class Seen:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body_len: int


@dataclass
class Backend:
    name: str
    port: int = 0
    healthy: bool = True
    seen: list[Seen] = field(default_factory=list)
    health_checks: int = 0
    server: asyncio.base_events.Server | None = None
    fail_status: int | None = None  # set: every request but health checks gets this status
    # path -> (status, headers, body): fixed answers a test sets and changes (a JWKS)
    canned: dict[str, tuple[int, list[tuple[str, str]], bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port or 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    # -- the protocol --------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = []
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers.append((name.strip().lower(), value.strip()))
                hmap = dict(headers)
                digest = hashlib.sha256()
                size = 0
                if "chunked" in hmap.get("transfer-encoding", ""):
                    while True:
                        length = int((await reader.readuntil(b"\r\n")).strip(), 16)
                        if length == 0:
                            await reader.readuntil(b"\r\n")
                            break
                        piece = await reader.readexactly(length)
                        digest.update(piece)
                        size += length
                        await reader.readexactly(2)
                else:
                    remaining = int(hmap.get("content-length", "0") or 0)
                    while remaining:
                        piece = await reader.read(min(remaining, 65536))
                        if not piece:
                            return
                        digest.update(piece)
                        size += len(piece)
                        remaining -= len(piece)
                self.seen.append(Seen(method, target, headers, size))
                keep = await self._answer(writer, method, target, headers, size,
                                          digest.hexdigest())
                if not keep or hmap.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _send(self, writer, status: int, body: bytes, headers: list[tuple[str, str]] = (),
                    *, reason: str = "OK") -> bool:
        head = f"HTTP/1.1 {status} {reason}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers)
        if not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
            head += f"Content-Length: {len(body)}\r\n"
        writer.write(head.encode("latin-1") + b"\r\n" + body)
        await writer.drain()
        return True

    async def _answer(self, writer, method, target, headers, size, sha) -> bool:
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query)
        if path.endswith("/health"):
            self.health_checks += 1
            return await self._send(writer, 200 if self.healthy else 503, b"ok")
        if self.fail_status is not None:
            return await self._send(writer, self.fail_status,
                                    f"{self.name} fails with {self.fail_status}".encode(),
                                    [("Content-Type", "text/plain")], reason="Failing")
        if path in self.canned:
            status, canned_headers, body = self.canned[path]
            return await self._send(writer, status, body, canned_headers)
        if path.endswith("/verify"):  # a forward-auth service
            token = dict(headers).get("authorization", "")
            if token == "Bearer slow":
                await asyncio.sleep(1.5)
            if token in ("Bearer good", "Bearer slow"):
                return await self._send(writer, 204, b"", [("X-User", "alice")])
            if token == "Bearer broken":
                return await self._send(writer, 500, b"auth bug")
            return await self._send(writer, 401, b"no", reason="Unauthorized")
        if path.endswith("/hop"):
            return await self._send(writer, 200, b"hop", [
                ("Connection", "X-Internal"), ("X-Internal", "secret"),
                ("Keep-Alive", "timeout=5"), ("Proxy-Authenticate", "Basic"),
                ("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/"),
                ("X-Repeat", "1"), ("X-Repeat", "2")])
        if path.endswith("/gzip"):
            return await self._send(writer, 200, GZIPPED, [("Content-Encoding", "gzip"),
                                                          ("Content-Type", "text/plain")])
        if path.endswith("/big"):
            n = int(query.get("n", ["1048576"])[0])
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                         b"Content-Type: application/octet-stream\r\n\r\n")
            sent = 0
            while sent < n:
                piece = pattern_bytes(min(65536, n - sent))
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                sent += len(piece)
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        if path.endswith("/slow"):
            await asyncio.sleep(float(query.get("s", ["3"])[0]))
            return await self._send(writer, 200, b"late")
        if path.endswith("/drip"):
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(20):
                writer.write(b"5\r\ndrip.\r\n")
                await writer.drain()
                await asyncio.sleep(0.25)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        if path.endswith("/reset"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 70000)
            await writer.drain()
            await asyncio.sleep(0.1)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            writer.transport.abort()
            return False
        if path.endswith("/reset-early"):
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            writer.transport.abort()
            return False
        if path.endswith("/clte"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"
                         b"\r\n5\r\nhello\r\n0\r\n\r\n")
            await writer.drain()
            return False
        if path.endswith("/redirect"):
            return await self._send(writer, 302, b"", [("Location", "http://127.0.0.1:1/x")],
                                    reason="Found")
        payload = json.dumps({
            "backend": self.name, "method": method, "target": target, "headers": headers,
            "body_len": size, "body_sha256": sha,
        }).encode()
        return await self._send(writer, 200, payload, [("Content-Type", "application/json")])


class Unaccepting:
    """A listener that never accepts, with its accept queue already full: the kernel drops
    every new SYN, so a connect to it hangs until the client's connect timeout (a host that
    is up but overloaded, or a black-holed address, without leaving 127.0.0.1)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)  # Linux queues one connection for a backlog of 0...
        self.port = self.listener.getsockname()[1]
        self.filler = socket.create_connection(("127.0.0.1", self.port), timeout=2)  # ...this one

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.filler.close()
        self.listener.close()


class BackendFarm:
    """Backends on one event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.backends: dict[str, Backend] = {}
        self.unaccepting: list[Unaccepting] = []

    def add_unaccepting(self) -> Unaccepting:
        listener = Unaccepting()
        self.unaccepting.append(listener)
        return listener

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def add(self, name: str) -> Backend:
        backend = Backend(name)
        self.run(backend.start())
        self.backends[name] = backend
        return backend

    def stop(self, name: str) -> None:
        self.run(self.backends[name].stop())

    def restart(self, name: str) -> None:
        self.run(self.backends[name].start())

    def close(self) -> None:
        for listener in self.unaccepting:
            listener.close()
        for backend in self.backends.values():
            self.run(backend.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
