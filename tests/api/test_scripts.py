"""Script versions: publish (idempotent), invalid and oversized sources, tests that block
activation, activate and roll back, diff, validate."""

from __future__ import annotations

import pytest

from luascripts import services as script_services
from luascripts.models import ScriptVersion
from tenants import services as tenant_services
from tenants.audit import Actor
from tenants.models import AuditEvent

from .conftest import FAILING_TESTS, INVALID, PASSING_TESTS, SCRIPT, SCRIPT_V2, assert_error

pytestmark = pytest.mark.django_db
URL = "/api/v1/tenants/acme/scripts/"


def publish(api, source=SCRIPT, **extra):
    return api.post(URL, {"source": source, **extra}, format="json")


def test_publish_answers_201_with_the_version(acme, api):
    response = publish(api, message="first")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["version"] == 1 and body["created"] is True and body["active"] is False
    assert body["sha256"] == script_services.source_sha256(SCRIPT)
    assert body["author"].startswith("apikey:") and body["message"] == "first"
    assert body["created_at"]
    patterns = {(r["method"], r["pattern"]) for r in body["routes"]}
    assert ("GET", "/users/{id:[0-9]+}") in patterns and ("POST", "/admin") in patterns


def test_publishing_the_same_source_again_is_200_with_the_same_version(acme, api):
    first = publish(api).json()
    again = publish(api, message="CI retry")
    assert again.status_code == 200
    assert again.json()["version"] == first["version"] and again.json()["created"] is False
    assert ScriptVersion.objects.filter(tenant=acme).count() == 1
    assert AuditEvent.objects.filter(action="script.publish").count() == 1


def test_source_is_kept_byte_for_byte(acme, api):
    source = "\n\n  " + SCRIPT + "  \n\n"
    publish(api, source=source)
    assert api.get(URL + "1/").json()["source"] == source


def test_an_invalid_source_is_400_with_line_numbers_and_stores_nothing(acme, api):
    body = assert_error(publish(api, source=INVALID), 400, "invalid")
    assert body["errors"] and body["errors"][0]["line"] in (2, 3)
    assert {"line", "column", "message"} <= set(body["errors"][0])
    assert not ScriptVersion.objects.exists()


def test_an_unknown_mount_backend_is_400(acme, api):
    body = assert_error(publish(api, source='chi.mount("/legacy", "nowhere")\n'), 400)
    assert "nowhere" in str(body["errors"])


def test_a_misspelt_backend_in_proxy_is_400_at_its_line(acme, api):
    # It used to pass (only mount() names were checked) and then answer 500 on every request.
    source = 'chi.get("/", function(req)\n  return proxy("users-v3")\nend)\n'
    body = assert_error(publish(api, source=source), 400)
    assert body["errors"] == [{"line": 2, "column": None, "message": (
        "proxy(): unknown backend 'users-v3' (this tenant has: users-v1, users-v2)")}]
    assert not ScriptVersion.objects.exists()


def test_warnings_come_with_a_valid_version(acme, api):
    source = ('chi.get("/a", function(req) return proxy("users-v1") end)\n'
              'chi.get("/a", function(req) return proxy("users-v2") end)\n')
    body = publish(api, source=source).json()
    assert body["valid"] is True
    assert body["warnings"][0]["line"] == 1 and "never runs" in body["warnings"][0]["message"]
    checked = api.post(URL + "validate/", {"source": source}, format="json").json()
    assert checked["warnings"] == body["warnings"]


def test_an_oversized_source_is_413_and_stores_nothing(acme, api):
    body = assert_error(publish(api, source="-- " + "x" * (256 * 1024)), 413, "too_large")
    assert "limit" in body["detail"]
    assert not ScriptVersion.objects.exists()
    assert_error(api.post(URL + "validate/", {"source": "--" + "y" * 300_000},
                          format="json"), 413)


def test_shape_errors_are_400(acme, api):
    assert_error(api.post(URL, {"message": "no source"}, format="json"), 400, "invalid")
    assert_error(api.post(URL, {"source": SCRIPT, "tests": [{"name": "no request"}]},
                          format="json"), 400, "invalid")
    assert_error(api.post(URL, {"source": ["not", "text"]}, format="json"), 400)


def test_list_is_newest_first_and_detail_has_source_and_tests(acme, api):
    publish(api, tests=PASSING_TESTS)
    publish(api, source=SCRIPT_V2)
    listed = api.get(URL).json()
    assert [v["version"] for v in listed] == [2, 1]
    assert "source" not in listed[0]
    one = api.get(URL + "1/").json()
    assert one["source"] == SCRIPT and [t["name"] for t in one["tests"]] == [
        t["name"] for t in PASSING_TESTS]
    assert_error(api.get(URL + "9/"), 404, "not_found")


def test_publish_and_activate_with_passing_tests(acme, api):
    response = publish(api, activate=True, tests=PASSING_TESTS)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["active"] is True
    assert [r["passed"] for r in body["test_results"]] == [True, True]
    acme.refresh_from_db()
    assert acme.active_version.number == 1


def test_failing_tests_block_activation_but_the_version_is_stored(acme, api):
    body = assert_error(publish(api, activate=True, tests=PASSING_TESTS + FAILING_TESTS),
                        422, "unprocessable")
    assert body["version"] == 1
    results = {r["name"]: r for r in body["test_results"]}
    assert results["users go to v1"]["passed"] is False
    assert "users-v2" in results["users go to v1"]["detail"]
    assert results["users go to v2"]["passed"] is True
    stored = ScriptVersion.objects.get(tenant=acme)
    assert stored.valid and len(stored.tests) == 3
    acme.refresh_from_db()
    assert acme.active_version is None
    assert not AuditEvent.objects.filter(action="script.activate").exists()


def test_failing_tests_without_activate_still_publish(acme, api):
    response = publish(api, tests=FAILING_TESTS)
    assert response.status_code == 201
    assert response.json()["test_results"][0]["passed"] is False


def test_activate_and_roll_back(acme, api):
    publish(api)
    publish(api, source=SCRIPT_V2)
    assert api.post(URL + "2/activate/", {}, format="json").json()["active"] is True
    rolled = api.post(URL + "1/activate/", {}, format="json")
    assert rolled.status_code == 200 and rolled.json()["version"] == 1
    acme.refresh_from_db()
    assert acme.active_version.number == 1
    actions = list(AuditEvent.objects.filter(tenant=acme, action__startswith="script.")
                   .order_by("id").values_list("action", flat=True))
    assert actions[-2:] == ["script.activate", "script.rollback"]
    listed = {v["version"]: v["active"] for v in api.get(URL).json()}
    assert listed == {1: True, 2: False}
    assert_error(api.post(URL + "7/activate/", {}, format="json"), 404)


def test_activation_reruns_the_stored_tests(acme, api):
    publish(api, tests=PASSING_TESTS)
    # The backend now has a base path: the stored expectation on the upstream path fails.
    backend = acme.backends.get(name="users-v2")
    tenant_services.update_backend(actor=Actor(name="t"), backend=backend,
                                   url="http://10.0.0.2:9002/v2")
    body = assert_error(api.post(URL + "1/activate/", {}, format="json"), 422)
    assert "/v2/users/7" in str(body["test_results"])
    acme.refresh_from_db()
    assert acme.active_version is None
    forced = api.post(URL + "1/activate/", {"run_tests": False}, format="json")
    assert forced.status_code == 200 and forced.json()["active"]


def test_a_draft_cannot_be_activated_409(acme, api):
    draft, _ = script_services.publish_version(actor=Actor(name="admin"), tenant=acme,
                                               source=INVALID)
    assert not draft.valid
    body = assert_error(api.post(URL + f"{draft.number}/activate/", {}, format="json"), 409,
                        "conflict")
    assert "draft" in body["detail"]


def test_diff(acme, api):
    publish(api)
    publish(api, source=SCRIPT_V2)
    body = api.get(URL + "2/diff/?against=1").json()
    assert body["version"] == 2 and body["against"] == 1
    assert '-  return respond(200, "hello "' in body["diff"]
    assert '+  return respond(200, "hi "' in body["diff"]
    assert body["diff"].startswith("--- acme/v1\n+++ acme/v2\n")
    # Default: against the active version; nothing active: against an empty script.
    assert api.get(URL + "2/diff/").json()["against"] is None
    api.post(URL + "1/activate/", {}, format="json")
    assert api.get(URL + "2/diff/").json()["against"] == 1
    assert api.get(URL + "1/diff/").json()["diff"] == ""
    assert_error(api.get(URL + "2/diff/?against=5"), 404)
    assert_error(api.get(URL + "2/diff/?against=x"), 400)


def test_validate_compiles_and_runs_tests_without_storing(acme, api):
    response = api.post(URL + "validate/", {"source": SCRIPT,
                                            "tests": PASSING_TESTS + FAILING_TESTS},
                        format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is True and body["errors"] == [] and body["is_selector"] is False
    assert len(body["routes"]) == 3
    assert [t["passed"] for t in body["tests"]] == [True, True, False]
    invalid = api.post(URL + "validate/", {"source": INVALID}, format="json").json()
    assert invalid["valid"] is False and invalid["errors"][0]["line"] in (2, 3)
    assert not ScriptVersion.objects.exists()
