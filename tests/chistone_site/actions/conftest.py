"""Fixtures for the action layer: a tenant with two backends and a few script versions."""

from __future__ import annotations

import pytest

from tenants import services as tenant_services
from tenants.audit import Actor

ACTOR = Actor(name="ci")

V1 = """\
local function auth(req, next) return next(req) end
chi.use(auth)
chi.get("/v1/{rest:.*}", function(req) return proxy("a") end)
chi.get("/v2/{rest:.*}", function(req) return proxy("a") end)
"""
# The same routes moved down two lines, and /v2 sent to another backend through a mount.
V2 = """\


local function auth(req, next) return next(req) end
chi.use(auth)
chi.get("/v1/{rest:.*}", function(req) return proxy("a") end)
chi.mount("/v2", "b")
chi.get("/new", function(req) return respond(200, "new") end)
"""
TESTS = [{"name": "v1 goes to a", "request": {"path": "/v1/x"}, "expect": {"backend": "a"}}]
FAILING = [{"name": "v1 goes to b", "request": {"path": "/v1/x"}, "expect": {"backend": "b"}}]


@pytest.fixture
def shop(db):
    tenant = tenant_services.create_tenant(actor=ACTOR, slug="shop", name="Shop",
                                           domains=["shop.test"])
    tenant_services.create_backend(actor=ACTOR, tenant=tenant, name="a",
                                   url="http://127.0.0.1:9")
    tenant_services.create_backend(actor=ACTOR, tenant=tenant, name="b",
                                   url="http://127.0.0.1:10")
    tenant.refresh_from_db()
    return tenant
