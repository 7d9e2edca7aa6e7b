"""A bare passthrough proxy: raw ASGI, the aiohttp client, no routing, no Django.

Scenario 4 of the benchmark: the floor our design adds to. Every request is forwarded as is to
BENCH_UPSTREAM (default http://127.0.0.1:8080) and the whole response is sent back.

    BENCH_UPSTREAM=http://127.0.0.1:8080 daphne -b 127.0.0.1 -p 9000 bench.passthrough:application

The helpers (`Upstream`, `read_body`, `forward`) are reused by the two-service anchor.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Connection-level headers are not forwarded; content-length is recomputed.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
})
HOP_BY_HOP_BYTES = frozenset(name.encode("latin-1") for name in HOP_BY_HOP)


class Upstream:
    """One aiohttp session per process, created on first use inside the server's event loop."""

    def __init__(self, *, limit: int = 0, timeout: float = 30.0) -> None:
        self._limit = limit
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=5.0)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=60),
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def request_headers(scope: Scope) -> CIMultiDict[str]:
    return CIMultiDict(
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in scope["headers"]
        if name.lower() not in HOP_BY_HOP_BYTES
    )


def path_qs(scope: Scope) -> str:
    path = scope.get("raw_path") or scope["path"].encode("utf-8")
    query = scope.get("query_string", b"")
    return (path + b"?" + query if query else path).decode("latin-1")


async def respond(send: Send, status: int, body: bytes,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = list(headers or [(b"content-type", b"text/plain; charset=utf-8")])
    headers.append((b"content-length", str(len(body)).encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def forward(session: aiohttp.ClientSession, send: Send, *, method: str, url: str,
                  headers: CIMultiDict[str], body: bytes) -> None:
    """Send one request upstream and its whole response downstream; 502 if upstream fails."""
    try:
        async with session.request(method, URL(url, encoded=True), headers=headers,
                                   data=body or None, allow_redirects=False) as upstream:
            payload = await upstream.read()
            out = [(name, value) for name, value in upstream.raw_headers
                   if name.lower() not in HOP_BY_HOP_BYTES]
            status = upstream.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        await respond(send, 502, f"bad gateway: {type(exc).__name__}\n".encode())
        return
    await respond(send, status, payload, out)


async def lifespan(receive: Receive, send: Send, upstream: Upstream) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await upstream.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


class Passthrough:
    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.upstream = Upstream()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send, self.upstream)
            return
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        await forward(self.upstream.session(), send, method=scope["method"],
                      url=self.upstream_url + path_qs(scope),
                      headers=request_headers(scope), body=body)


application = Passthrough(os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8080"))
