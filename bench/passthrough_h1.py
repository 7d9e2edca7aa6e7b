"""The bare passthrough of scenario 4 on chistone's own upstream client (routing.upstream_h1)
instead of aiohttp: the anchor for a fair comparison with chistone on the same server and the
same client (scenarios 11 and 12). Everything else is scenario 4's: the whole request body is
read, the request forwarded as is (hop-by-hop headers dropped), the whole response sent back.

    BENCH_UPSTREAM=http://127.0.0.1:8080 uvicorn --loop uvloop --http httptools \
        bench.passthrough_h1:application
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.passthrough import (
    HOP_BY_HOP_BYTES,
    Receive,
    Scope,
    Send,
    path_qs,
    read_body,
    respond,
)
from routing.upstream import UpstreamError
from routing.upstream_h1 import H1Transport

# The client's settings as chistone's defaults have them (routing.conf), without Django.
CONF = SimpleNamespace(upstream_pool_per_backend=256, upstream_pool_size=1000,
                       upstream_keepalive_s=30.0, chunk_bytes=64 * 1024)


class PassthroughH1:
    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.host = self.upstream_url.split("://", 1)[1]
        self.transport = H1Transport(CONF)  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.transport.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        headers = [(name.decode("latin-1"), value.decode("latin-1"))
                   for name, value in scope["headers"] if name.lower() not in HOP_BY_HOP_BYTES]
        headers.append(("host", self.host))
        try:
            response = await self.transport.send(
                scope["method"], self.upstream_url + path_qs(scope), headers, body or None,
                connect=5.0, read=30.0, total=30.0)
            parts = []
            while chunk := await response.read_chunk():
                parts.append(chunk)
            response.release()
        except UpstreamError as exc:
            await respond(send, 502, f"bad gateway: {type(exc).__name__}\n".encode())
            return
        out = [(name, value) for name, value in response.raw_headers
               if name.lower() not in HOP_BY_HOP_BYTES]
        await respond(send, response.status, b"".join(parts), out)


application = PassthroughH1(os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8080"))
