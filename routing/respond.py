"""Sending answers over ASGI, and the two things plain ASGI cannot say: "abort" and "wait".

- abort: a backend broke mid-body after the status went out. The answer must not end cleanly
  (the client would take a truncated body for a whole one), so the connection is dropped.
- wait: a server that writes body messages into an unbounded buffer (daphne on Twisted) would
  pile a large response up in memory for a slow client; the gateway waits before each chunk
  until the client can take more.

The server adapter (`chistone_site/servers/`, one per ASGI server) offers both through an
extension object in each scope, `scope["extensions"]["chistone.connection"]`, that has the
`ServerConnection` shape below. The data plane depends on that interface and on ASGI alone:
without the extension (another server, an in-process test) the gateway relies on ASGI's own
rules, where `send` returns once the server has taken the message and raising after the
response started makes the server close the connection (`ResponseAborted`).
"""

from __future__ import annotations

from typing import Protocol

from routing.errors import GatewayError, error_response, json_body
from routing.types import Scope, Send

CONNECTION_EXTENSION = "chistone.connection"


class ServerConnection(Protocol):
    """One client connection, as the server adapter exposes it to the data plane."""

    async def writable(self) -> None:
        """Return once the client can take more response bytes (back-pressure)."""
        ...

    async def abort(self) -> None:
        """Drop the connection at once: the client must not see a clean end of the answer."""
        ...


class ResponseAborted(Exception):
    """Raised to make an ASGI server drop a connection whose response cannot be completed."""


def server_connection(scope: Scope) -> ServerConnection | None:
    """The adapter's controls for this request's connection, if the server offers them."""
    extensions = scope.get("extensions")
    return extensions.get(CONNECTION_EXTENSION) if extensions else None


async def wait_writable(connection: ServerConnection | None) -> None:
    if connection is not None:
        await connection.writable()


async def abort(connection: ServerConnection | None) -> None:
    if connection is None:
        raise ResponseAborted("the response cannot be completed")
    await connection.abort()


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


INTERNAL_ERROR_DETAIL = ("The gateway failed while handling this request; see the gateway "
                         "log for this request id.")


def internal_error_response(request_id: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and JSON body of the last-resort 500 (no detail of the failure)."""
    body = json_body("internal_error", INTERNAL_ERROR_DETAIL, request_id)
    return [(b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"x-request-id", request_id.encode("latin-1"))], body


async def send_internal_error(scope: Scope, send: Send, request_id: str,
                              config: tuple[bytes, bytes] | None = None) -> int | None:
    """The last resort after an unexpected exception: a JSON 500 with the request id.

    Returns the body size sent, or None when the response had already started (the server
    refuses a second start): then the connection is dropped instead, so the client cannot
    take what it got for a whole answer.
    """
    headers, body = internal_error_response(request_id)
    if config is not None:
        headers.append(config)
    try:
        await send({"type": "http.response.start", "status": 500, "headers": headers})
    except Exception:  # the response had started: the server refuses another start
        await _abort_quietly(scope)
        return None
    await send({"type": "http.response.body", "body": body})
    return len(body)


async def _abort_quietly(scope: Scope) -> None:
    connection = server_connection(scope)
    if connection is None:
        raise ResponseAborted("the response had started when the gateway failed") from None
    await connection.abort()
