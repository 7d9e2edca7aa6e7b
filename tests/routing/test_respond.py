"""routing.respond: the server adapter's extension, and the last-resort 500."""

import asyncio
import json

import pytest

from routing import respond
from tests.routing.asgi import http_scope


class Connection:
    """A stand-in for a server adapter's connection (chistone_site/servers)."""

    def __init__(self):
        self.aborted = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def writable(self):
        await self.gate.wait()

    async def abort(self):
        self.aborted = True


def with_connection(connection):
    scope = http_scope("/")
    scope["extensions"] = {respond.CONNECTION_EXTENSION: connection}
    return scope


def test_the_connection_comes_from_the_scope_extension():
    connection = Connection()
    assert respond.server_connection(with_connection(connection)) is connection
    assert respond.server_connection(http_scope("/")) is None
    scope = http_scope("/")
    scope["extensions"] = {"http.response.trailers": {}}
    assert respond.server_connection(scope) is None


async def test_wait_writable_waits_for_the_connection():
    connection = Connection()
    connection.gate.clear()
    waiter = asyncio.ensure_future(respond.wait_writable(connection))
    await asyncio.sleep(0.02)
    assert not waiter.done()
    connection.gate.set()
    await asyncio.wait_for(waiter, 1)
    await asyncio.wait_for(respond.wait_writable(None), 1)  # plain ASGI: nothing to wait for


async def test_abort_uses_the_connection_or_raises_for_the_server():
    connection = Connection()
    await respond.abort(connection)
    assert connection.aborted
    with pytest.raises(respond.ResponseAborted):
        await respond.abort(None)


async def test_internal_error_is_a_json_500_with_the_request_id():
    sent = []

    async def send(message):
        sent.append(message)

    size = await respond.send_internal_error(http_scope("/"), send, "rid-9")
    start, body = sent
    assert start["status"] == 500
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"x-request-id"] == b"rid-9"
    payload = json.loads(body["body"])
    assert payload == {"error": "internal_error", "detail": respond.INTERNAL_ERROR_DETAIL,
                       "request_id": "rid-9"}
    assert size == len(body["body"])


async def test_internal_error_after_the_start_aborts_instead():
    async def started_send(message):  # what daphne and uvicorn do with a second start
        raise RuntimeError("response already started")

    connection = Connection()
    assert await respond.send_internal_error(with_connection(connection), started_send,
                                             "rid") is None
    assert connection.aborted
    with pytest.raises(respond.ResponseAborted):
        await respond.send_internal_error(http_scope("/"), started_send, "rid")
