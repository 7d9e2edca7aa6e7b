"""The daphne-specific hooks: found through send wrappers, and a safe fallback elsewhere."""

from functools import partial

import pytest

from routing import respond


class Transport:
    def __init__(self, queued=0):
        self.dataBuffer = b"x" * queued
        self.offset = 0
        self._tempDataLen = 0
        self.aborted = False

    def abortConnection(self):
        self.aborted = True


class Channel:
    def __init__(self, transport):
        self.transport = transport


class DaphneRequest:
    """The attributes of daphne's WebRequest the hooks use."""

    def __init__(self, queued=0):
        self.channel = Channel(Transport(queued))
        self.finished = False


async def _handle_reply(protocol, message):
    pass


def daphne_send(request):
    return partial(_handle_reply, request)


def wrapped(send):
    async def send_closing(message):  # like chistone_site.workers.worker.InflightCounter
        await send(message)

    return send_closing


@pytest.mark.parametrize("wrap", [lambda s: s, wrapped, lambda s: wrapped(wrapped(s))])
def test_abort_reaches_daphnes_transport_through_wrappers(wrap):
    request = DaphneRequest()
    respond.abort(wrap(daphne_send(request)))
    assert request.channel.transport.aborted


def test_abort_elsewhere_raises_for_the_server_to_close():
    async def plain_send(message):
        pass

    with pytest.raises(respond.ResponseAborted):
        respond.abort(plain_send)


async def test_wait_writable_waits_while_the_client_is_slow():
    import asyncio

    request = DaphneRequest(queued=1024 * 1024)
    send = wrapped(daphne_send(request))
    waiter = asyncio.ensure_future(respond.wait_writable(send, high_water=256 * 1024))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    request.channel.transport.dataBuffer = b""
    await asyncio.wait_for(waiter, 1)
