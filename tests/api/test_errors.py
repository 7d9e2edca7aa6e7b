"""The one error format and the status codes the handler maps (and throttling)."""

from __future__ import annotations

import pytest
from django.test import override_settings

from tenants.models import Tenant

from .conftest import SCRIPT, assert_error

pytestmark = pytest.mark.django_db


def test_malformed_json_is_400_parse_error(acme, api):
    response = api.generic("POST", "/api/v1/tenants/", "{not json",
                           content_type="application/json")
    assert_error(response, 400, "parse_error")


def test_unsupported_media_type_is_415(acme, api):
    response = api.generic("POST", "/api/v1/tenants/", "slug=x", content_type="text/csv")
    assert_error(response, 415, "unsupported_media_type")


def test_method_not_allowed_is_405(acme, api):
    assert_error(api.delete("/api/v1/tenants/"), 405, "method_not_allowed")
    assert_error(api.put("/api/v1/tenants/acme/scripts/validate/", {}, format="json"), 405)


def test_unknown_urls_are_404(api):
    assert_error(api.get("/api/v1/tenants/nobody/"), 404, "not_found")
    assert_error(api.get("/api/v1/tenants/nobody/scripts/1/"), 404)


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_a_request_body_over_django_limit_is_413(acme, api):
    body = assert_error(api.post("/api/v1/tenants/acme/scripts/", {"source": "--" + "x" * 2000},
                                 format="json"), 413, "too_large")
    assert body["detail"]


@override_settings(CHISTONE_API={"WRITE_RATE": "3/min"})
def test_writes_are_throttled_per_key(acme, make_key, client_for):
    first, second = client_for(make_key(name="busy")), client_for(make_key(name="calm"))
    url = "/api/v1/tenants/acme/scripts/validate/"
    for _ in range(3):
        assert first.post(url, {"source": SCRIPT}, format="json").status_code == 200
    response = first.post(url, {"source": SCRIPT}, format="json")
    assert_error(response, 429, "throttled")
    assert int(response["Retry-After"]) > 0
    # Reads are not throttled, and another key has its own budget.
    assert first.get("/api/v1/tenants/").status_code == 200
    assert second.post(url, {"source": SCRIPT}, format="json").status_code == 200


def test_unexpected_errors_are_json_500_without_details(acme, api, monkeypatch):
    from chistone_site.api import views

    def boom(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(views.tenant_services, "update_tenant", boom)
    body = assert_error(api.patch("/api/v1/tenants/acme/", {"name": "x"}, format="json"), 500,
                        "server_error")
    assert "secret" not in body["detail"]
    assert Tenant.objects.get(slug="acme").name == "Acme"
