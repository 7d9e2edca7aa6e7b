"""The publish flow over the API: route-table diffs, stored tests on every activation and
the override scope, rollouts with a guard, rollback, shadows, running a version's tests."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from luascripts.models import Rollout, Shadow
from tenants import access
from tenants.audit import Actor
from tenants.models import AuditEvent

from .conftest import FAILING_TESTS, PASSING_TESTS, SCRIPT, SCRIPT_V2, assert_error

pytestmark = pytest.mark.django_db
URL = "/api/v1/tenants/acme/"
V3 = SCRIPT.replace('chi.post("/admin"', 'chi.mount("/legacy", "users-v1")\nchi.post("/admin"')


def publish(api, source=SCRIPT, **extra):
    response = api.post(URL + "scripts/", {"source": source, **extra}, format="json")
    assert response.status_code in (200, 201), response.content
    return response.json()


def test_the_publish_answer_carries_the_route_diff_against_the_active_version(acme, api):
    first = publish(api, activate=True)
    assert len(first["route_changes"]["added"]) == 3  # against nothing
    body = publish(api, source=V3)
    assert body["route_changes"] == {
        "added": [{"method": "*", "pattern": "/legacy/*", "target": "backend:users-v1",
                   "middleware": ["tag"]}],
        "removed": [], "changed": []}
    assert body["routes"][0]["labels"] == ["tag (line 1)"]
    diff = api.get(URL + "scripts/2/diff/").json()
    assert diff["route_changes"] == body["route_changes"]
    checked = api.post(URL + "scripts/validate/", {"source": SCRIPT_V2}, format="json").json()
    assert checked["route_changes"] == {"added": [], "removed": [], "changed": []}


def test_activation_refuses_failing_stored_tests_and_the_override_is_its_own_scope(
        acme, api, make_key, client_for):
    publish(api, tests=FAILING_TESTS)
    body = assert_error(api.post(URL + "scripts/1/activate/", {}, format="json"), 422)
    assert body["test_results"][0]["passed"] is False
    asked = {"override_tests": True, "reason": "INC-42"}
    body = assert_error(api.post(URL + "scripts/1/activate/", asked, format="json"), 403,
                        "permission_denied")
    assert "override scope" in body["detail"]
    acme.refresh_from_db()
    assert acme.active_version is None
    release = client_for(make_key("read,write,activate,override", name="release"))
    done = release.post(URL + "scripts/1/activate/", asked, format="json")
    assert done.status_code == 200 and done.json()["overridden"] == ["users go to v1"]
    event = AuditEvent.objects.get(action="script.override_tests")
    assert event.actor == "apikey:release" and event.detail["reason"] == "INC-42"


def test_a_staff_session_overrides_only_with_the_permission(acme, api, client):
    publish(api, tests=FAILING_TESTS)
    user = get_user_model().objects.create_superuser("root", "r@example.com", "pw")
    staff = get_user_model().objects.create_user("olga", "o@example.com", "pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="change_tenant"))
    access.set_operator_tenants(actor=Actor(name="t"), user=staff, tenants=[acme])
    asked = {"override_tests": True, "reason": "because"}
    client.force_login(staff)
    body = assert_error(client.post(URL + "scripts/1/activate/", asked,
                                    content_type="application/json"), 403)
    assert "override scope" in body["detail"]
    client.force_login(user)  # a superuser holds every permission
    response = client.post(URL + "scripts/1/activate/", asked, content_type="application/json")
    assert response.status_code == 200, response.content


def test_running_a_versions_tests(acme, api):
    publish(api, tests=PASSING_TESTS + FAILING_TESTS)
    body = api.post(URL + "scripts/1/test/").json()
    assert body["passed"] is False and [r["passed"] for r in body["test_results"]] == [
        True, True, False]
    assert_error(api.post(URL + "scripts/9/test/"), 404)


def test_rollout_with_a_guard_then_complete(acme, api):
    publish(api, activate=True, tests=PASSING_TESTS)
    publish(api, source=SCRIPT_V2, tests=PASSING_TESTS[:1])
    guard = {"max_error_rate": 0.05, "min_requests": 100, "window_s": 60}
    started = api.post(URL + "scripts/2/activate/", {"percent": 10, "guard": guard,
                                                     "key_header": "X-User"}, format="json")
    assert started.status_code == 200, started.content
    body = started.json()
    assert body["active"] is False and body["rollout"]["percent"] == 10
    assert body["rollout"]["key"] == "header x-user" and body["rollout"]["guard"] == guard
    state = api.get(URL + "rollout/").json()["rollout"]
    assert state["state"] == "running" and state["figures"]["new"]["requests"] == 0
    assert api.post(URL + "rollout/", {"percent": 50}, format="json").json()[
        "rollout"]["percent"] == 50
    done = api.post(URL + "rollout/", {"percent": 100}, format="json").json()["rollout"]
    assert done["state"] == "completed"
    acme.refresh_from_db()
    assert acme.active_version.number == 2
    assert_error(api.post(URL + "rollout/", {"percent": 20}, format="json"), 404)
    assert_error(api.post(URL + "scripts/1/activate/", {"percent": 0}, format="json"), 400)
    assert_error(api.post(URL + "scripts/1/activate/", {"percent": 10, "guard": {
        "max_error_rate": 3, "min_requests": 1, "window_s": 1}}, format="json"), 400)


def test_rollback_ends_a_rollout_or_goes_back_a_version(acme, api):
    publish(api, activate=True)
    publish(api, source=SCRIPT_V2)
    api.post(URL + "scripts/2/activate/", {"percent": 25}, format="json")
    rolled = api.post(URL + "rollback/", {}, format="json")
    assert rolled.status_code == 200 and rolled.json()["rollout"]["state"] == "rolled_back"
    assert rolled.json()["version"] == 1
    assert Rollout.objects.get().state == Rollout.ROLLED_BACK
    api.post(URL + "scripts/2/activate/", {}, format="json")
    back = api.post(URL + "rollback/", {}, format="json").json()
    assert back["version"] == 1 and back["active"] is True
    assert_error(api.post(URL + "rollback/", {"version": 7}, format="json"), 404)


def test_activation_and_rollout_need_the_activate_scope(acme, api, make_key, client_for):
    publish(api, activate=True)
    publish(api, source=SCRIPT_V2)
    writer = client_for(make_key("read,write"))
    assert_error(writer.post(URL + "scripts/2/activate/", {"percent": 10}, format="json"), 403)
    assert_error(writer.post(URL + "rollback/", {}, format="json"), 403)
    assert writer.get(URL + "rollout/").json() == {"rollout": None}


def test_shadow_start_report_stop(acme, api, make_key, client_for):
    publish(api, activate=True)
    publish(api, source=SCRIPT_V2)
    assert api.get(URL + "shadow/").json() == {"shadow": None}
    started = api.post(URL + "shadow/", {"version": 2, "sample_rate": 0.2}, format="json")
    assert started.status_code == 201
    shadow = started.json()["shadow"]
    assert (shadow["version"], shadow["sample_rate"], shadow["state"]) == (2, 0.2, "running")
    assert shadow["compared"] == 0 and shadow["routes"] == [] and shadow["samples"] == []
    assert_error(api.post(URL + "shadow/", {"version": 1}, format="json"), 409)
    assert_error(api.post(URL + "shadow/", {"version": 2, "sample_rate": 0}, format="json"),
                 400)
    reader = client_for(make_key("read"))
    assert reader.get(URL + "shadow/").json()["shadow"]["version"] == 2
    assert_error(reader.delete(URL + "shadow/"), 403)
    stopped = api.delete(URL + "shadow/").json()["shadow"]
    assert stopped["state"] == "stopped" and Shadow.objects.get().state == Shadow.STOPPED
    assert_error(api.delete(URL + "shadow/"), 404)
