"""The publish flow in real Chromium against the real server (`serve --workers 2`):

1. a version whose stored test fails is refused by the admin with the test's result (the admin
   used to activate it anyway: it called the activation service directly), and the gateway
   keeps serving the active version; the override (a permission, with a reason) activates it;
2. a shadow started from the script page shows where the candidate decides differently;
3. a rollout with a guard started from the activation page, raised and completed from the
   script page; every step leaves its audit row.
"""

from __future__ import annotations

import json

import pytest

from .conftest import Shots, data_plane_get, eventually, login, manage_shell

pytestmark = pytest.mark.browser

V1 = 'chi.get("/hello", function(req) return respond(200, "hello v1") end)\n' \
     'chi.get("/v2/{rest}", function(req) return respond(200, "old v2") end)\n'
V2 = V1.replace("hello v1", "hello v2")
# v3 answers /v2/* with another status: a decision the shadow tells apart.
V3 = V1.replace("hello v1", "hello v3").replace('respond(200, "old v2")', 'respond(410, "gone")')
TESTS = [{"name": "hello says v1", "request": {"path": "/hello"},
          "expect": {"status": 200, "body": "hello v1"}}]


def seed(server) -> None:
    """A tenant with v1 active, v2 (whose stored test fails) and v3, through the actions."""
    manage_shell(server, f"""
import json
from chistone_site import actions
from tenants import services
from tenants.audit import Actor
actor = Actor.system("seed")
tenant = services.create_tenant(actor=actor, slug="flow", name="Flow",
                                domains=["flow.localhost"])
actions.do_publish_script(actor=actor, tenant=tenant, source={V1!r}, activate=True)
actions.do_publish_script(actor=actor, tenant=tenant, source={V2!r},
                          tests=json.loads({json.dumps(TESTS)!r}))
actions.do_publish_script(actor=actor, tenant=tenant, source={V3!r})
print(tenant.pk)
""")


def tenant_id(server) -> int:
    out = manage_shell(server, "from tenants.models import Tenant; "
                               "print(Tenant.objects.get(slug='flow').pk)")
    return int(out.strip().splitlines()[-1])


def served(server, path="/hello") -> str:
    return data_plane_get(server["data_port"], "flow.localhost", path)[1]


def test_publish_flow_in_the_admin(server, browser, screenshots_dir):
    seed(server)
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    shot = Shots(page, "flow", screenshots_dir)
    try:
        walk(page, shot, server)
    except Exception:
        shot("failure")
        print(server["log"].read_text()[-5000:])
        raise


def walk(page, shot, server) -> None:
    base = server["control"]
    script_url = f"{base}/admin/luascripts/scriptversion/tenant/{tenant_id(server)}/"
    login(page, base)
    assert eventually(lambda: served(server) == "hello v1")

    # 1. v2's stored test fails: the confirmation page shows it, confirming is refused.
    page.goto(f"{script_url}v2/activate/")
    page.wait_for_selector("#stored-tests")
    tests = page.locator("#test-results").inner_text()
    assert "FAIL" in tests and "hello says v1" in tests and "hello v2" in tests
    shot.both_widths("activate-failing-tests")
    page.click("#confirm-activate")
    page.wait_for_selector("#activation-refused")
    assert "stored test(s) of version 2 failed" in page.locator("#activation-refused").inner_text()
    assert "hello says v1" in page.locator("#test-results").inner_text()
    shot.both_widths("activation-refused")
    assert served(server) == "hello v1"  # nothing changed on the data plane

    # The override: a superuser holds the permission; it needs a reason and is audited.
    page.check("#id_override")
    page.fill("#id_reason", "the test is outdated; INC-12")
    page.click("#confirm-activate")
    page.wait_for_selector(".messagelist .warning")
    assert "overridden" in page.locator(".messagelist").inner_text()
    assert eventually(lambda: served(server) == "hello v2")

    # 2. A shadow: v3 decides beside v2 on every request, without effects.
    page.goto(script_url)
    page.select_option("#shadow-form select[name=version]", "3")
    page.fill("#shadow-form input[name=sample_rate]", "100")
    page.click("#start-shadow")
    page.wait_for_selector("#shadow-report")
    assert "Shadow started: v3" in page.locator(".messagelist").inner_text()

    def shadow_loaded() -> bool:  # the workers picked the shadow up: requests get compared
        for path in ("/hello", "/v2/x"):
            served(server, path)
        page.goto(script_url)
        return int(page.locator("#shadow-compared").inner_text()) > 0

    assert eventually(shadow_loaded, timeout=20)
    for i in range(10):
        assert served(server, f"/v2/item{i}") == "old v2"  # clients get the active answer
    page.wait_for_timeout(2500)  # the workers write their counts once a second
    page.goto(script_url)
    routes = page.locator("#shadow-routes").inner_text()
    assert "/v2/{rest}" in routes and "/hello" in routes
    assert int(page.locator("#shadow-mismatched").inner_text()) >= 10
    page.click("#shadow-samples summary")
    samples = page.locator("#shadow-samples").inner_text()
    assert "active: respond 200" in samples and "shadow: respond 410" in samples
    shot.both_widths("shadow")
    page.click("#stop-shadow")
    page.wait_for_selector(".messagelist .success")

    # 3. Roll v3 out to 10 % under a guard, raise it, complete it.
    page.goto(f"{script_url}v3/activate/")
    page.wait_for_selector("#rollout-options")
    assert page.locator("#route-changes").count() == 1
    page.fill("#id_percent", "10")
    page.check("#id_guard")
    page.fill("#id_max_error_rate", "5")
    page.fill("#id_min_requests", "50")
    page.fill("#id_window_s", "30")
    shot.both_widths("rollout-options")
    page.click("#confirm-activate")
    page.wait_for_selector("#rollout-running")
    assert "Rolling out v3 to 10%" in page.locator(".messagelist").inner_text()
    running = page.locator("#rollout-running").inner_text()
    assert "10%" in running and "sticky by client IP" in running
    assert "Guard" in page.locator("#rollout-guard").inner_text()
    shot.both_widths("rollout-running")
    page.fill("#rollout-form input[name=percent]", "60")
    page.click("#rollout-apply")
    page.wait_for_selector("#rollout-running")
    assert "60%" in page.locator("#rollout-running").inner_text()
    page.click("#rollout-complete")
    page.wait_for_selector(".messagelist .success")
    assert "Rollout completed" in page.locator(".messagelist").inner_text()
    assert eventually(lambda: served(server) == "hello v3")
    shot("rollout-completed")

    # The audit log has every step.
    page.goto(f"{base}/admin/tenants/auditevent/?q=flow")
    log = page.locator("#result_list").inner_text()
    for action in ("script.override_tests", "script.shadow_start", "script.rollout_start",
                   "script.rollout_percent", "script.rollout_complete"):
        assert action in log, action
    shot("audit-log")
