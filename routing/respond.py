"""Sending answers over ASGI, and the two things ASGI cannot say: "abort" and "wait".

- `abort(send)`: a backend broke mid-body after the status went out. The answer must not end
  cleanly (the client would take a truncated body for a whole one), so the connection is
  dropped. Under daphne the transport is reached through `send` (a partial bound to the
  request) and aborted; elsewhere `ResponseAborted` is raised, which uvicorn and other
  servers turn into a closed connection.
- `wait_writable(send)`: daphne writes every body message straight into Twisted's buffer
  without back-pressure; before handing over the next chunk the gateway waits while more than
  `high_water` bytes are still queued for a slow client, so a large response never piles up in
  memory.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from routing.errors import GatewayError, error_response
from routing.types import Send


class ResponseAborted(Exception):
    """Raised to make an ASGI server drop a connection whose response cannot be completed."""


def _daphne_request(send: Any, depth: int = 0) -> Any:
    """daphne's request object behind `send`, looking through wrappers that other ASGI
    middleware put around it (`__wrapped__`, or a closure over the inner `send`)."""
    if isinstance(send, partial) and send.args:
        request = send.args[0]
        if hasattr(request, "channel") and hasattr(request, "finished"):
            return request
        return None
    if depth >= 4:
        return None
    inner = getattr(send, "__wrapped__", None)
    if inner is not None:
        return _daphne_request(inner, depth + 1)
    for cell in getattr(send, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if callable(value) and value is not send:
            found = _daphne_request(value, depth + 1)
            if found is not None:
                return found
    return None


def _queued_bytes(request: Any) -> int:
    channel = getattr(request, "channel", None)
    transport = getattr(channel, "transport", None)
    if transport is None:
        return 0
    buffered = getattr(transport, "dataBuffer", b"")
    offset = getattr(transport, "offset", 0)
    return len(buffered) - offset + getattr(transport, "_tempDataLen", 0)


async def wait_writable(send: Send, *, high_water: int = 256 * 1024,
                        max_wait: float = 60.0) -> None:
    request = _daphne_request(send)
    if request is None:
        return
    waited = 0.0
    delay = 0.001
    while _queued_bytes(request) > high_water and waited < max_wait:
        if request.finished or request.channel is None:
            return
        await asyncio.sleep(delay)
        waited += delay
        delay = min(delay * 2, 0.05)


def abort(send: Send) -> None:
    request = _daphne_request(send)
    if request is not None:
        channel = request.channel
        transport = getattr(channel, "transport", None)
        if transport is not None:
            transport.abortConnection()
            return
    raise ResponseAborted("upstream broke after the response had started")


async def send_response_start(send: Send, status: int,
                              headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def send_response(send: Send, status: int, headers: list[tuple[bytes, bytes]] | tuple,
                        body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: GatewayError, request_id: str,
                     config: tuple[bytes, bytes] | None = None) -> int:
    status, headers, body = error_response(error, request_id)
    headers.append((b"x-request-id", request_id.encode("latin-1")))
    if config is not None:
        headers.append(config)
    await send_response(send, status, headers, body)
    return len(body)
