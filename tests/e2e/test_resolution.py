"""Tenant resolution priorities through the real server."""

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(("host", "path", "tenant_backend", "upstream_path"), [
    ("api.test", "/billing/x", "hp", "/x"),  # host+prefix first
    ("API.test.:8080", "/billing/x", "hp", "/x"),  # host normalised
    ("api.test", "/billing", "hp", "/"),
    ("api.test", "/billingx", "h", "/billingx"),  # whole segments only
    ("api.test", "/other", "h", "/other"),  # then host-only
    ("eu.api.test", "/billing/x", "hpw", "/x"),  # wildcard + prefix
    ("eu.api.test", "/y", "hw", "/y"),  # wildcard host-only
    ("other.test", "/billing/v2/z", "p2", "/z"),  # prefix-only, longest first
    ("other.test", "/billing/z", "p", "/z"),
])
def test_priorities(client, host, path, tenant_backend, upstream_path):
    response = client.get(path, headers={"Host": host})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["backend"] == tenant_backend
    assert body["target"] == upstream_path


def test_unknown_tenant_is_json_404(client):
    response = client.get("/nothing", headers={"Host": "nobody.test"})
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "no_tenant"
    assert body["request_id"] == response.headers["x-request-id"]


def test_base_path_of_the_backend(client):
    response = client.get("/a/b?x=1", headers={"Host": "base.test"})
    assert response.json()["target"] == "/service/base/a/b?x=1"
