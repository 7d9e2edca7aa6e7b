"""tenants/{slug}/config/: dump, plan, apply in one transaction, idempotence, If-Match."""

from __future__ import annotations

import pytest

from luascripts.models import ScriptVersion
from tenants.models import AuditEvent, Backend

from .conftest import PASSING_TESTS, SCRIPT, assert_error

pytestmark = pytest.mark.django_db
URL = "/api/v1/tenants/acme/config/"

DOCUMENT = {
    "tenant": {"slug": "acme", "name": "Acme Corp", "domains": ["ACME.example.com", "a2.example"],
               "path_prefix": "", "active": True},
    "backends": [
        {"name": "users-v1", "url": "http://10.0.0.1:9001", "weight": 2},
        {"name": "users-v2", "url": "http://10.0.0.2:9002/"},
        {"name": "legacy", "url": "http://10.0.0.9:80", "enabled": False},
    ],
    "script": {"source": SCRIPT, "message": "from git", "tests": PASSING_TESTS},
}


def apply(api, document=DOCUMENT, if_match=None, **extra):
    headers = {"HTTP_IF_MATCH": if_match} if if_match is not None else {}
    return api.post(URL, {"document": document, **extra}, format="json", **headers)


def test_dump_is_a_document_with_an_etag(acme, api):
    response = api.get(URL)
    assert response.status_code == 200
    body = response.json()
    assert response["ETag"] == f'"{acme.config_version}"'
    assert body["tenant"] == {"slug": "acme", "name": "Acme", "domains": ["acme.example.com"],
                              "path_prefix": "", "active": True,
                              "max_request_body_bytes": None, "max_response_body_bytes": None}
    assert [b["name"] for b in body["backends"]] == ["users-v1", "users-v2"]
    assert body["script"] is None and body["config_version"] == acme.config_version


def test_dry_run_plans_without_changing_anything(acme, api):
    events = AuditEvent.objects.count()
    body = apply(api, dry_run=True).json()
    assert body["dry_run"] is True and body["applied"] is False and body["changed"] is True
    assert {(c["kind"], c["name"]) for c in body["created"]} >= {("backend", "legacy")}
    kinds = {c["kind"] for c in body["updated"]}
    assert {"tenant", "backend", "script"} <= kinds
    assert all(t["passed"] for t in body["test_results"])
    assert AuditEvent.objects.count() == events
    assert not Backend.objects.filter(name="legacy").exists()
    assert not ScriptVersion.objects.exists()


def test_apply_then_apply_again_changes_nothing(acme, api):
    first = apply(api)
    assert first.status_code == 200, first.content
    body = first.json()
    assert body["applied"] is True
    acme.refresh_from_db()
    assert acme.name == "Acme Corp" and acme.domains == ["a2.example", "acme.example.com"]
    assert acme.active_version.number == 1 and acme.active_version.message == "from git"
    assert Backend.objects.get(tenant=acme, name="users-v1").weight == 2
    assert not Backend.objects.get(tenant=acme, name="legacy").enabled
    assert first["ETag"] == f'"{acme.config_version}"'
    assert AuditEvent.objects.filter(actor__startswith="apikey:").count() >= 5

    events, version = AuditEvent.objects.count(), acme.config_version
    second = apply(api).json()
    assert second["changed"] is False and second["applied"] is False
    assert second["created"] == second["updated"] == second["deleted"] == []
    acme.refresh_from_db()
    assert acme.config_version == version and AuditEvent.objects.count() == events
    # And the dump of the result applies as a no-op too.
    dumped = api.get(URL).json()
    assert apply(api, dumped).json()["changed"] is False


def test_prune_deletes_what_the_document_leaves_out(acme, api):
    apply(api)
    doc = {"backends": [{"name": "users-v2", "url": "http://10.0.0.2:9002"}],
           "script": {"source": SCRIPT}}
    kept = apply(api, doc).json()
    assert kept["deleted"] == []
    pruned = apply(api, doc, prune=True).json()
    assert {c["name"] for c in pruned["deleted"]} == {"users-v1", "legacy"}
    assert list(Backend.objects.filter(tenant=acme).values_list("name", flat=True)) == [
        "users-v2"]
    deactivated = apply(api, {"script": None}, prune=True).json()
    assert deactivated["deleted"][0]["kind"] == "script"
    acme.refresh_from_db()
    assert acme.active_version is None


def test_if_match_guards_against_a_concurrent_change(acme, api):
    etag = api.get(URL)["ETag"]
    api.patch("/api/v1/tenants/acme/", {"name": "Changed meanwhile"}, format="json")
    body = assert_error(apply(api, if_match=etag), 412, "precondition_failed")
    assert "changed since" in body["detail"]
    acme.refresh_from_db()
    assert acme.name == "Changed meanwhile" and not ScriptVersion.objects.exists()
    fresh = api.get(URL)["ETag"]
    assert apply(api, if_match=fresh).status_code == 200
    assert_error(apply(api, if_match='"abc"'), 412)


def test_failing_tests_apply_nothing(acme, api):
    doc = {**DOCUMENT, "script": {"source": SCRIPT, "tests": [
        {"name": "wrong", "request": {"path": "/users/1"}, "expect": {"backend": "legacy"}}]}}
    body = assert_error(apply(api, doc), 422, "unprocessable")
    assert body["test_results"][0]["passed"] is False
    acme.refresh_from_db()
    assert acme.name == "Acme" and not Backend.objects.filter(name="legacy").exists()
    assert not ScriptVersion.objects.exists()


def test_the_script_is_checked_against_the_planned_backends(acme, api):
    doc = {"backends": [{"name": "old-app", "url": "http://o:1"}],
           "script": {"source": 'chi.mount("/old", "old-app")\n'}}
    assert apply(api, doc).status_code == 200
    bad = {"script": {"source": 'chi.mount("/x", "ghost")\n'}}
    body = assert_error(apply(api, bad), 400, "invalid")
    assert "ghost" in str(body["errors"])


def test_mismatched_or_malformed_documents_are_400(acme, api):
    assert_error(apply(api, {"tenant": {"slug": "globex"}}), 400)
    assert_error(apply(api, {"backends": [{"name": "a", "url": "http://a"},
                                          {"name": "a", "url": "http://b"}]}), 400)
    assert_error(apply(api, {"backends": [{"name": "x", "url": "gopher://x"}]}), 400)
    assert_error(api.post(URL, {"dry_run": True}, format="json"), 400)
    assert not Backend.objects.filter(name="x").exists()


def test_an_oversized_script_is_413(acme, api):
    assert_error(apply(api, {"script": {"source": "--" + "z" * 300_000}}), 413)
