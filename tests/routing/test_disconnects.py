"""routing.disconnects: one sweep starts a disconnect listener for each exchange that lasts."""

import asyncio

from routing.disconnects import DisconnectWatch


class Client:
    """An ASGI `receive` that counts its calls and says `http.disconnect` when told to."""

    def __init__(self):
        self.calls = 0
        self.gone = asyncio.Event()

    async def receive(self):
        self.calls += 1
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def exchange(seconds):
    await asyncio.sleep(seconds)
    return "answered"


async def registered(watch, seconds):
    """An exchange lasting `seconds`, running and registered with `watch`, and its client."""
    client = Client()
    task = asyncio.ensure_future(exchange(seconds))
    await asyncio.sleep(0)
    return client, task, watch.watch(task, client.receive)


async def test_a_quick_exchange_never_reads_from_the_client():
    watch = DisconnectWatch(after=0.05)
    client, task, watched = await registered(watch, 0.001)
    assert await task == "answered"
    watch.done(watched)
    await asyncio.sleep(0.12)  # two sweeps' time
    assert client.calls == 0
    assert watched.listener is None
    assert watch.waiting == 0
    assert watch._sweep_handle is None  # nothing registered: no timer left running


async def test_a_client_leaving_a_long_exchange_cancels_it():
    watch = DisconnectWatch(after=0.05)
    client, task, watched = await registered(watch, 10)
    await asyncio.sleep(0.12)  # past the first sweep after `after`: the listener reads
    assert client.calls == 1
    assert not task.done()
    client.gone.set()
    await asyncio.sleep(0.01)
    assert watched.disconnected
    assert task.cancelled()
    watch.done(watched)


async def test_the_listener_is_cancelled_when_the_exchange_ends():
    watch = DisconnectWatch(after=0.02)
    client, task, watched = await registered(watch, 0.06)
    assert await task == "answered"
    assert watched.listener is not None and client.calls == 1
    watch.done(watched)
    await asyncio.sleep(0)
    assert watched.listener.cancelled()
    assert not watched.disconnected


async def test_a_sweep_starts_listeners_only_for_exchanges_registered_long_enough():
    watch = DisconnectWatch(after=0.05)
    _, old, old_watched = await registered(watch, 10)
    await asyncio.sleep(0.03)
    _, young, young_watched = await registered(watch, 10)
    await asyncio.sleep(0.03)  # the first sweep (at 0.05 s) found only the old one due
    assert old_watched.listener is not None
    assert young_watched.listener is None
    assert watch.waiting == 1
    await asyncio.sleep(0.06)  # the next sweep takes the young one
    assert young_watched.listener is not None
    for task, watched in ((old, old_watched), (young, young_watched)):
        task.cancel()
        watch.done(watched)
    await asyncio.sleep(0)
    assert watch.waiting == 0
