"""chistone_site.servers.ServerAdapter in-process: what it does when it finds no server."""

from __future__ import annotations

import logging
from functools import partial

import pytest

from chistone_site.servers import ServerAdapter, adapt, daphne, uvicorn
from routing.respond import CONNECTION_EXTENSION, server_connection
from tests.routing.asgi import http_scope


class Recorder:
    def __init__(self):
        self.scopes = []

    async def __call__(self, scope, receive, send):
        self.scopes.append(scope)


async def plain_send(message):
    pass


async def receive():
    return {"type": "http.request", "body": b""}


async def test_an_expected_server_that_cannot_be_found_is_an_error_not_silence(caplog):
    inner = Recorder()
    app = adapt(inner, server="daphne")
    with caplog.at_level(logging.INFO, logger="chistone.servers"):
        await app(http_scope("/"), receive, plain_send)
        await app(http_scope("/"), receive, plain_send)
    assert all(server_connection(scope) is None for scope in inner.scopes)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # once per process, not per request
    assert "daphne adapter cannot reach" in errors[0].getMessage()
    assert "without back-pressure" in errors[0].getMessage()


async def test_detection_without_a_known_server_leaves_plain_asgi(caplog):
    inner = Recorder()
    app = adapt(inner)
    with caplog.at_level(logging.INFO, logger="chistone.servers"):
        await app(http_scope("/"), receive, plain_send)
    assert server_connection(inner.scopes[0]) is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_other_scopes_and_existing_extensions():
    inner = Recorder()
    app = adapt(inner, server="uvicorn")
    lifespan = {"type": "lifespan"}
    await app(lifespan, receive, plain_send)
    assert inner.scopes[0] is lifespan and "extensions" not in lifespan
    scope = http_scope("/")
    scope["extensions"] = {"http.response.trailers": {}}
    await app(scope, receive, plain_send)
    assert "http.response.trailers" in scope["extensions"]
    assert CONNECTION_EXTENSION not in scope["extensions"]


def test_an_unknown_server_name_is_refused():
    with pytest.raises(ValueError, match="unknown server"):
        ServerAdapter(Recorder(), server="gunicorn")


async def _reply(protocol, message):
    pass


@pytest.mark.parametrize("send", [plain_send, partial(_reply, object()), partial(_reply),
                                  print, Recorder().__call__])
def test_connection_factories_ignore_what_is_not_their_servers_send(send):
    assert daphne.connection_for(send) is None
    assert uvicorn.connection_for(send) is None
