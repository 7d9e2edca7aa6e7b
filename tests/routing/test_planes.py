"""The plane router in-process: ports, health endpoints, websocket refusal, lifespan."""

import asyncio
import gc

from chistone_site.planes import YOUNG_GC_THRESHOLD, DataPlane, PlaneRouter, settle_heap
from luascripts.engine.types import Outcome, RespondAction
from routing.snapshot import SnapshotHolder
from tests.routing.asgi import call, http_scope
from tests.routing.fakes import FakeScript, FakeTransport, snapshot, tenant


class Recorder:
    def __init__(self):
        self.scopes = []

    async def __call__(self, scope, receive, send):
        self.scopes.append(scope)
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"django"})


def router(loaded=True):
    holder = SnapshotHolder()
    if loaded:
        script = FakeScript(lambda req: Outcome(RespondAction(200, b"tenant")))
        holder.swap(snapshot(tenant("acme", domains=("acme.example.com",), script=script)))
    plane = DataPlane(holder=holder, transport=FakeTransport(), watch_generation=False)
    plane.started = True  # nothing to start in-process
    django = Recorder()
    return PlaneRouter(control_app=django, data_plane=plane, control_port=8001), django


async def test_control_port_goes_to_django_everything_else_to_the_gateway():
    app, django = router()
    ctl = await call(app, http_scope("/admin/", server=("127.0.0.1", 8001)))
    assert (ctl.status, ctl.body) == (299, b"django")
    for path in ("/admin/", "/api/v1/tenants", "/"):
        data = await call(app, http_scope(path, server=("127.0.0.1", 8000)))
        assert data.body != b"django"
    data = await call(app, http_scope("/admin/", host="localhost", server=("127.0.0.1", 8000)))
    assert data.status == 404 and data.json()["error"] == "no_tenant"
    missing = dict(http_scope("/"))
    missing["server"] = None
    assert (await call(app, missing)).body == b"tenant"
    assert len(django.scopes) == 1


async def test_health_endpoints_on_both_planes():
    app, django = router()
    for port in (8000, 8001):
        assert (await call(app, http_scope("/healthz", server=("h", port)))).status == 200
        ready = await call(app, http_scope("/readyz", server=("h", port)))
        assert ready.status == 200 and ready.json()["generation"] == 1
    app, _ = router(loaded=False)
    assert (await call(app, http_scope("/readyz"))).status == 503
    assert django.scopes == []


async def test_websockets_go_to_the_data_plane_and_are_refused_on_the_control_plane():
    app, _ = router()
    seen = []

    async def websockets(scope, receive, send):
        seen.append(scope["path"])
        await send({"type": "websocket.close", "code": 1000})

    app.data_plane.websockets = websockets
    for port, path in ((8001, "/control"), (8000, "/data")):
        sent = []
        inbox = asyncio.Queue()
        inbox.put_nowait({"type": "websocket.connect"})

        async def send(message, sent=sent):
            sent.append(message)

        await app({"type": "websocket", "path": path, "server": ("h", port)}, inbox.get, send)
        assert sent == [{"type": "websocket.close", "code": 1008 if port == 8001 else 1000}]
    assert seen == ["/data"]


async def test_lifespan_starts_and_stops_the_data_plane():
    app, _ = router()
    plane = app.data_plane
    plane.started = False
    calls = []

    async def start():
        calls.append("start")

    async def stop():
        calls.append("stop")

    plane.start, plane.stop = start, stop
    inbox = asyncio.Queue()
    for kind in ("lifespan.startup", "lifespan.shutdown"):
        inbox.put_nowait({"type": kind})
    sent = []

    async def send(message):
        sent.append(message["type"])

    await app({"type": "lifespan"}, inbox.get, send)
    assert calls == ["start", "stop"]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_an_active_check_says_why_it_failed():
    from routing.upstream import ConnectFailed, ReadTimedOut
    from tests.routing.fakes import FakeResponse, backend

    checked = backend("api", health="/health")
    transport = FakeTransport(FakeResponse(status=503), ConnectFailed("refused"),
                              ReadTimedOut("slow"), FakeResponse(status=204))
    plane = DataPlane(holder=SnapshotHolder(), transport=transport, watch_generation=False)
    results = [await plane._probe(checked, 2.0) for _ in range(4)]
    assert [bool(r) for r in results] == [False, False, False, True]
    assert results[0].reason == "answered HTTP 503 (a check passes on 2xx or 3xx)"
    assert results[1].reason == "connection refused or unreachable (refused)"
    assert results[2].reason == "no answer within 2 s"
    assert transport.calls[0].method == "GET" and transport.calls[0].url.endswith("/health")


async def test_a_data_plane_that_fails_before_the_gateway_answers_json_500(caplog):
    app, _ = router()
    app.data_plane.started = False

    async def broken_start():
        raise OSError("the first snapshot could not be built")

    app.data_plane.start = broken_start
    result = await call(app, http_scope("/"))
    assert result.status == 500 and result.header("content-type") == "application/json"
    body = result.json()
    assert body["error"] == "internal_error"
    assert body["request_id"] == result.header("x-request-id") and len(body["request_id"]) == 32
    assert "snapshot" not in result.body.decode()
    assert any(body["request_id"] in r.getMessage() for r in caplog.records)


def test_settle_heap_freezes_what_is_loaded_and_collects_young_objects_seldom():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        settle_heap()
        assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, 10, 10)
        assert gc.get_freeze_count() > 0  # loaded before the start: out of every scan
    finally:
        gc.set_threshold(*before)
