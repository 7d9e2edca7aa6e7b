"""Fixtures for the API tests: keys with chosen scopes and reach, tenants, scripts."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from chistone_site.api import keys
from tenants import services as tenant_services
from tenants.audit import Actor

# A router with a mount, params, middleware, a respond and a reject: the contract of issue 3.
SCRIPT = """\
local function tag(req, next)
  req.headers["x-tagged"] = "yes"
  return next(req)
end

chi.use(tag)

chi.get("/users/{id:[0-9]+}", function(req)
  return proxy("users-v2", {path = "/users/" .. req.params.id,
                            set_headers = {["x-user"] = req.params.id}})
end)

chi.get("/hello", function(req)
  return respond(200, "hello " .. req.tenant, {["content-type"] = "text/plain"})
end)

chi.post("/admin", function(req)
  return reject(403, "no admin here")
end)
"""

SCRIPT_V2 = SCRIPT.replace("hello ", "hi ")

INVALID = 'chi.get("/x", function(req)\n  return respond(200, "x"\nend)\n'

PASSING_TESTS = [
    {"name": "users go to v2", "request": {"method": "GET", "path": "/users/7"},
     "expect": {"backend": "users-v2", "upstream_path": "/users/7",
                "route_pattern": "/users/{id:[0-9]+}", "headers": {"x-user": "7"}}},
    {"name": "hello answers", "request": {"path": "/hello"},
     "expect": {"status": 200, "body": "hello acme"}},
]
FAILING_TESTS = [
    {"name": "users go to v1", "request": {"path": "/users/7"},
     "expect": {"backend": "users-v1"}},
]


@pytest.fixture(autouse=True)
def _clear_throttle_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _no_login_throttle(settings):
    # force_login() has no request: django-axes would record an "unknown" client address.
    settings.AXES_ENABLED = False


@pytest.fixture
def acme(db):
    actor = Actor(name="fixture")
    tenant = tenant_services.create_tenant(actor=actor, slug="acme", name="Acme",
                                           domains=["acme.example.com"])
    tenant_services.create_backend(actor=actor, tenant=tenant, name="users-v1",
                                   url="http://10.0.0.1:9001")
    tenant_services.create_backend(actor=actor, tenant=tenant, name="users-v2",
                                   url="http://10.0.0.2:9002")
    tenant.refresh_from_db()
    return tenant


@pytest.fixture
def globex(db):
    actor = Actor(name="fixture")
    tenant = tenant_services.create_tenant(actor=actor, slug="globex", name="Globex",
                                           path_prefix="/globex")
    tenant_services.create_backend(actor=actor, tenant=tenant, name="stable",
                                   url="http://10.0.1.1:8080/base")
    tenant.refresh_from_db()
    return tenant


@pytest.fixture
def make_key(db):
    counter = iter(range(1, 1000))

    def make(scopes="read,write,activate", tenants=(), name=None, **kwargs):
        key, raw = keys.create_api_key(
            actor=Actor(name="fixture"), name=name or f"key-{next(counter)}", scopes=scopes,
            tenants=list(tenants), all_tenants=not tenants, **kwargs)
        return raw

    return make


@pytest.fixture
def client_for():
    def make(raw_key=None, scheme="Bearer"):
        client = APIClient()
        if raw_key is not None:
            client.credentials(HTTP_AUTHORIZATION=f"{scheme} {raw_key}")
        return client

    return make


@pytest.fixture
def api(make_key, client_for):
    """A client with an all-tenants key holding every scope."""
    return client_for(make_key(name="ci"))


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:500])
    body = response.json()
    assert {"error", "detail", "request_id"} <= set(body), body
    assert body["request_id"] and response["X-Request-ID"] == body["request_id"]
    if code is not None:
        assert body["error"] == code, body
    return body
