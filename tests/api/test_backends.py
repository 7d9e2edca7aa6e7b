"""tenants/{slug}/backends/ and tenants/{slug}/backends/{name}/."""

from __future__ import annotations

import pytest

from tenants.models import AuditEvent, Backend

from .conftest import assert_error

pytestmark = pytest.mark.django_db
URL = "/api/v1/tenants/acme/backends/"


def test_list_and_get(acme, api):
    listed = api.get(URL).json()
    assert [b["name"] for b in listed] == ["users-v1", "users-v2"]
    one = api.get(URL + "users-v1/").json()
    assert {k: one[k] for k in ("name", "url", "weight", "enabled", "health_check_path",
                                "connect_timeout_ms", "read_timeout_ms")} == {
        "name": "users-v1", "url": "http://10.0.0.1:9001", "weight": 1, "enabled": True,
        "health_check_path": "", "connect_timeout_ms": 2000, "read_timeout_ms": 30000}


def test_create_update_delete(acme, api):
    created = api.post(URL, {"name": "legacy", "url": "HTTP://Legacy.Internal:8080/base/",
                             "weight": 3, "health_check_path": "/healthz"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["url"] == "http://legacy.internal:8080/base"
    acme.refresh_from_db()
    version = acme.config_version
    patched = api.patch(URL + "legacy/", {"enabled": False, "read_timeout_ms": 5000},
                        format="json")
    assert patched.status_code == 200
    assert (patched.json()["enabled"], patched.json()["weight"]) == (False, 3)
    acme.refresh_from_db()
    assert acme.config_version == version + 1
    put = api.put(URL + "legacy/", {"name": "legacy", "url": "http://legacy:1"},
                  format="json")
    assert put.status_code == 200 and put.json()["weight"] == 1 and put.json()["enabled"]
    assert api.delete(URL + "legacy/").status_code == 204
    assert not Backend.objects.filter(name="legacy").exists()
    actions = list(AuditEvent.objects.filter(object_type="tenants.backend", tenant=acme)
                   .values_list("action", flat=True))
    assert actions.count("backend.update") == 2 and "backend.delete" in actions


@pytest.mark.parametrize("payload, field", [
    ({"name": "x", "url": "ftp://files"}, "url"),
    ({"name": "x", "url": "http://user:pw@host"}, "url"),
    ({"name": "Bad Name", "url": "http://h"}, "name"),
    ({"name": "x", "url": "http://h", "weight": -1}, "weight"),
    ({"name": "x", "url": "http://h", "connect_timeout_ms": 0}, "connect_timeout_ms"),
    ({"name": "x", "url": "http://h", "weight": "heavy"}, "weight"),
    ({"name": "x"}, "url"),
])
def test_invalid_backends_are_400(acme, api, payload, field):
    body = assert_error(api.post(URL, payload, format="json"), 400, "invalid")
    assert field in body["fields"], body


def test_duplicate_name_is_409_and_unknown_is_404(acme, api):
    assert_error(api.post(URL, {"name": "users-v1", "url": "http://x"}, format="json"), 409,
                 "conflict")
    assert_error(api.patch(URL + "users-v1/", {"name": "users-v2"}, format="json"), 409)
    assert_error(api.get(URL + "nope/"), 404, "not_found")
    assert_error(api.get("/api/v1/tenants/nobody/backends/"), 404)
