"""The control plane answers 503 with an actionable message when the database is unreachable."""

import json

import pytest
from django.db import OperationalError
from django.test import RequestFactory

from chistone_site.middleware import UNAVAILABLE_MESSAGE, DatabaseUnavailableMiddleware

pytestmark = pytest.mark.django_db


def test_api_requests_get_a_json_503_with_retry_after(client, monkeypatch):
    def down(*args, **kwargs):
        raise OperationalError('connection to server at "127.0.0.1", port 5432 failed')

    monkeypatch.setattr("chistone_site.api.authentication.ApiKeyAuthentication.authenticate",
                        down)
    response = client.post("/api/v1/tenants/", {"slug": "x"}, content_type="application/json",
                           HTTP_AUTHORIZATION="Bearer chs_whatever")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    body = response.json()
    assert body["error"] == "unavailable" and "keeps flowing" in body["detail"]
    assert body["request_id"]


def test_admin_pages_get_a_plain_503():
    middleware = DatabaseUnavailableMiddleware(lambda request: None)
    request = RequestFactory().get("/admin/tenants/tenant/")
    response = middleware.process_exception(request, OperationalError("could not connect"))
    assert response.status_code == 503 and response.content.decode() == UNAVAILABLE_MESSAGE
    assert middleware.process_exception(request, ValueError("other")) is None


def test_an_api_503_from_the_middleware_follows_the_request_id_rule():
    middleware = DatabaseUnavailableMiddleware(lambda request: None)
    outage = OperationalError("could not connect")
    kept = RequestFactory().get("/api/v1/tenants/", HTTP_X_REQUEST_ID="ci-run-42")
    response = middleware.process_exception(kept, outage)
    assert json.loads(response.content)["request_id"] == response["X-Request-ID"] == "ci-run-42"
    forged = RequestFactory().get("/api/v1/tenants/", HTTP_X_REQUEST_ID="x\r\nSet-Cookie: a")
    response = middleware.process_exception(forged, outage)
    assert json.loads(response.content)["request_id"] == response["X-Request-ID"]
    assert len(response["X-Request-ID"]) == 32
