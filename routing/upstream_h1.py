"""A lean HTTP/1.1 upstream client: asyncio protocols, llhttp (httptools) parsing, a
keep-alive pool per backend. It implements `routing.upstream.Transport` with the same
contract as the aiohttp transport (see that module): `send()` returns once the response head
arrived; `read_chunk/ready/at_eof/release/close`; timeouts `connect` (pool wait plus TCP/TLS
connect), `read` (to the first byte and between any two reads), `total` (the whole exchange);
raw bytes both ways (the request target and header values go out as the client sent them,
Content-Encoding untouched); no default headers, no redirects, no cookies, no proxy from the
environment.

Why: per proxied request aiohttp builds a request object, a header multidict, a URL, timer
handles and a response object, and parses in pure-Python glue around its C parser; most of
that has no use for a proxy that already holds the exact bytes to send. Here the request head
is one bytes object, the response head is parsed by llhttp in C in one call, the deadline is
one timer, and a connection goes back to its pool without a task.

Framing of the response is llhttp's, strict: two Content-Lengths, Content-Length together
with Transfer-Encoding, a bad chunk size, obsolete line folding, bare CR or LF, control
characters in a header, or no status line are a `Broken` exchange (502), never relayed.
Interim answers (1xx but 101) are skipped. A body without a length is read until the
backend closes; any other body that ends early is `Broken`.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

from routing.conf import GatewayConf
from routing.upstream import (
    Body,
    Broken,
    ConnectFailed,
    ConnectTimedOut,
    ReadTimedOut,
    UpstreamError,
    _as_sent,
)

_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_HIGH_WATER_CHUNKS = 4  # read buffered past this many chunks pauses the backend socket
# A backend's response head is bounded as aiohttp bounded it (and nginx, with its 4-8 KiB
# proxy_buffer_size, more tightly): a header line over 8190 bytes, or a head over 64 KiB,
# is an invalid response (502), never buffered without end.
MAX_FIELD_BYTES = 8190
MAX_HEAD_BYTES = 64 * 1024


def _header_bytes(value: str) -> bytes:
    if value.isascii():
        return value.encode("ascii")
    return _as_sent(value).encode("utf-8")  # the same bytes the aiohttp transport sent


class _Connection(asyncio.Protocol):
    """One connection to one backend origin; one exchange at a time."""

    __slots__ = ("_body_waiter", "_drain_waiter", "_paused_writing", "_total_handle",
                 "buffer", "buffered", "chunk", "chunked", "closed", "complete", "error",
                 "exchange_done", "forgotten", "head_bytes",
                 "has_length", "head", "head_only", "headers", "idle_since", "keep_alive",
                 "last_read", "loop", "origin", "parser", "pool", "read_limit",
                 "reading_paused", "received_any", "status", "transport", "used")

    def __init__(self, pool: _Pool, chunk: int) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.chunk = chunk
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.forgotten = False
        self.chunked = False
        self.used = False  # it served an exchange before (a reused keep-alive connection)
        self.idle_since = 0.0
        self._drain_waiter: asyncio.Future[None] | None = None
        self._paused_writing = False
        self._reset()

    def _reset(self) -> None:
        self.parser = None
        self.head: asyncio.Future[None] | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.buffer: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.complete = False
        self.error: UpstreamError | None = None
        self.keep_alive = False
        self.head_only = False
        self.has_length = False
        self.received_any = False
        self.head_bytes = 0
        self.reading_paused = False
        self._body_waiter: asyncio.Future[None] | None = None
        self.read_limit = 0.0
        self.last_read = 0.0
        self._total_handle: asyncio.TimerHandle | None = None
        self.exchange_done = False

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:  # bytes from an idle connection: it cannot be reused
            self._fail(Broken("the backend sent bytes outside an exchange"))
            return
        self.received_any = True
        self.last_read = self.loop.time()
        if not self.status:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES and self.head_bytes - len(data) <= MAX_HEAD_BYTES:
                try:  # the head may end within this piece: let the parser say
                    parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    self._fail(Broken(f"invalid response from the backend: {exc}"))
                    return
                except httptools.HttpParserUpgrade:
                    self._fail(Broken("the backend switched protocols"))
                    return
                if not self.status:
                    self._fail(Broken("the backend's response head is too large"))
                return
            if self.head_bytes > MAX_HEAD_BYTES:
                self._fail(Broken("the backend's response head is too large"))
                return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(Broken("the backend switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(Broken(f"invalid response from the backend: {exc}"))

    def eof_received(self) -> bool | None:
        return False  # close the transport; connection_lost decides what it meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.parser is not None and not self.complete and self.error is None:
            if self.status and not self.has_length and not self.head_only:
                self._message_complete(keep_alive=False)  # a body read until the close
            else:
                self.error = Broken("the backend closed the connection" if exc is None
                                    else f"connection lost: {exc}")
        self._wake()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(Broken("the backend closed the connection"))

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- httptools callbacks -------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) + 2 > MAX_FIELD_BYTES:
            raise httptools.HttpParserError("a response header line is too long")
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        if 100 <= status < 200:  # an interim answer: the real one follows (101 raised)
            self.headers = []
            return
        self.status = status
        for name, _value in self.headers:
            lower = name.lower()
            if lower == b"content-length" or lower == b"transfer-encoding":
                self.has_length = True
                break
        if status in (204, 304):
            self.has_length = True
        self.keep_alive = parser.should_keep_alive()
        head = self.head
        if head is not None and not head.done():
            head.set_result(None)
        if self.head_only:  # a HEAD answer has no body, whatever its headers say
            self._message_complete(keep_alive=self.keep_alive and self.has_length)

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self.buffer.append(body)
        self.buffered += len(body)
        if self.buffered > self.chunk * _HIGH_WATER_CHUNKS and not self.reading_paused \
                and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status == 0 or self.complete:  # the end of an interim answer, or HEAD
            return
        self._message_complete(keep_alive=self.keep_alive)

    # -- the exchange ----------------------------------------------------------------------------
    def _message_complete(self, *, keep_alive: bool) -> None:
        self.complete = True
        self.keep_alive = keep_alive
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None and not self.complete:
            self.error = error
        head = self.head
        if head is not None and not head.done():
            head.set_exception(error)
        self._wake()
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        head = self.head
        if head is not None and not head.done() and (self.error is not None or self.closed):
            head.set_exception(self.error or Broken("the backend closed the connection"))
        waiter = self._body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_deadline(self, total_deadline: float) -> None:
        """One timer per exchange: the total deadline, and the read timeout checked lazily
        (re-armed from the last read instead of a timer per read)."""
        self._total_handle = None
        if self.complete or self.error is not None or self.exchange_done:
            return
        now = self.loop.time()
        read_deadline = self.last_read + self.read_limit
        if now >= total_deadline:
            self._fail(ReadTimedOut("the total timeout passed"))
        elif now >= read_deadline and (self._body_waiter is not None or self.head is not None
                                       and not self.head.done()):
            self._fail(ReadTimedOut("no byte from the backend within the read timeout"))
        else:
            self._total_handle = self.loop.call_at(
                min(total_deadline, max(read_deadline, now + 0.001)), self._on_deadline,
                total_deadline)

    async def drain(self) -> None:
        if self._paused_writing and not self.closed:
            self._drain_waiter = self.loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None
        if self.closed:
            raise Broken("the backend closed the connection during the upload")

    async def exchange(self, head: bytes, body: Body, *, head_only: bool, read: float,
                       total_deadline: float, chunked: bool) -> None:
        """Write the request and wait for the response head (raises an UpstreamError)."""
        self._reset()
        self.chunked = chunked
        self.parser = httptools.HttpResponseParser(self)
        self.head_only = head_only
        self.read_limit = read
        self.last_read = self.loop.time()
        self.head = self.loop.create_future()
        self._total_handle = self.loop.call_at(
            min(total_deadline, self.last_read + read), self._on_deadline, total_deadline)
        transport = self.transport
        assert transport is not None
        if body is None or isinstance(body, bytes):
            transport.write(head + body if body else head)
        else:
            transport.write(head)
            await self._stream(body)
        self.last_read = self.loop.time()  # the read timeout runs from the end of the upload
        await self.head
        self.head = None

    async def _stream(self, body: AsyncIterator[bytes]) -> None:
        transport = self.transport
        assert transport is not None
        chunked = self.chunked
        try:
            async for piece in body:
                if self.error is not None:
                    raise self.error
                if not piece:
                    continue
                transport.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                self.last_read = self.loop.time()  # no read timeout while uploading
                await self.drain()
        except UpstreamError:
            raise
        except Exception as exc:  # the client's upload failed: this exchange cannot finish
            self._fail(Broken(f"the request body could not be read: {exc}"))
            raise Broken(f"the request body could not be read: {exc}") from exc
        if chunked:
            transport.write(b"0\r\n\r\n")

    def finished(self) -> None:
        self.exchange_done = True
        handle = self._total_handle
        if handle is not None:
            handle.cancel()
            self._total_handle = None


class _Response:
    """`routing.upstream.UpstreamResponse` over one `_Connection`."""

    __slots__ = ("_conn", "_done", "raw_headers", "status")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = conn.status
        self.raw_headers = tuple(conn.headers)
        self._done = False

    async def read_chunk(self) -> bytes:
        conn = self._conn
        if conn.error is not None:  # a broken exchange: what was buffered is not passed on
            raise conn.error
        while not conn.buffer:
            if conn.error is not None:
                raise conn.error
            if conn.complete:
                return b""
            if conn.closed:
                raise Broken("the backend closed the connection")
            if conn.reading_paused and conn.transport is not None:
                conn.reading_paused = False
                conn.transport.resume_reading()
            conn._body_waiter = conn.loop.create_future()
            try:
                await conn._body_waiter
            finally:
                conn._body_waiter = None
        buffer = conn.buffer
        piece = buffer.popleft()
        if len(piece) > conn.chunk:
            buffer.appendleft(piece[conn.chunk:])
            piece = piece[:conn.chunk]
        elif buffer and len(piece) < conn.chunk:
            parts = [piece]
            size = len(piece)
            while buffer and size + len(buffer[0]) <= conn.chunk:
                part = buffer.popleft()
                parts.append(part)
                size += len(part)
            piece = b"".join(parts)
        conn.buffered -= len(piece)
        if conn.reading_paused and conn.buffered <= conn.chunk and conn.transport is not None:
            conn.reading_paused = False
            conn.transport.resume_reading()
        return piece

    def ready(self) -> bool:
        conn = self._conn
        return bool(conn.buffer) or conn.complete or conn.error is not None

    def at_eof(self) -> bool:
        conn = self._conn
        return conn.complete and not conn.buffer

    def release(self) -> None:
        if self._done:
            return
        self._done = True
        conn = self._conn
        conn.finished()
        if conn.complete and conn.keep_alive and not conn.buffer and conn.error is None \
                and not conn.closed:
            conn.parser = None
            conn.pool.put_back(conn)
        else:
            conn.pool.discard(conn)

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        conn = self._conn
        conn.finished()
        conn.pool.discard(conn)


class _Pool:
    """Keep-alive connections to one origin, bounded, most recently used first."""

    def __init__(self, transport: H1Transport, origin: str) -> None:
        parts = urlsplit(origin)
        self.transport = transport
        self.secure = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.secure else 80)
        self.idle: list[_Connection] = []
        self.open = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self, connect: float) -> _Connection:
        keepalive = self.transport.conf.upstream_keepalive_s
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if conn.closed:
                continue
            if now - conn.idle_since > keepalive:
                self.discard(conn)
                continue
            return conn
        deadline = now + connect
        while self.open >= self.transport.per_backend or \
                self.transport.open_total >= self.transport.total_limit:
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await waiter
            except TimeoutError:
                raise ConnectTimedOut("no upstream connection free within the connect "
                                      "timeout") from None
            finally:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
            if self.idle:
                conn = self.idle.pop()
                if not conn.closed:
                    return conn
        self.open += 1
        self.transport.open_total += 1
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                _transport, conn = await loop.create_connection(
                    lambda: _Connection(self, self.transport.conf.chunk_bytes),
                    self.host, self.port,
                    ssl=self.transport.tls() if self.secure else None,
                    server_hostname=self.host if self.secure else None)
        except TimeoutError:
            self._closed_one()
            raise ConnectTimedOut("connect timed out") from None
        except (OSError, ssl.SSLError) as exc:
            self._closed_one()
            raise ConnectFailed(str(exc) or type(exc).__name__) from exc
        except BaseException:
            self._closed_one()
            raise
        return conn

    def put_back(self, conn: _Connection) -> None:
        conn.used = True
        conn.idle_since = time.monotonic()
        self.idle.append(conn)
        self._wake_one()

    def discard(self, conn: _Connection) -> None:
        if conn.transport is not None and not conn.closed:
            conn.transport.abort()  # connection_lost calls forget()
        else:
            self.forget(conn)

    def forget(self, conn: _Connection) -> None:
        if conn.forgotten:
            return
        conn.forgotten = True
        if conn in self.idle:
            self.idle.remove(conn)
        self._closed_one()

    def _closed_one(self) -> None:
        self.open -= 1
        self.transport.open_total -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        for conn in list(self.idle):
            self.discard(conn)
        self.idle.clear()


class H1Transport:
    """`routing.upstream.Transport` on the lean client (see the module docstring)."""

    def __init__(self, conf: GatewayConf) -> None:
        self.conf = conf
        self.per_backend = conf.upstream_pool_per_backend
        self.total_limit = conf.upstream_pool_size
        self.open_total = 0
        self._pools: dict[str, _Pool] = {}
        self._tls: ssl.SSLContext | None = None

    def tls(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def _pool(self, origin: str) -> _Pool:
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool(self, origin)
        return pool

    @staticmethod
    def _split(url: str) -> tuple[str, str]:
        """(origin, request target) of an absolute URL, the target byte for byte."""
        scheme_end = url.index("://") + 3
        slash = url.find("/", scheme_end)
        if slash < 0:
            query = url.find("?", scheme_end)
            if query < 0:
                return url, "/"
            return url[:query], "/" + url[query:]
        return url[:slash], url[slash:]

    def _head(self, method: str, target: str, headers: list[tuple[str, str]], body: Body,
              ) -> bytes:
        """The request head as bytes. Usually every value is ASCII: one join, one encode;
        otherwise each value is encoded as the aiohttp transport did (`_header_bytes`)."""
        has_length = False
        for name, _value in headers:
            if name == "content-length" or name == "transfer-encoding":
                has_length = True
                break
        if body is None:
            extra = "Content-Length: 0\r\n" if method not in _NO_BODY_METHODS \
                and not has_length else ""
        elif isinstance(body, bytes):
            extra = "" if has_length else f"Content-Length: {len(body)}\r\n"
        else:
            extra = "" if has_length else "Transfer-Encoding: chunked\r\n"
        text = "".join([f"{method} {target} HTTP/1.1\r\n",
                        *[f"{name}: {value}\r\n" for name, value in headers], extra, "\r\n"])
        if text.isascii():
            return text.encode("ascii")
        lines = [f"{method} {target} HTTP/1.1".encode("latin-1")]
        lines += [name.encode("latin-1") + b": " + _header_bytes(value)
                  for name, value in headers]
        return b"\r\n".join(lines) + b"\r\n" + extra.encode("ascii") + b"\r\n"

    async def send(self, method: str, url: str, headers: list[tuple[str, str]], body: Body, *,
                   connect: float, read: float, total: float) -> _Response:
        origin, target = self._split(url)
        pool = self._pool(origin)
        head = self._head(method, target, headers, body)
        chunked = body is not None and not isinstance(body, bytes) and not any(
            name == "content-length" for name, _ in headers)
        loop = asyncio.get_running_loop()
        total_deadline = loop.time() + total
        started = time.monotonic()
        replayable = body is None or isinstance(body, bytes)
        for attempt in (0, 1):
            conn = await pool.acquire(max(0.0, min(connect, total - (time.monotonic()
                                                                       - started))))
            try:
                await conn.exchange(head, body, head_only=method == "HEAD", read=read,
                                    total_deadline=total_deadline, chunked=chunked)
            except UpstreamError as exc:
                reused, silent = conn.used, not conn.received_any
                conn.finished()
                pool.discard(conn)
                # A keep-alive connection the backend closed just as it was reused: the
                # request is sent again once, on a new connection, when it can be.
                if attempt == 0 and reused and silent and replayable and \
                        not isinstance(exc, ReadTimedOut):
                    continue
                raise
            except BaseException:
                conn.finished()
                pool.discard(conn)
                raise
            return _Response(conn)
        raise Broken("unreachable")  # pragma: no cover

    async def probe(self, url: str, host: str, limit_s: float) -> bool:
        try:
            response = await self.send("GET", url, [("host", host)], None, connect=limit_s,
                                       read=limit_s, total=limit_s)
        except UpstreamError:
            return False
        try:
            size = 0
            while size <= 64 * 1024:
                chunk = await response.read_chunk()
                if not chunk:
                    break
                size += len(chunk)
        except UpstreamError:
            response.close()
            return 200 <= response.status < 400
        response.release()
        return 200 <= response.status < 400

