"""The known holes of proxy-security.md that concern the data plane, through the server."""

import pytest

from tests.e2e.rawhttp import exchange, status_of

pytestmark = pytest.mark.e2e


def _status(gateway, request: bytes) -> int:
    return status_of(exchange(gateway.data_port, request))


@pytest.mark.parametrize("request_bytes", [
    b"GET http://evil.example/ HTTP/1.1\r\nHost: routes.test\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: routes.test\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: :99999\r\nConnection: close\r\n\r\n",
    b"get /hello HTTP/1.1\r\nHost: routes.test\r\nConnection: close\r\n\r\n",
    b"GET //evil.example/x HTTP/1.1\r\nHost: routes.test\r\nConnection: close\r\n\r\n",
    b"GET /raw/../admin HTTP/1.1\r\nHost: routes.test\r\nConnection: close\r\n\r\n",
    b"GET /raw/%2e%2e/admin HTTP/1.1\r\nHost: routes.test\r\nConnection: close\r\n\r\n",
    b"GET /raw/%2E%2E/admin HTTP/1.1\r\nHost: routes.test\r\nConnection: close\r\n\r\n",
    b"GET /raw/..%2fadmin HTTP/1.1\r\nHost: routes.test\r\nConnection: close\r\n\r\n",
    b"GET /raw/%2e/x HTTP/1.1\r\nHost: routes.test\r\nConnection: close\r\n\r\n",
])
def test_gateway_refuses_with_400(gateway, farm, request_bytes):
    before = len(farm.backends["users"].seen)
    answer = exchange(gateway.data_port, request_bytes)
    assert status_of(answer) == 400, answer[:300]
    assert b'"error": "bad_request"' in answer
    assert len(farm.backends["users"].seen) == before  # nothing reached a backend


@pytest.mark.parametrize("request_bytes", [
    b"POST / HTTP/1.1\r\nHost: routes.test\r\nContent-Length: 3\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: routes.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: routes.test\r\nContent-Length: +3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: routes.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
    b"0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: routes.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: routes.test\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: routes.test\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n"
    b"0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: routes.test\r\nX-Nul: a\x00b\r\n\r\n",
])
def test_daphne_still_refuses_ambiguous_framing(gateway, farm, request_bytes):
    """Regression guard: these are daphne's (Twisted's) refusals; a later Twisted could change."""
    before = len(farm.backends["users"].seen)
    assert _status(gateway, request_bytes) == 400
    assert len(farm.backends["users"].seen) == before


def test_data_plane_never_reaches_django(gateway, client):
    for path in ("/admin/", "/admin/login/", "/api/v1/", "/api/v1/tenants/"):
        for host in ("localhost", "127.0.0.1", "routes.test"):
            response = client.get(path, headers={"Host": host})
            assert response.status_code in (404, 400), (path, host, response.status_code)
            assert "csrf" not in response.text.lower()
            assert response.headers["content-type"] == "application/json"


def test_control_plane_never_reaches_tenants(gateway, farm):
    import httpx

    before = len(farm.backends["users"].seen)
    with httpx.Client(base_url=gateway.control, trust_env=False, timeout=10) as control:
        response = control.get("/raw/echo", headers={"Host": "routes.test"})
        assert response.status_code in (400, 404)
        assert control.get("/admin/login/", headers={"Host": "localhost"}).status_code == 200
        assert control.get("/healthz").status_code == 200
        assert control.get("/readyz").status_code == 200
    assert len(farm.backends["users"].seen) == before


def test_websocket_upgrades_go_to_the_tenant_and_never_to_the_control_plane(gateway, farm):
    """An upgrade on the data plane is routed (here to a plain HTTP backend, which does not
    upgrade: 502 before the upgrade); the control plane refuses every upgrade (403)."""
    upgrade = (b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    answer = exchange(gateway.data_port,
                      b"GET /raw/ws HTTP/1.1\r\nHost: routes.test\r\n" + upgrade)
    assert status_of(answer) == 502
    assert b'"upgrade_refused"' in answer
    before = len(farm.backends["users"].seen)
    answer = exchange(gateway.control_port,
                      b"GET /raw/ws HTTP/1.1\r\nHost: localhost\r\n" + upgrade)
    assert status_of(answer) == 403
    assert len(farm.backends["users"].seen) == before


def test_config_change_is_picked_up(gateway, tmp_path):
    """A committed change (here by another process) reaches the serving worker."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    from tests.e2e.conftest import ROOT

    db = next(p for p in gateway.log.parent.iterdir() if p.suffix == ".sqlite3")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "PYTHONPATH": str(ROOT),
           "DJANGO_SETTINGS_MODULE": "chistone_site.settings"}
    code = ("from tenants import services; from tenants.models import Tenant;"
            "from tenants.audit import Actor;"
            "services.update_tenant(actor=Actor.system(), tenant=Tenant.objects.get(slug='base'),"
            " domains=['base.test', 'base2.test'])")
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "shell", "-c", code], env=env,
                   check=True, timeout=60, cwd=ROOT)
    with httpx.Client(base_url=gateway.data, trust_env=False, timeout=5) as client:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if client.get("/x", headers={"Host": "base2.test"}).status_code == 200:
                break
            time.sleep(0.1)
        assert client.get("/x", headers={"Host": "base2.test"}).json()["backend"] == "base"
