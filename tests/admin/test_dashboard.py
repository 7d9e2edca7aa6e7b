"""The traffic dashboard, the tenant's traffic page, the request lookup and backend health:
the admin reads the running data plane's figures, merged over every worker of the node."""

from __future__ import annotations

import json
import os
import re
import time

import pytest
from django.urls import reverse

from chistone_site import admin_gateway
from chistone_site.planes import CheckResult, DataPlane
from luascripts import services as script_services
from routing import metrics
from routing.gateway import Exchange
from routing.snapshot import SnapshotHolder, build_snapshot
from tenants import services
from tests.admin.conftest import GOOD

pytestmark = pytest.mark.django_db


def observe(plane, tenant, route, status, *, backend="", ms=10.0, request_id=None,
            version=None, path="/", error=""):
    ex = Exchange(request_id=request_id or f"req-{time.monotonic_ns()}", tenant=tenant,
                  route=route, backend=backend, status=status, version=version, error=error)
    plane.stats.observe(ex, ms / 1000, {"method": "GET", "path": path}, None)


@pytest.fixture
def plane(acme, globex, system, monkeypatch, settings):
    """A real DataPlane with a real snapshot, as chistone_site.asgi builds one per process."""
    script_services.activate_version(
        actor=system, tenant=acme,
        version=script_services.publish_version(actor=system, tenant=acme, source=GOOD)[0])
    holder = SnapshotHolder()
    plane = DataPlane(holder=holder, watch_generation=False)
    # What holder.rebuild() does, minus its close_old_connections() (fatal inside a test
    # transaction on PostgreSQL).
    holder.swap(build_snapshot(None))
    monkeypatch.setattr(admin_gateway, "running_data_plane", lambda: plane)
    # Not under serve: this process's figures only (no CHISTONE_METRICS_DIR).
    settings.CHISTONE = {k: v for k, v in settings.CHISTONE.items() if k != "METRICS_DIR"}
    api = holder.current.tenants["acme"].backends["api"]
    for _ in range(3):
        plane.health.record_failure(api, "connection refused")
    for status, count in ((200, 7), (404, 2), (502, 1)):
        for _ in range(count):
            observe(plane, "acme", "/hello", status, backend="api", version=1,
                    request_id=f"acme-{status}-{count}", path="/hello")
    observe(plane, "globex", "/*", 200, ms=3000, request_id="globex-secret", path="/globex/x")
    return plane


def cells(content: str, row_id: str) -> dict[str, str]:
    row = content[content.index(f'id="{row_id}"'):]
    row = row[:row.index("</tr>")]
    return {name: html for html, name in
            ((m.group(0), m.group(1)) for m in re.finditer(
                r'<td class="[^"]*" data-figure="(\w+)"[^>]*>[^<]*</td>', row))}


def test_dashboard_shows_rates_error_shares_latency_and_threshold_colours(su_client, plane):
    content = su_client.get(reverse("admin:index")).content.decode()
    acme = cells(content, "dashboard-acme")
    assert "20.0%" in acme["client_error_pct"] and "chistone-level-warn" in acme["client_error_pct"]
    assert "10.0%" in acme["server_error_pct"] and "chistone-level-bad" in acme["server_error_pct"]
    # Every request took 10 ms: the 7-10 ms bucket, read by interpolation within it.
    assert 7 <= float(re.search(r">([\d.]+) ms<", acme["p50_ms"]).group(1)) <= 10
    assert "chistone-level-ok" in acme["p50_ms"]
    rate = float(re.search(r">([\d.]+)<", acme["rate"]).group(1))
    assert 0 < rate <= 10  # 10 requests within the last (at least one) second
    globex = cells(content, "dashboard-globex")
    assert "chistone-level-bad" in globex["p99_ms"]  # 3 s
    assert "Figures from all 1 worker of this gateway node" in content
    assert "the worker that served this page" not in content
    # A chart per tenant, its data from our own static files' uPlot.
    assert 'data-chart="chart-acme"' in content and 'id="chart-acme"' in content
    assert "chistone/vendor/uplot/uPlot.iife.min.js" in content
    chart = json.loads(re.search(r'<script id="chart-acme" type="application/json">(.*?)</script>',
                                 content).group(1))
    assert len(chart["x"]) == 60 and round(sum(chart["rps"]) * 60) == 10
    row = content[content.index('id="dashboard-acme"'):]
    assert "chistone-health-unhealthy" in row[:row.index("</tr>")]


def test_the_last_hour_is_a_window_of_its_own(su_client, plane):
    # A request 30 minutes ago counts in the last hour only.
    plane.stats.window.add("acme", "/old", "api", 500, 0.001, time.time() - 1800)
    five = cells(su_client.get(reverse("admin:index") + "?window=5m").content.decode(),
                 "dashboard-acme")
    hour = cells(su_client.get(reverse("admin:index") + "?window=1h").content.decode(),
                 "dashboard-acme")
    assert "10.0%" in five["server_error_pct"]
    assert "18.2%" in hour["server_error_pct"]  # 2 of 11


def test_dashboard_is_scoped_to_the_operators_tenants(op_client, plane):
    content = op_client.get(reverse("admin:index")).content.decode()
    assert 'id="dashboard-acme"' in content
    assert "globex" not in content


def test_dashboard_says_so_when_no_gateway_runs_here(su_client, acme, monkeypatch):
    monkeypatch.setattr(admin_gateway, "running_data_plane", lambda: None)
    content = su_client.get(reverse("admin:index")).content.decode()
    assert 'id="gateway-not-running"' in content and 'id="dashboard-acme"' in content


def test_tenant_traffic_page_breaks_figures_down_by_route_and_backend(su_client, acme, plane):
    observe(plane, "acme", "/users/{id}", 200, backend="api", ms=1.0)
    content = su_client.get(reverse("admin:tenant_traffic", args=[acme.pk])).content.decode()
    routes = content[content.index('id="traffic-routes"'):]
    routes = routes[:routes.index("</table>")]
    assert 'data-route="/hello"' in routes and 'data-route="/users/{id}"' in routes
    backends = content[content.index('id="traffic-backends"'):]
    backends = backends[:backends.index("</table>")]
    assert 'data-backend="api"' in backends
    assert '<td class="num" data-label="requests">11</td>' in backends


def test_tenant_traffic_page_of_another_tenant_is_404(op_client, globex, plane):
    assert op_client.get(reverse("admin:tenant_traffic", args=[globex.pk])).status_code == 404


def test_request_lookup_finds_by_id_status_route_and_links_tenant_and_version(su_client,
                                                                             acme, plane):
    url = reverse("admin:requests")
    content = su_client.get(url, {"request_id": "acme-502"}).content.decode()
    rows = re.findall(r'data-request-id="([^"]+)"', content)
    assert rows == ["acme-502-1"]
    assert reverse("admin:tenants_tenant_change", args=[acme.pk]) in content
    assert reverse("admin:luascripts_scriptversion_version", args=[acme.pk, 1]) in content
    assert "chistone-level-bad" in content
    four = re.findall(r'data-request-id="([^"]+)"',
                      su_client.get(url, {"status": "4xx"}).content.decode())
    assert four == ["acme-404-2"] * 2
    by_route = re.findall(r'data-request-id="([^"]+)"',
                          su_client.get(url, {"route": "/*", "tenant": "globex"})
                          .content.decode())
    assert by_route == ["globex-secret"]
    bad = su_client.get(url, {"status": "5x"}).content.decode()
    assert "A status code (502) or a class (5xx)." in bad


def test_requests_that_matched_no_tenant_are_for_superusers(su_client, plane):
    observe(plane, "-", "-", 404, request_id="nobody-404", path="/x")
    assert "nobody-404" in su_client.get(reverse("admin:requests")).content.decode()


def test_requests_that_matched_no_tenant_are_not_for_operators(op_client, plane):
    observe(plane, "-", "-", 404, request_id="nobody-404", path="/x")
    assert "nobody-404" not in op_client.get(reverse("admin:requests")).content.decode()


def test_request_lookup_is_scoped(op_client, plane):
    content = op_client.get(reverse("admin:requests")).content.decode()
    assert "acme-200-7" in content and "globex-secret" not in content
    assert "globex-secret" not in op_client.get(
        reverse("admin:requests"), {"request_id": "globex"}).content.decode()


def test_tenant_page_shows_state_reason_and_since(su_client, acme, plane):
    content = su_client.get(reverse("admin:tenants_tenant_change", args=[acme.pk])) \
        .content.decode()
    health = content[content.index('id="tenant-health"'):]
    row = health[health.index('data-backend="api"'):]
    row = row[:row.index("</tr>")]
    assert "chistone-health-unhealthy" in row
    assert "3 failed requests in a row" in row and "connection refused" in row
    assert re.search(r"\d\d:\d\d:\d\d UTC \(\d+ s ago\)", row)


def test_a_new_backend_with_a_health_check_is_pending_until_its_first_check(
        su_client, acme, system, plane):
    services.create_backend(actor=system, tenant=acme, name="fresh",
                            url="http://127.0.0.1:9003", health_check_path="/health")
    plane.holder.swap(build_snapshot(None))
    url = reverse("admin:tenants_backend_changelist")
    listing = su_client.get(url).content.decode()
    row = listing[listing.index(">fresh<"):]
    assert "chistone-health-pending" in row[:row.index("</tr>")]
    assert "chistone-health-healthy" not in row[:row.index("</tr>")]
    fresh = plane.holder.current.tenants["acme"].backends["fresh"]
    for _ in range(2):
        plane.health.record_check(fresh, CheckResult(False, "answered HTTP 503"))
    content = su_client.get(reverse("admin:tenants_tenant_change", args=[acme.pk])) \
        .content.decode()
    row = content[content.index('data-backend="fresh"'):]
    row = row[:row.index("</tr>")]
    assert "chistone-health-unhealthy" in row
    assert "failed 2 active checks in a row: answered HTTP 503" in row


def test_figures_and_health_merge_every_workers_report(su_client, acme, plane, tmp_path,
                                                       settings):
    """Under serve each worker publishes its files; the page merges them all."""
    settings.CHISTONE = {**settings.CHISTONE, "METRICS_DIR": str(tmp_path)}
    other = DataPlane(holder=plane.holder, watch_generation=False)
    for _ in range(30):
        observe(other, "acme", "/hello", 200, backend="api", request_id="from-the-other")
    api = plane.holder.current.tenants["acme"].backends["api"]
    for _ in range(5):
        other.health.record_success(api)
    report = {**other.metrics_report(), "pid": os.getpid() + 1}
    metrics.write_report(report, tmp_path)
    console = json.loads(other.console_report())
    console["pid"] = os.getpid() + 1
    (tmp_path / f"console-{os.getpid() + 1}.json").write_text(json.dumps(console))

    content = su_client.get(reverse("admin:index")).content.decode()
    assert "Figures from all 2 workers of this gateway node" in content
    acme_cells = cells(content, "dashboard-acme")
    assert "2.5%" in acme_cells["server_error_pct"]  # 1 of 40
    page = su_client.get(reverse("admin:tenants_tenant_change", args=[acme.pk])) \
        .content.decode()
    row = page[page.index('data-backend="api"'):]
    row = row[:row.index("</tr>")]
    # 3 failures here + 5 successes there; one worker took it out, so it shows unhealthy.
    assert '<td class="num">8</td><td class="num">3</td>' in row
    assert "chistone-health-unhealthy" in row
    found = su_client.get(reverse("admin:requests"), {"request_id": "from-the-other"})
    assert found.content.decode().count('data-request-id="from-the-other"') == 30
