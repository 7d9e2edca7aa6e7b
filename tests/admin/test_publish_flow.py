"""The admin on the one path: activation runs the stored tests and refuses with their
results (it used to call the activation service directly and skip them), the override is a
separate permission, rollouts and shadows are started, changed and ended from the pages."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse

from chistone_site import actions
from luascripts.models import GuardCount, Rollout, Shadow
from tenants.models import AuditEvent

from .conftest import GOOD, GOOD2, grant

pytestmark = pytest.mark.django_db

FAILING = [{"name": "hello says hello", "request": {"path": "/hello"},
            "expect": {"status": 200, "body": "hello"}}]
PASSING = [{"name": "hello answers", "request": {"path": "/hello"}, "expect": {"status": 200}}]


def url(name, tenant, *args):
    return reverse(f"admin:luascripts_scriptversion_{name}", args=[tenant.pk, *args])


def test_failing_stored_tests_refuse_activation_with_their_results(op_client, acme, publish):
    publish(acme, GOOD, tests=FAILING)  # GOOD answers "hi": the stored test expects "hello"
    confirm = op_client.get(url("activate", acme, 1)).content.decode()
    assert "1 of 1 fails" in confirm and "FAIL" in confirm
    assert 'id="override-not-permitted"' in confirm
    response = op_client.post(url("activate", acme, 1), {"percent": "100"})
    assert response.status_code == 422
    page = response.content.decode()
    assert 'id="activation-refused"' in page and "hello says hello" in page
    assert "body: expected &#x27;hello&#x27;, got &#x27;hi&#x27;" in page
    acme.refresh_from_db()
    assert acme.active_version_id is None
    assert not AuditEvent.objects.filter(action="script.activate").exists()
    # Without the override permission, asking for it anyway is refused.
    forced = op_client.post(url("activate", acme, 1), {"override": "on", "reason": "x"})
    assert forced.status_code == 403


def test_the_override_permission_activates_and_is_audited(op_client, operator, acme, publish):
    version = publish(acme, GOOD, tests=FAILING)
    grant(operator, "luascripts.override_script_tests")
    page = op_client.get(url("activate", acme, 1)).content.decode()
    assert 'id="override-row"' in page
    no_reason = op_client.post(url("activate", acme, 1), {"override": "on"})
    assert no_reason.status_code == 400
    done = op_client.post(url("activate", acme, 1), {"override": "on",
                                                     "reason": "customer hotfix"}, follow=True)
    assert "failing stored test(s) were overridden" in done.content.decode()
    acme.refresh_from_db()
    assert acme.active_version_id == version.pk
    event = AuditEvent.objects.get(action="script.override_tests")
    assert event.actor == "olga" and event.detail["reason"] == "customer hotfix"


def test_passing_tests_activate_as_before(op_client, acme, publish):
    version = publish(acme, GOOD, tests=PASSING)
    page = op_client.get(url("activate", acme, 1)).content.decode()
    assert "All 1 pass" in page
    response = op_client.post(url("activate", acme, 1), {"percent": "100"})
    assert response.status_code == 302
    acme.refresh_from_db()
    assert acme.active_version_id == version.pk


def test_a_rollout_from_the_activation_page_then_raise_and_complete(op_client, acme, publish):
    v1 = publish(acme, GOOD)
    v2 = publish(acme, GOOD2)
    op_client.post(url("activate", acme, 1))
    page = op_client.get(url("activate", acme, 2)).content.decode()
    assert 'id="route-changes"' in page and "/users/{id}" in page  # the route diff
    response = op_client.post(url("activate", acme, 2), {
        "percent": "10", "key_header": "X-User", "guard": "on", "max_error_rate": "5",
        "min_requests": "50", "window_s": "30"}, follow=True)
    content = response.content.decode()
    assert "Rolling out v2 to 10%" in content and 'id="rollout-running"' in content
    assert "sticky by header x-user" in content and 'id="rollout-guard"' in content
    rollout = Rollout.objects.get()
    assert (rollout.percent, rollout.max_error_rate, rollout.window_s) == (10, 0.05, 30)
    acme.refresh_from_db()
    assert acme.active_version_id == v1.pk
    op_client.post(url("rollout", acme), {"percent": "40", "_percent": "Apply"})
    rollout.refresh_from_db()
    assert rollout.percent == 40
    done = op_client.post(url("rollout", acme), {"_complete": "1"}, follow=True)
    assert "Rollout completed" in done.content.decode()
    acme.refresh_from_db()
    assert acme.active_version_id == v2.pk


def test_rolling_back_a_rollout_from_the_script_page(op_client, acme, publish):
    v1 = publish(acme, GOOD)
    publish(acme, GOOD2)
    op_client.post(url("activate", acme, 1))
    op_client.post(url("activate", acme, 2), {"percent": "25"})
    response = op_client.post(url("rollout", acme), {"_rollback": "1"}, follow=True)
    assert "Rolled back" in response.content.decode()
    assert Rollout.objects.get().state == Rollout.ROLLED_BACK
    acme.refresh_from_db()
    assert acme.active_version_id == v1.pk


def test_an_auto_rollback_is_shown_on_the_script_page(op_client, acme, publish):
    publish(acme, GOOD)
    publish(acme, GOOD2)
    op_client.post(url("activate", acme, 1))
    op_client.post(url("activate", acme, 2), {"percent": "30", "guard": "on",
                                              "max_error_rate": "10", "min_requests": "10",
                                              "window_s": "60"})
    rollout = Rollout.objects.get()
    GuardCount.objects.create(rollout=rollout, arm=GuardCount.NEW, second=int(time.time()),
                              requests=20, errors=6)
    GuardCount.objects.create(rollout=rollout, arm=GuardCount.OLD, second=int(time.time()),
                              requests=50, errors=0)
    actions.check_guards()
    page = op_client.get(url("script", acme)).content.decode()
    assert 'id="auto-rollback"' in page and "rolled back automatically" in page
    assert "errors 30% (6/20) against 0% (0/50) for v1" in page


def test_shadow_start_report_stop(op_client, acme, publish):
    publish(acme, GOOD)
    publish(acme, GOOD2)
    op_client.post(url("activate", acme, 1))
    response = op_client.post(url("shadow", acme), {"version": "2", "sample_rate": "20"},
                              follow=True)
    content = response.content.decode()
    assert "Shadow started: v2 decides on 20%" in content and 'id="shadow-report"' in content
    shadow = Shadow.objects.get()
    assert shadow.sample_rate == 0.2
    response = op_client.post(url("shadow", acme), {"_stop": "1"}, follow=True)
    assert "Last shadow: v2 (stopped)" in response.content.decode()


def test_rollouts_and_shadows_need_the_change_permission(client, acme, publish, db):
    from django.contrib.auth import get_user_model

    from tenants import access
    from tenants.audit import Actor

    reader = get_user_model().objects.create_user("rita", "r@example.com", "pw", is_staff=True)
    grant(reader, "tenants.view_tenant", "luascripts.view_scriptversion")
    access.set_operator_tenants(actor=Actor(name="t"), user=reader, tenants=[acme])
    client.force_login(reader)
    assert client.post(url("rollout", acme), {"_rollback": "1"}).status_code == 403
    assert client.post(url("shadow", acme), {"_stop": "1"}).status_code == 403
    assert client.post(url("activate", acme, 1)).status_code == 403
