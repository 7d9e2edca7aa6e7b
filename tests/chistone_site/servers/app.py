"""A small ASGI application behind the server adapters, served by real daphne and uvicorn
processes in the adapter tests. It reports what the adapter gave it and uses it the way the
gateway does (routing.respond):

- `/info`: which connection object the scope's extension holds (or null);
- `/stream?n=N`: N bytes in 64 KiB chunks, waiting for `writable()` after each, as the
  gateway relays a body; `/progress` tells how many bytes the last stream has handed over;
- `/abort`: the status and 1000 of 1 000 000 promised bytes, then `abort()`.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs

from chistone_site.servers import adapt
from routing import respond

CHUNK = 64 * 1024
progress = {"sent": 0, "done": False}


async def _json(send, payload) -> None:
    body = json.dumps(payload).encode()
    await respond.send_response(send, 200, [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode())], body)


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    connection = respond.server_connection(scope)
    path = scope["path"]
    if path == "/info":
        await _json(send, {"connection": type(connection).__name__ if connection else None})
    elif path == "/progress":
        await _json(send, progress)
    elif path == "/stream":
        size = int(parse_qs(scope["query_string"].decode())["n"][0])
        progress.update(sent=0, done=False)
        await respond.send_response_start(send, 200, [
            (b"content-length", str(size).encode())])
        block = b"x" * CHUNK
        while progress["sent"] < size:
            piece = block[:size - progress["sent"]]
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            progress["sent"] += len(piece)
            await respond.wait_writable(connection)
        await send({"type": "http.response.body", "body": b""})
        progress["done"] = True
    elif path == "/abort":
        await respond.send_response_start(send, 200, [(b"content-length", b"1000000")])
        await send({"type": "http.response.body", "body": b"y" * 1000, "more_body": True})
        await asyncio.sleep(0.1)  # the bytes so far reach the client, as in a real relay
        await respond.abort(connection)
    else:
        await _json(send, {"path": path})


detecting = adapt(app)
daphne_app = adapt(app, server="daphne")
uvicorn_app = adapt(app, server="uvicorn")
