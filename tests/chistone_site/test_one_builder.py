"""The data plane, the dry run and script tests load a script the same way (one builder,
routing.snapshot.load_tenant_script, with the gateway's limits): a limit set in settings
behaves identically in all three. The case that used to differ: a 5 ms CPU budget, which
the dry run and the tests ignored while the gateway timed the script out."""

from __future__ import annotations

import pytest

from chistone_site import simulation
from luascripts import services as script_services
from routing.conf import get_conf
from routing.gateway import Gateway
from routing.snapshot import SnapshotHolder, build_snapshot
from routing.upstream import AiohttpTransport
from tenants import services as tenant_services
from tenants.audit import Actor
from tests.routing.asgi import call, http_scope

pytestmark = pytest.mark.django_db

SPIN = """
chi.get("/spin", function(req)
  local t = time.now()
  while time.now() - t < 0.03 do end  -- 30 ms of script time
  return respond(200, "done")
end)
"""


@pytest.fixture
def tenant(db):
    actor = Actor(name="test")
    tenant = tenant_services.create_tenant(actor=actor, slug="spin", name="Spin",
                                           domains=["spin.example.com"])
    tenant_services.create_backend(actor=actor, tenant=tenant, name="b",
                                   url="http://127.0.0.1:9")
    version, _ = script_services.publish_version(actor=actor, tenant=tenant, source=SPIN)
    script_services.activate_version(actor=actor, tenant=tenant, version=version)
    tenant.refresh_from_db()
    return tenant


def outcomes(tenant) -> tuple[int, str | None, bool]:
    """(data plane status, dry run error, script test passed) for GET /spin."""
    import asyncio

    holder = SnapshotHolder()
    holder.swap(build_snapshot())

    async def data_plane() -> int:
        transport = AiohttpTransport(get_conf())
        try:
            gateway = Gateway(holder=holder, transport=transport)
            result = await call(gateway, http_scope("/spin", host="spin.example.com"))
            return result.status
        finally:
            await transport.close()

    status = asyncio.run(data_plane())
    dry = simulation.simulate(tenant=tenant, request={"path": "/spin"})
    [test] = simulation.run_script_tests(
        tenant=tenant, source=SPIN,
        tests=[{"name": "spin", "request": {"path": "/spin"},
                "expect": {"status": 200, "body": "done"}}])
    return status, dry.error, test["passed"]


def test_a_generous_budget_lets_all_three_answer(tenant, settings):
    settings.CHISTONE = {**settings.CHISTONE, "LUA_REQUEST_MS": 500}
    assert outcomes(tenant) == (200, None, True)


def test_a_tight_budget_from_settings_stops_the_script_in_all_three(tenant, settings):
    settings.CHISTONE = {**settings.CHISTONE, "LUA_REQUEST_MS": 5}
    status, dry_error, passed = outcomes(tenant)
    assert status == 500
    assert dry_error is not None and "5 ms CPU budget" in dry_error
    assert passed is False
