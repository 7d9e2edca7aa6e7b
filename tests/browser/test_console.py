"""The operators' console in real Chromium: an incident (traffic, a request, backend health),
correctness and isolation (a scoped operator, form errors, accounts, API keys, the
configuration state), and every page at 1366 and 375 px.

Real traffic goes through the real data plane (two workers) to a real HTTP backend; what is
asserted is what a person sees on the page: the numbers, their colour classes, the links.
"""

from __future__ import annotations

import re
import time

import pytest

from .conftest import (
    OPERATOR_PASSWORD,
    WORKERS,
    Shots,
    data_plane_get,
    eventually,
    free_port,
    login,
    manage_shell,
)

pytestmark = pytest.mark.browser

SCRIPT = """\
chi.get("/ok", function(req) return proxy("api") end)
chi.get("/fail", function(req) return proxy("api") end)
chi.get("/slow", function(req) return proxy("api") end)
"""

SEED = """
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from luascripts.services import activate_version, publish_version
from tenants import access, services
from tenants.audit import Actor

actor = Actor.system("browser-test")
web = services.create_tenant(actor=actor, slug="web", name="Web", domains=["web.localhost"])
services.create_backend(actor=actor, tenant=web, name="api", url=BACKEND,
                        health_check_path="/health")
version, _ = publish_version(actor=actor, tenant=web, source=SCRIPT)
activate_version(actor=actor, tenant=web, version=version)
services.create_tenant(actor=actor, slug="zeta", name="Zeta", domains=["hidden-shop.localhost"])
olga = get_user_model().objects.create_user("olga", "olga@example.com", PASSWORD, is_staff=True)
for codename in ("view_tenant", "change_tenant", "add_tenant", "view_backend", "add_backend",
                 "change_backend", "view_auditevent", "view_scriptversion",
                 "add_scriptversion"):
    olga.user_permissions.add(Permission.objects.get(codename=codename))
root = get_user_model().objects.get(username="ops")
access.set_operator_tenants(actor=Actor.for_user(root), user=olga, tenants=[web])
print("seeded")
"""


@pytest.fixture(scope="module")
def seeded(server, backend):
    code = (f"BACKEND = {backend!r}\nSCRIPT = {SCRIPT!r}\nPASSWORD = {OPERATOR_PASSWORD!r}\n"
            + SEED)
    assert "seeded" in manage_shell(server, code)
    port = server["data_port"]
    tries = []

    def answered() -> bool:
        tries.append(1)
        return data_plane_get(port, "web.localhost", "/ok")[0] == 200

    assert eventually(answered)
    return {**server, "warmup": len(tries)}  # requests to web before the tests'


@pytest.fixture
def page(browser, screenshots_dir, request, seeded):
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    name = "-".join(request.node.name.removeprefix("test_").split("_")[:3])
    page.shots = Shots(page, f"console-{name}", screenshots_dir)
    yield page
    page.close()


def figure(page, row: str, name: str) -> tuple[str, str]:
    """(text, class) of one figure cell of the dashboard or a traffic table row."""
    cell = page.locator(f"{row} td[data-figure={name}]")
    return cell.inner_text().strip(), cell.get_attribute("class")


def test_during_an_incident(page, seeded, backend):
    base, port = seeded["control"], seeded["data_port"]
    shot = page.shots
    # Traffic through the real data plane: 40 fine, 6 failing (the backend answers 503),
    # 4 unknown routes (404), 5 slow ones (0.6 s).
    for _ in range(40):
        assert data_plane_get(port, "web.localhost", "/ok")[0] == 200
    failed_ids = []
    for _ in range(6):
        status, _body, headers = data_plane_get(port, "web.localhost", "/fail")
        assert status == 503
        failed_ids.append(headers["X-Request-Id"])
    for _ in range(4):
        assert data_plane_get(port, "web.localhost", "/missing")[0] == 404
    for _ in range(5):
        assert data_plane_get(port, "web.localhost", "/slow")[0] == 200

    login(page, base)
    total = 55 + seeded["warmup"]
    five_xx, four_xx = f"{100 * 6 / total:.1f}%", f"{100 * 4 / total:.1f}%"

    def dashboard_settled():
        page.goto(f"{base}/admin/")
        return figure(page, "#dashboard-web", "server_error_pct")[0] == five_xx

    # Each worker publishes once a second; the page merges them all.
    assert eventually(dashboard_settled, timeout=20), page.locator("#dashboard-web").inner_text()
    assert figure(page, "#dashboard-web", "server_error_pct")[1].endswith("chistone-level-bad")
    text, css = figure(page, "#dashboard-web", "client_error_pct")
    assert (text, css.split()[-1]) == (four_xx, "chistone-level-ok")
    p99, css = figure(page, "#dashboard-web", "p99_ms")
    assert 500 <= float(p99.split()[0]) <= 700 and css.endswith("chistone-level-warn"), p99
    rate = float(figure(page, "#dashboard-web", "rate")[0])
    assert 0.15 < rate <= total, rate  # all of them within the last minute or so
    caption = page.locator("#dashboard-caption").inner_text()
    assert f"Figures from all {WORKERS} workers of this gateway node" in caption
    chart = page.locator(".chistone-chart[data-chart=chart-web]")
    assert chart.get_attribute("data-drawn") == "60" and chart.locator("canvas").count() == 1
    assert page.locator("#dashboard-web .chistone-health").inner_text().lower() in (
        "healthy", "pending")
    shot.both_widths("dashboard")
    page.click("#window-1h")
    page.wait_for_selector("#window-1h.selected")
    assert figure(page, "#dashboard-web", "server_error_pct")[0] == five_xx
    assert "over the last hour" in page.locator("#dashboard-caption").inner_text()
    shot.both_widths("dashboard-last-hour")

    # Per route and per backend.
    page.click("#dashboard-web th a")
    page.wait_for_selector("#traffic-routes")
    assert figure(page, "#traffic-routes tr[data-route='/fail']", "server_error_pct")[0] == \
        "100.0%"
    assert figure(page, "#traffic-routes tr[data-route='/ok']", "server_error_pct")[0] == "0.0%"
    api = page.locator("#traffic-backends tr[data-backend=api] td").last.inner_text()
    assert api == str(51 + seeded["warmup"])  # the 404s reached no backend
    assert page.locator(".chistone-chart.large canvas").count() == 1
    shot.both_widths("tenant-traffic")

    # The request a client reported, by the id in its X-Request-Id.
    page.goto(f"{base}/admin/requests/")
    page.fill("#id_request_id", failed_ids[2])
    page.click("#request-search input[type=submit]")
    rows = page.locator("#request-results tbody tr[data-request-id]")
    assert rows.count() == 1
    row = rows.first
    assert row.get_attribute("data-request-id") == failed_ids[2]
    assert row.locator("td.num").first.inner_text() == "503"
    assert "chistone-level-bad" in row.locator("td.num").first.get_attribute("class")
    assert "GET /fail" in row.inner_text() and "api" in row.inner_text()
    shot.both_widths("request-found")
    row.locator("a.chistone-version-link").click()
    page.wait_for_selector("table.chistone-source")
    assert "version 1" in page.locator("h1").inner_text()
    page.go_back()
    page.locator(f"#request-results tr[data-request-id='{failed_ids[2]}'] td a").first.click()
    page.wait_for_selector("#tenant-health")
    assert page.input_value("#id_slug") == "web"
    page.goto(f"{base}/admin/requests/?status=5xx")
    assert page.locator("#request-results tbody tr[data-request-id]").count() == 6
    page.goto(f"{base}/admin/requests/?route=/slow&tenant=web")
    assert page.locator("#request-results tbody tr[data-request-id]").count() == 5
    page.goto(f"{base}/admin/requests/?status=5x")
    assert "A status code (502) or a class (5xx)." in page.locator("#error-status").inner_text()

    # Backend health: a new backend is "pending" until its first check, a dead one says why.
    dead_port = free_port()
    page.goto(f"{base}/admin/tenants/tenant/")
    page.click("text=web")
    page.fill("#id_backends-1-name", "warming")
    page.fill("#id_backends-1-url", f"{backend}")
    page.fill("#id_backends-1-health_check_path", "/health-slow")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    page.goto(f"{base}/admin/tenants/backend/")
    health = page.locator("#result_list tr", has_text="warming").locator(".chistone-health")
    assert eventually(lambda: page.reload() or health.inner_text().lower() == "pending",
                      timeout=5), health.inner_text()
    assert "chistone-health-pending" in health.get_attribute("class")
    shot.both_widths("backends-pending")
    page.goto(f"{base}/admin/tenants/tenant/")
    page.click("text=web")
    page.fill("#id_backends-2-name", "dead")
    page.fill("#id_backends-2-url", f"http://127.0.0.1:{dead_port}")
    page.fill("#id_backends-2-health_check_path", "/health")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")

    def dead_is_down():
        page.reload()
        state = page.locator("#health-table tr[data-backend=dead] .chistone-health")
        return state.count() and state.inner_text().lower() == "unhealthy"

    assert eventually(dead_is_down, timeout=40)
    row = page.locator("#health-table tr[data-backend=dead]")
    reason = row.locator(".chistone-reason").inner_text()
    assert "failed 2 active checks in a row" in reason and "connection refused" in reason, reason
    assert re.search(r"\d\d:\d\d:\d\d UTC \(\d+ s ago\)", row.locator(".chistone-since")
                     .inner_text())
    assert "failed" in row.inner_text()  # the last check, and how it went
    warming = page.locator("#health-table tr[data-backend=warming] .chistone-health")
    assert eventually(lambda: page.reload() or warming.inner_text().lower() == "healthy",
                      timeout=30)
    shot.both_widths("tenant-health")
    page.goto(f"{base}/admin/tenants/backend/")
    states = {name: page.locator("#result_list tr", has_text=name)
              .locator(".chistone-health").inner_text().lower()
              for name in ("warming", "dead")}
    assert states == {"warming": "healthy", "dead": "unhealthy"}
    shot.both_widths("backends-list")


def test_a_scoped_operator_sees_no_other_tenant(browser, seeded, screenshots_dir):
    base = seeded["control"]
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    shot = Shots(page, "operator", screenshots_dir)
    try:
        login(page, base, "olga", OPERATOR_PASSWORD)
        assert page.locator("#dashboard-web").count() == 1
        assert "zeta" not in page.content()
        shot.both_widths("dashboard")
        page.goto(f"{base}/admin/tenants/tenant/add/")
        page.fill("#id_slug", "copy")
        page.fill("#id_name", "Copy")
        page.fill("#id_domains", "hidden-shop.localhost")
        page.click("input[name=_save]")
        page.wait_for_selector(".errorlist")
        errors = page.locator(".field-domains .errorlist").inner_text()
        assert errors == ("Another tenant already answers for host 'hidden-shop.localhost' "
                          "with prefix '/'.")
        assert "zeta" not in page.content().lower()
        shot.both_widths("clash-without-names")
        page.goto(f"{base}/admin/requests/?tenant=zeta")
        assert "zeta" not in page.locator("#request-results").inner_text()
    finally:
        context.close()


def test_correctness_of_the_admin(page, seeded):
    base = seeded["control"]
    shot = page.shots
    login(page, base)

    # Every error of the page at once, each once.
    page.goto(f"{base}/admin/tenants/tenant/add/")
    page.fill("#id_slug", "Not A Slug")
    page.fill("#id_name", "X")
    page.fill("#id_domains", "web.localhost\nbad_host!")
    page.fill("#id_backends-0-name", "api")
    page.fill("#id_backends-0-url", "ftp://127.0.0.1/")
    page.click("input[name=_save]")
    page.wait_for_selector(".errornote")
    assert page.locator(".field-slug .errorlist").count() == 1
    domains = page.locator(".field-domains .errorlist").inner_text()
    assert "bad_host!" in domains
    assert "only http:// and https:// backends are supported" in \
        page.locator("#backends-group").inner_text()
    assert page.content().count("only http:// and https:// backends are supported") == 1
    shot.both_widths("all-errors-at-once")
    page.fill("#id_slug", "webcopy")
    page.fill("#id_domains", "web.localhost")
    page.fill("#id_backends-0-url", "http://127.0.0.1:9")
    page.click("input[name=_save]")
    page.wait_for_selector(".errornote")
    # A superuser may be told which tenant holds the host.
    assert page.locator(".field-domains .errorlist").inner_text() == (
        "Another tenant (tenant 'web') already answers for host 'web.localhost' with prefix '/'.")

    # "Updated at" of the configuration state moves with the generation.
    page.goto(f"{base}/admin/tenants/configstate/")
    before = page.locator("#result_list tbody tr").first.inner_text()
    time.sleep(1.1)
    page.goto(f"{base}/admin/tenants/tenant/")
    page.click("text=zeta")
    page.fill("#id_name", "Zeta renamed")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    page.goto(f"{base}/admin/tenants/configstate/")
    after = page.locator("#result_list tbody tr").first.inner_text()
    gen_before, at_before = before.split("\t")[-2:]
    gen_after, at_after = after.split("\t")[-2:]
    assert int(gen_after) > int(gen_before) and at_after != at_before, (before, after)
    shot.both_widths("config-state")

    # Revoking an API key asks first.
    page.goto(f"{base}/admin/api/apikey/add/")
    page.fill("#id_name", "ci")
    page.check("#id_all_tenants")
    page.click("#apikey-form input[type=submit]")
    page.wait_for_selector("text=API key created")
    page.goto(f"{base}/admin/api/apikey/")
    page.locator("#result_list tr", has_text="ci").locator("input.action-select").check()
    page.select_option("select[name=action]", "revoke_keys")
    page.click("button[name=index]")
    page.wait_for_selector("#revoke-warning")
    assert "This cannot be undone" in page.locator("#revoke-warning").inner_text()
    shot.both_widths("revoke-confirmation")
    assert page.locator("#result_list").count() == 0  # nothing revoked yet
    page.click("#confirm-revoke")
    page.wait_for_selector(".messagelist .success")
    assert "Revoked 1 key(s)" in page.locator(".messagelist").inner_text()

    # A superuser deletes a staff account that had operator access.
    page.goto(f"{base}/admin/auth/user/")
    page.click("text=olga")
    page.click("a.deletelink")
    page.wait_for_selector("input[type=submit]")
    assert "permission to delete" not in page.content()
    shot.both_widths("delete-operator")
    page.click("input[type=submit]")
    page.wait_for_selector(".messagelist .success")
    assert "olga" in page.locator(".messagelist").inner_text()


def test_every_page_fits_and_errors_are_styled(page, seeded):
    base = seeded["control"]
    login(page, base)
    pages = {
        "tenants": "/admin/tenants/tenant/",
        "backends": "/admin/tenants/backend/",
        "audit": "/admin/tenants/auditevent/",
        "versions": "/admin/luascripts/scriptversion/",
        "host-claims": "/admin/tenants/hostclaim/",
        "operator-access": "/admin/tenants/operatoraccess/",
        "api-keys": "/admin/api/apikey/",
        "api-key-add": "/admin/api/apikey/add/",
        "users": "/admin/auth/user/",
        "user-add": "/admin/auth/user/add/",
        "requests": "/admin/requests/",
        "traffic": "/admin/traffic/",
    }
    for name, path in pages.items():
        page.goto(base + path)
        page.wait_for_selector("#content")
        page.shots.both_widths(name)
    page.goto(f"{base}/admin/tenants/tenant/")
    page.click("text=web")
    page.wait_for_selector("#tenant-health")
    page.shots.both_widths("tenant-with-backends")
    page.click(".object-tools a[href*='/scriptversion/tenant/']")
    page.wait_for_selector(".chistone-editor .ace_content")
    page.shots.both_widths("script-page")
    for path in ("/admin/no/such/page/", "/nothing-here/"):
        response = page.goto(base + path)
        assert response.status == 404
        assert page.locator("#error-page h1").inner_text() == "This page does not exist"
        assert page.locator("#site-name").inner_text().strip() == "chistone"
        page.shots.both_widths("not-found")
