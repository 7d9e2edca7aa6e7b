import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from tenants import services
from tenants.events import current_generation
from tenants.watch import GenerationWatcher

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def close_sync_thread_connections():
    yield
    # asgiref runs thread-sensitive calls in its own thread: close that thread's connections
    # so the test database can be dropped.
    await sync_to_async(connections.close_all)()


async def test_a_committed_change_is_seen_within_a_second(actor):
    watcher = GenerationWatcher(interval=0.2)
    seen = await sync_to_async(current_generation)()
    waiter = asyncio.ensure_future(watcher.wait_for_change(seen))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    started = time.monotonic()
    await sync_to_async(services.create_tenant)(actor=actor, slug="acme", name="Acme",
                                                domains=["a.example.com"])
    generation = await asyncio.wait_for(waiter, timeout=2)
    assert time.monotonic() - started < 1.0
    assert generation == seen + 1
    assert watcher.reachable
    await watcher.close()


async def test_an_unreachable_database_is_reported_not_raised(monkeypatch):
    def broken():
        raise OSError("connection refused")

    monkeypatch.setattr("tenants.watch.read_generation", broken)
    watcher = GenerationWatcher(interval=0.05)
    assert await watcher.read() is None
    assert not watcher.reachable and "connection refused" in watcher.last_error
    monkeypatch.undo()
    assert await watcher.read() is not None
    assert watcher.reachable
    await watcher.close()
