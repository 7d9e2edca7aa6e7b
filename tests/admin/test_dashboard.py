"""The dashboard (admin index) and the tenant page read the running data plane's state."""

from __future__ import annotations

import pytest
from django.urls import reverse

from chistone_site import admin_gateway
from chistone_site.planes import DataPlane
from routing.snapshot import SnapshotHolder, build_snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def plane(acme, globex, monkeypatch):
    """A real DataPlane with a real snapshot, as chistone_site.asgi builds one per process."""
    holder = SnapshotHolder()
    plane = DataPlane(holder=holder, watch_generation=False)
    # What holder.rebuild() does, minus its close_old_connections() (fatal inside a test
    # transaction on PostgreSQL).
    holder.swap(build_snapshot(None))
    monkeypatch.setattr(admin_gateway, "running_data_plane", lambda: plane)
    api = holder.current.tenants["acme"].backends["api"]
    for _ in range(3):
        plane.health.record_failure(api, "connection refused")
    for status, count in ((200, 7), (404, 2), (502, 1)):
        for _ in range(count):
            plane.stats.record("acme", "/hello", status, total=0.01, upstream=0.005,
                               lua=0.001, sent=10)
    plane.stats.record("globex", "/*", 200, total=0.01, upstream=None, lua=0.0, sent=1)
    return plane


def test_dashboard_shows_requests_error_rates_and_health(su_client, plane):
    response = su_client.get(reverse("admin:index"))
    content = response.content.decode()
    row = content[content.index('id="dashboard-acme"'):]
    row = row[:row.index("</tr>")]
    cells = [c.split(">")[-1] for c in row.split("</td>")]
    assert "10" in cells and "2" in cells and "1" in cells and "10%" in cells
    assert "chistone-health-down" in row and "api down" in row
    globex_row = content[content.index('id="dashboard-globex"'):]
    assert "secret-backend up" in globex_row[:globex_row.index("</tr>")]
    assert f"generation {plane.holder.current.generation}" in content


def test_dashboard_is_scoped_to_the_operators_tenants(op_client, plane):
    content = op_client.get(reverse("admin:index")).content.decode()
    assert 'id="dashboard-acme"' in content
    assert "globex" not in content


def test_dashboard_says_so_when_no_gateway_runs_here(su_client, acme, monkeypatch):
    monkeypatch.setattr(admin_gateway, "running_data_plane", lambda: None)
    content = su_client.get(reverse("admin:index")).content.decode()
    assert 'id="gateway-not-running"' in content and 'id="dashboard-acme"' in content


def test_tenant_page_shows_live_backend_health(su_client, acme, plane):
    content = su_client.get(reverse("admin:tenants_tenant_change", args=[acme.pk])) \
        .content.decode()
    health = content[content.index('id="tenant-health"'):]
    assert "unhealthy" in health and "connection refused" in health
    assert "Requests to this tenant: 10, 5xx: 1." in health
