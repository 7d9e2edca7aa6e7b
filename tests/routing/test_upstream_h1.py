"""The lean upstream client (routing.upstream_h1) against real loopback servers whose bytes the
test writes: the Transport contract, framing, timeouts, the pool."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from routing.conf import get_conf
from routing.upstream import Broken, ConnectFailed, ConnectTimedOut, ReadTimedOut
from routing.upstream_h1 import H1Transport
from tests.e2e.backends import free_port


class Scripted:
    """A server that records each request head and answers with the next canned bytes (a
    callable gets the stream writer instead)."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def _serve(self, reader, writer):
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = b""
                lowered = head.lower()
                if b"content-length:" in lowered:
                    length = int(lowered.split(b"content-length:")[1].split(b"\r\n")[0])
                    body = await reader.readexactly(length)
                elif b"transfer-encoding: chunked" in lowered:
                    body = await reader.readuntil(b"0\r\n\r\n")
                self.requests.append(head + body)
                answer = self.answers.pop(0)
                if callable(answer):
                    await answer(writer)
                    return
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def client(**overrides) -> H1Transport:
    return H1Transport(dataclasses.replace(get_conf(), **overrides))


async def fetch(transport, url, method="GET", headers=(("host", "b"),), body=None, *,
                connect=2.0, read=2.0, total=5.0):
    response = await transport.send(method, url, list(headers), body, connect=connect,
                                    read=read, total=total)
    parts = []
    while chunk := await response.read_chunk():
        parts.append(chunk)
    response.release()
    return response, b"".join(parts)


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\nX-A: 2\r\n\r\nok"


async def test_keep_alive_raw_target_and_raw_headers():
    async with Scripted(OK, OK) as server:
        transport = client()
        response, body = await fetch(transport, server.url + "/a%2Fb;p?q=%20&x",
                                     headers=[("host", "b"), ("x-utf8", "caf\xc3\xa9")])
        assert (response.status, body) == (200, b"ok")
        assert response.raw_headers == ((b"Content-Length", b"2"), (b"X-A", b"1"),
                                        (b"X-A", b"2"))
        await fetch(transport, server.url + "/again")
        assert server.connections == 1  # reused
        first = server.requests[0]
        assert first.startswith(b"GET /a%2Fb;p?q=%20&x HTTP/1.1\r\nhost: b\r\n")
        assert b"x-utf8: caf\xc3\xa9\r\n" in first  # the client's bytes, as sent
        assert b"content-length" not in first.lower() and b"user-agent" not in first.lower()
        await transport.close()


async def test_bodies_upwards_have_the_framing_aiohttp_gave_them():
    async with Scripted(OK, OK, OK) as server:
        transport = client()
        await fetch(transport, server.url + "/", method="POST")
        await fetch(transport, server.url + "/", method="PUT", body=b"abc")

        async def stream():
            yield b"12"
            yield b"345"

        await fetch(transport, server.url + "/", method="POST", body=stream())
        assert b"Content-Length: 0\r\n" in server.requests[0]
        assert server.requests[1].endswith(b"Content-Length: 3\r\n\r\nabc")
        assert server.requests[2].endswith(b"Transfer-Encoding: chunked\r\n\r\n"
                                           b"2\r\n12\r\n3\r\n345\r\n0\r\n\r\n")
        await transport.close()


async def test_head_interim_answers_and_bodies_read_until_close():
    async with Scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK,
                        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end") as server:
        transport = client()
        response, body = await fetch(transport, server.url + "/", method="HEAD")
        assert (response.status, body) == (200, b"")
        response, body = await fetch(transport, server.url + "/")
        assert (response.status, body) == (200, b"ok")
        assert (b"Link", b"</a>") not in response.raw_headers

        async def close_after(writer):
            writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
            await writer.drain()

        server.answers[0] = close_after
        response, body = await fetch(transport, server.url + "/")
        assert body == b"until the end"
        await transport.close()


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX: a\x01b\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX: " + b"a" * 9000 + b"\r\nContent-Length: 2\r\n\r\nok",
    b"no status line\r\n\r\n",
])
async def test_unframeable_answers_are_broken(answer):
    async with Scripted(answer) as server:
        transport = client()
        with pytest.raises(Broken):
            await fetch(transport, server.url + "/")
        await transport.close()


async def test_a_body_broken_after_buffered_bytes_passes_none_of_them():
    async with Scripted(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"1\r\nok\r\n0\r\n\r\n") as server:
        transport = client()
        response = await transport.send("GET", server.url + "/", [("host", "b")], None,
                                        connect=1, read=1, total=2)
        await asyncio.sleep(0.05)
        assert response.ready()
        with pytest.raises(Broken):
            await response.read_chunk()
        response.close()
        await transport.close()


async def test_timeouts_read_and_total():
    async def silent(writer):
        await asyncio.sleep(3)

    async def drip(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(30):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.1)

    async with Scripted(silent, drip) as server:
        transport = client()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ReadTimedOut):
            await fetch(transport, server.url + "/", read=0.3, total=5)
        assert 0.25 < loop.time() - started < 1.5
        started = loop.time()
        with pytest.raises(ReadTimedOut):  # bytes keep coming, but the total deadline passes
            await fetch(transport, server.url + "/", read=0.5, total=0.8)
        assert 0.7 < loop.time() - started < 2
        await transport.close()


async def test_refused_and_pool_exhaustion():
    transport = client(upstream_pool_per_backend=1)
    with pytest.raises(ConnectFailed):
        await fetch(transport, f"http://127.0.0.1:{free_port()}/")
    async with Scripted(OK) as server:
        held = await transport.send("GET", server.url + "/", [("host", "b")], None,
                                    connect=1, read=1, total=2)
        with pytest.raises(ConnectTimedOut):  # the only connection is in use
            await fetch(transport, server.url + "/", connect=0.2)
        held.close()
    await transport.close()


async def test_a_keep_alive_connection_closed_by_the_backend_is_retried_once():
    async def close_now(writer):
        writer.close()

    async with Scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", close_now,
                        OK) as server:
        transport = client()
        await fetch(transport, server.url + "/")
        # The backend closes the reused connection without an answer: one more try, on a
        # new connection (a GET without a body can be sent again).
        response, body = await fetch(transport, server.url + "/")
        assert body == b"ok" and server.connections == 2
        await transport.close()
