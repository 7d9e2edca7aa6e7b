"""A backend that keeps exactly what it received: request line, headers, body bytes.

A strict HTTP/1.1 parser (CRLF line ends, token names, `Content-Length` digits only,
`Transfer-Encoding: chunked` only, hex chunk sizes): whatever a proxy sends that it cannot
parse is recorded as `unparseable` with the raw bytes, answered 400 and the connection
closed. Every request it can parse is answered `200 ok`. One `Recorder` per proxy under test,
so the two views never mix.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_REQUEST_LINE = re.compile(rb"([-!#$%&'*+.^_`|~0-9A-Za-z]+) (\S+) HTTP/1\.[01]")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(;[^\r\n]*)?")
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class Received:
    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


@dataclass(frozen=True)
class Unparseable:
    reason: str
    raw: bytes


class _Malformed(Exception):
    pass


@dataclass
class Recorder:
    name: str
    port: int = 0
    received: list[Received | Unparseable] = field(default_factory=list)
    server: asyncio.base_events.Server | None = None
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and end the proxies' kept-alive connections."""
        if self.server is not None:
            self.server.close()
        for writer in list(self._open):
            writer.close()
        await asyncio.sleep(0.05)  # let the connection handlers see the end and return

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = _Buffer(reader)
        self._open.add(writer)
        try:
            while True:
                try:
                    request = await _read_request(buffer)
                except _Malformed as exc:
                    self.received.append(Unparseable(str(exc), bytes(buffer.seen)))
                    writer.write(BAD)
                    await writer.drain()
                    return
                if request is None:
                    return
                self.received.append(request)
                writer.write(OK)
                await writer.drain()
                if any(n.lower() == b"connection" and v.lower() == b"close"
                       for n, v in request.headers):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            if buffer.seen:
                self.received.append(Unparseable("connection ended mid-request",
                                                 bytes(buffer.seen)))
        finally:
            self._open.discard(writer)
            writer.close()


class _Buffer:
    """The connection's bytes, keeping those of the message being read for the record."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.seen = bytearray()

    async def line(self) -> bytes:
        try:
            data = await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            raise _Malformed("line too long") from exc
        self.seen += data
        if not data.endswith(b"\r\n"):
            raise _Malformed("bare LF")
        if b"\r" in data[:-2]:
            raise _Malformed("bare CR")
        return data[:-2]

    async def exactly(self, n: int) -> bytes:
        data = await self.reader.readexactly(n)
        self.seen += data
        return data


async def _read_request(buffer: _Buffer) -> Received | None:
    buffer.seen.clear()
    try:
        first = await buffer.line()
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    match = _REQUEST_LINE.fullmatch(first)
    if match is None:
        raise _Malformed(f"request line {first[:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    while True:
        line = await buffer.line()
        if not line:
            break
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            raise _Malformed(f"header line {line[:80]!r}")
        value = value.strip(b" \t")
        if any(c < 0x20 and c != 0x09 or c == 0x7f for c in value):
            raise _Malformed(f"control byte in {name!r}")
        headers.append((name, value))
    lengths = [v for n, v in headers if n.lower() == b"content-length"]
    codings = [v for n, v in headers if n.lower() == b"transfer-encoding"]
    if codings:
        if lengths or codings != [b"chunked"]:
            raise _Malformed(f"framing: transfer-encoding {codings} with lengths {lengths}")
        body = await _read_chunked(buffer)
    elif lengths:
        if len(lengths) > 1 or not lengths[0].isdigit():
            raise _Malformed(f"framing: content-length {lengths}")
        body = await buffer.exactly(int(lengths[0]))
    else:
        body = b""
    return Received(match.group(1), match.group(2), tuple(headers), body)


async def _read_chunked(buffer: _Buffer) -> bytes:
    body = bytearray()
    while True:
        line = await buffer.line()
        match = _CHUNK_SIZE.fullmatch(line)
        if match is None:
            raise _Malformed(f"chunk size {line[:40]!r}")
        size = int(match.group(1), 16)
        if size == 0:
            while await buffer.line():  # trailer fields, then the empty line
                pass
            return bytes(body)
        body += await buffer.exactly(size)
        if await buffer.line() != b"":
            raise _Malformed("chunk data longer than its size")
