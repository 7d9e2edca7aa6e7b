"""Stub effects keep shared state private to one run: a dry run, a script test or a shadow
never reads or writes the tenant's live shared state (the gateway's store)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from luascripts.engine import load_script
from luascripts.engine.effects import SharedOp
from routing.conf import build_conf
from routing.gateway import Gateway
from routing.plan import script_request
from routing.request import parse_scope
from routing.script_run import run_script
from routing.shadow import ShadowEntry
from routing.shared_state import LocalStore
from routing.snapshot import SnapshotHolder
from routing.stubs import StubEffects, run_sync
from tests.routing.asgi import call, http_scope
from tests.routing.fakes import FakeTransport, snapshot, tenant

COUNTER = """
chi.get("/count", function(req)
  local n = shared.incr("hits", 1)
  local ok, info = limit.allow("k", 1, 60)
  return respond(200, n .. " " .. tostring(ok))
end)
"""


def shop(script: str = COUNTER, shadow: str | None = None):
    entry = tenant("shop", domains=("shop.test",),
                   script=load_script(script, tenant="shop", backend_names=["api"]))
    if shadow is not None:
        entry = replace(entry, shadow=ShadowEntry(
            id=1, script=load_script(shadow, tenant="shop", backend_names=["api"]),
            version_id=2, version_number=2, rate=1.0))
    return entry


def gateway_for(entry, store):
    holder = SnapshotHolder()
    holder.swap(snapshot(entry))
    return Gateway(holder=holder, transport=FakeTransport(), shared_state=store)


async def test_the_gateway_keeps_state_between_requests_in_its_store():
    store = LocalStore()
    gateway = gateway_for(shop(), store)
    bodies = [(await call(gateway, http_scope("/count", host="shop.test"))).body
              for _ in range(3)]
    assert bodies == [b"1 true", b"2 false", b"3 false"]
    assert (await store.shared("shop", SharedOp("get", "hits"))).value == 3


def test_each_dry_run_has_a_store_of_its_own():
    entry = shop()
    request = parse_scope(http_scope("/count", host="shop.test"), build_conf({}))
    for _ in range(2):
        effects = StubEffects(tenant=entry, request=request, router_path="/count",
                              limits=entry.script.limits)
        outcome = run_sync(run_script(entry.script, script_request(
            entry, request, "/count", lambda _b: True), effects))
        assert outcome.action.body == b"1 true"


async def test_a_shadow_never_touches_the_live_state():
    store = LocalStore()
    writer = ('chi.get("/count", function(req) shared.set("hits", 1000) '
              'return respond(200, "shadow") end)')
    gateway = gateway_for(shop(shadow=writer), store)
    for _ in range(3):
        await call(gateway, http_scope("/count", host="shop.test"))
    for _ in range(100):
        if gateway.shadow.ran >= 3:
            break
        await asyncio.sleep(0.01)
    assert gateway.shadow.ran >= 1
    assert (await store.shared("shop", SharedOp("get", "hits"))).value == 3
