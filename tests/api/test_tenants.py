"""tenants/ and tenants/{slug}/: list, create, get, patch, put, delete."""

from __future__ import annotations

import pytest

from tenants.models import AuditEvent, HostClaim, Tenant

from .conftest import assert_error

pytestmark = pytest.mark.django_db


def test_list_and_get(acme, globex, api):
    listed = api.get("/api/v1/tenants/").json()
    assert [t["slug"] for t in listed] == ["acme", "globex"]
    one = api.get("/api/v1/tenants/acme/").json()
    assert {k: one[k] for k in ("slug", "name", "domains", "path_prefix", "active",
                                "active_version")} == {
        "slug": "acme", "name": "Acme", "domains": ["acme.example.com"], "path_prefix": "",
        "active": True, "active_version": None}
    assert one["config_version"] >= 1


def test_create_normalises_and_audits(api):
    response = api.post("/api/v1/tenants/", {"slug": "initech", "name": "Initech",
                                             "domains": ["API.Initech.example.", "x.example"],
                                             "path_prefix": "tps/"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["domains"] == ["api.initech.example", "x.example"]
    assert body["path_prefix"] == "/tps"
    assert HostClaim.objects.filter(tenant__slug="initech").count() == 2
    assert AuditEvent.objects.filter(action="tenant.create", tenant_slug="initech",
                                     actor__startswith="apikey:").exists()


@pytest.mark.parametrize("payload, field", [
    ({"slug": "Bad Slug", "name": "x", "domains": ["a.example"]}, "slug"),
    ({"slug": "ok", "name": "x", "domains": ["not a host"]}, "domains"),
    ({"slug": "ok", "name": "x"}, "domains"),
    ({"slug": "ok", "name": "x", "domains": "a.example"}, "domains"),
    ({"name": "x", "domains": ["a.example"]}, "slug"),
    ({"slug": "ok", "name": "x", "path_prefix": "/a/../b"}, "path_prefix"),
])
def test_invalid_tenants_are_400_with_field_errors(api, payload, field):
    body = assert_error(api.post("/api/v1/tenants/", payload, format="json"), 400, "invalid")
    assert field in body["fields"], body
    assert not Tenant.objects.filter(slug="ok").exists()


def test_duplicates_and_claimed_hosts_are_409(acme, api):
    assert_error(api.post("/api/v1/tenants/", {"slug": "acme", "name": "Again",
                                               "domains": ["other.example"]}, format="json"),
                 409, "conflict")
    body = assert_error(api.post("/api/v1/tenants/", {"slug": "copycat", "name": "C",
                                                      "domains": ["acme.example.com"]},
                                 format="json"), 409, "conflict")
    assert "acme" in body["detail"]


def test_patch_changes_only_given_fields(acme, api):
    before = acme.config_version
    response = api.patch("/api/v1/tenants/acme/", {"name": "Acme Inc"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "Acme Inc" and body["domains"] == ["acme.example.com"]
    assert body["config_version"] == before + 1


def test_put_replaces_the_tenant(acme, api):
    response = api.put("/api/v1/tenants/acme/", {"slug": "acme", "name": "Acme",
                                                 "path_prefix": "/acme"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["domains"] == [] and response.json()["path_prefix"] == "/acme"
    assert list(HostClaim.objects.filter(tenant=acme).values_list("host", "path_prefix")) == [
        ("", "/acme")]
    assert_error(api.put("/api/v1/tenants/acme/", {"name": "no slug"}, format="json"), 400)


def test_rename_via_patch(acme, api):
    response = api.patch("/api/v1/tenants/acme/", {"slug": "acme2"}, format="json")
    assert response.status_code == 200 and response.json()["slug"] == "acme2"
    assert api.get("/api/v1/tenants/acme2/").status_code == 200
    assert_error(api.get("/api/v1/tenants/acme/"), 404)


def test_delete(acme, api):
    assert api.delete("/api/v1/tenants/acme/").status_code == 204
    assert not Tenant.objects.filter(slug="acme").exists()
    assert AuditEvent.objects.filter(action="tenant.delete", tenant_slug="acme").exists()
    assert_error(api.delete("/api/v1/tenants/acme/"), 404)
