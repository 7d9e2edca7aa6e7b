"""Shadow runs in the gateway: sampled requests are decided again by both versions after the
client has its answer, without effects; mismatches are counted per route; bounded."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from luascripts.engine import load_script
from routing.gateway import Gateway
from routing.shadow import ShadowEntry, decision
from routing.snapshot import SnapshotHolder
from tests.routing.asgi import call, http_scope
from tests.routing.fakes import FakeResponse, FakeTransport, backend, snapshot, tenant

ACTIVE = """
chi.get("/v1/{rest}", function(req) return proxy("a") end)
chi.get("/v2/{rest}", function(req) return proxy("a", {path = "/v2/" .. req.params.rest}) end)
chi.get("/hi", function(req) return respond(200, "hi") end)
"""
CANDIDATE = """
chi.get("/v1/{rest}", function(req) return proxy("a") end)
chi.get("/v2/{rest}", function(req)
  local res, err = http.request("b", {path = "/check"})  -- answered with nothing here
  return proxy("b", {path = "/v2/" .. req.params.rest})
end)
chi.get("/hi", function(req) return respond(200, "hi") end)
"""
BACKENDS = ["a", "b"]


def shop(rate: float = 1.0, candidate: str = CANDIDATE):
    a, b = backend("a", tenant="shop", port=9101), backend("b", tenant="shop", port=9102)
    entry = tenant("shop", backends=[a, b], domains=("shop.test",),
                   script=load_script(ACTIVE, tenant="shop", backend_names=BACKENDS))
    shadow = ShadowEntry(id=3, script=load_script(candidate, tenant="shop",
                                                  backend_names=BACKENDS),
                         version_id=9, version_number=2, rate=rate)
    return replace(entry, shadow=shadow)


def gateway_for(entry, transport):
    holder = SnapshotHolder()
    holder.swap(snapshot(entry))
    return Gateway(holder=holder, transport=transport)


async def settle(gateway: Gateway) -> None:
    for _ in range(50):
        if not gateway.shadow.queue and not gateway.shadow.scheduled:
            return
        await asyncio.sleep(0)


async def test_mismatches_are_counted_per_route_and_clients_get_the_active_answer():
    transport = FakeTransport(*[FakeResponse(200, chunks=[b"from a"]) for _ in range(6)])
    gateway = gateway_for(shop(), transport)
    for path in ("/v1/x", "/v2/x", "/v2/y", "/v1/y", "/hi"):
        result = await call(gateway, http_scope(path, host="shop.test"))
        assert result.status == 200
    await settle(gateway)
    # Only the active version's backend was called: the shadow's proxy and http.request
    # to b never left the process.
    assert [c.url for c in transport.calls] == [
        "http://127.0.0.1:9101/v1/x", "http://127.0.0.1:9101/v2/x",
        "http://127.0.0.1:9101/v2/y", "http://127.0.0.1:9101/v1/y"]
    counts = gateway.shadow.take()[3]
    assert counts.routes == {"/v1/{rest}": [2, 0], "/v2/{rest}": [2, 2], "/hi": [1, 0]}
    sample = counts.samples[0]
    assert sample["path"] == "/v2/x" and sample["route"] == "/v2/{rest}"
    assert sample["active"] == {"kind": "proxy", "backend": "a", "path": "/v2/x", "query": "",
                                "status": None, "error": None}
    assert sample["shadow"]["backend"] == "b"
    assert gateway.shadow.totals == {"shop": [3, 2, 0]}


async def test_the_shadow_runs_only_after_the_answer_was_sent():
    gateway = gateway_for(shop(), FakeTransport())
    seen_when_answered = []

    async def app(scope, receive, send):
        async def watching(message):
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                seen_when_answered.append(gateway.shadow.ran)
        await gateway(scope, receive, watching)

    await call(app, http_scope("/hi", host="shop.test"))
    assert seen_when_answered == [0]
    await settle(gateway)
    assert gateway.shadow.ran == 1


async def test_sampling_and_bounds():
    # rate 0.5 with a fixed draw sequence: every other request is shadowed.
    draws = iter([0.1, 0.9] * 10)
    gateway = gateway_for(shop(rate=0.5), FakeTransport())
    gateway.shadow.rng = lambda: next(draws)
    for _ in range(6):
        await call(gateway, http_scope("/hi", host="shop.test"))
    await settle(gateway)
    assert gateway.shadow.ran == 3
    # A full queue drops (and counts) what it cannot take.
    full = gateway_for(shop(), FakeTransport())
    full.shadow.max_queue = 0
    await call(full, http_scope("/hi", host="shop.test"))
    assert full.shadow.take()[3].dropped == 1
    # A spent CPU budget too.
    broke = gateway_for(shop(), FakeTransport())
    broke.shadow.cpu_share = 0.0
    broke.shadow.budget = 0.0
    await call(broke, http_scope("/hi", host="shop.test"))
    await settle(broke)
    assert broke.shadow.ran == 0 and broke.shadow.take()[3].dropped == 1


async def test_tenants_without_a_shadow_queue_nothing():
    entry = replace(shop(), shadow=None)
    gateway = gateway_for(entry, FakeTransport())
    await call(gateway, http_scope("/hi", host="shop.test"))
    assert not gateway.shadow.queue and gateway.shadow.take() == {}


def test_decisions_of_errors_and_rejections():
    entry = shop()
    failing = load_script('chi.get("/x", function(req) error("boom") end)\n'
                          'chi.get("/no", function(req) return reject(403, "no") end)\n',
                          tenant="shop", backend_names=BACKENDS)
    from tests.routing.test_rollout import request

    def decide_for(path):
        req = replace(request(), raw_path=path)
        return decision(failing, entry, req, path, b"", lambda b: True)

    assert decide_for("/x")[0]["kind"] == "error" and decide_for("/x")[0]["status"] == 500
    assert decide_for("/no") == ({"kind": "reject", "backend": None, "path": None,
                                  "query": None, "status": 403, "error": None}, "/no")
    assert decide_for("/missing")[0]["status"] == 404

