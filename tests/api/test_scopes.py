"""Scopes (read, write, activate) and tenant scoping: another tenant is a 404."""

from __future__ import annotations

import pytest

from luascripts import services as script_services
from luascripts.models import ScriptVersion
from tenants.audit import Actor
from tenants.models import AuditEvent, Backend, Tenant

from .conftest import PASSING_TESTS, SCRIPT, assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture
def v1(acme):
    version, _ = script_services.publish_version(actor=Actor(name="t"), tenant=acme,
                                                 source=SCRIPT)
    return version


def test_read_scope_reads_validates_simulates_but_never_writes(acme, v1, make_key, client_for):
    client = client_for(make_key("read"))
    assert client.get("/api/v1/tenants/acme/").status_code == 200
    assert client.get("/api/v1/tenants/acme/scripts/1/").status_code == 200
    assert client.post("/api/v1/tenants/acme/scripts/validate/",
                       {"source": SCRIPT}, format="json").status_code == 200
    assert client.post("/api/v1/tenants/acme/simulate/",
                       {"path": "/hello", "version": 1}, format="json").status_code == 200
    assert client.post("/api/v1/tenants/acme/config/",
                       {"document": {"tenant": {"name": "Other"}}, "dry_run": True},
                       format="json").status_code == 200
    for method, url, body in [
        ("post", "/api/v1/tenants/", {"slug": "x", "name": "X", "domains": ["x.example"]}),
        ("patch", "/api/v1/tenants/acme/", {"name": "Renamed"}),
        ("delete", "/api/v1/tenants/acme/", None),
        ("post", "/api/v1/tenants/acme/backends/", {"name": "b", "url": "http://b"}),
        ("delete", "/api/v1/tenants/acme/backends/users-v1/", None),
        ("post", "/api/v1/tenants/acme/scripts/", {"source": SCRIPT + "\n"}),
        ("post", "/api/v1/tenants/acme/scripts/1/activate/", {}),
        ("post", "/api/v1/tenants/acme/config/", {"document": {"tenant": {"name": "Other"}}}),
    ]:
        response = getattr(client, method)(url, body, format="json")
        assert_error(response, 403, "permission_denied")
    acme.refresh_from_db()
    assert acme.name == "Acme" and acme.active_version is None
    assert Backend.objects.filter(tenant=acme).count() == 2


def test_write_without_activate_publishes_but_cannot_activate(acme, v1, make_key, client_for):
    client = client_for(make_key("read,write"))
    published = client.post("/api/v1/tenants/acme/scripts/",
                            {"source": SCRIPT + "-- two\n"}, format="json")
    assert published.status_code == 201
    body = assert_error(client.post("/api/v1/tenants/acme/scripts/",
                                    {"source": SCRIPT + "-- three\n", "activate": True},
                                    format="json"), 403)
    assert "activate" in body["detail"]
    assert not ScriptVersion.objects.filter(number=3).exists()
    assert_error(client.post("/api/v1/tenants/acme/scripts/1/activate/", {}, format="json"),
                 403)
    doc = {"script": {"source": SCRIPT}}
    assert_error(client.post("/api/v1/tenants/acme/config/", {"document": doc},
                             format="json"), 403)
    acme.refresh_from_db()
    assert acme.active_version is None


def test_activate_only_key_activates(acme, v1, make_key, client_for):
    client = client_for(make_key("activate"))
    assert client.post("/api/v1/tenants/acme/scripts/1/activate/", {},
                       format="json").status_code == 200
    assert_error(client.get("/api/v1/tenants/acme/"), 403)


def test_a_key_for_one_tenant_gets_404_on_another(acme, globex, make_key, client_for):
    client = client_for(make_key(tenants=[acme]))
    assert [t["slug"] for t in client.get("/api/v1/tenants/").json()] == ["acme"]
    for method, url, body in [
        ("get", "/api/v1/tenants/globex/", None),
        ("patch", "/api/v1/tenants/globex/", {"name": "Mine now"}),
        ("delete", "/api/v1/tenants/globex/", None),
        ("get", "/api/v1/tenants/globex/backends/", None),
        ("get", "/api/v1/tenants/globex/backends/stable/", None),
        ("post", "/api/v1/tenants/globex/backends/", {"name": "x", "url": "http://x"}),
        ("get", "/api/v1/tenants/globex/scripts/", None),
        ("post", "/api/v1/tenants/globex/scripts/", {"source": SCRIPT}),
        ("post", "/api/v1/tenants/globex/scripts/validate/", {"source": SCRIPT}),
        ("post", "/api/v1/tenants/globex/simulate/", {"path": "/globex/x"}),
        ("get", "/api/v1/tenants/globex/config/", None),
        ("post", "/api/v1/tenants/globex/config/", {"document": {}}),
    ]:
        response = getattr(client, method)(url, body, format="json")
        assert_error(response, 404, "not_found")
    # Same answer as a tenant that does not exist at all.
    assert_error(client.get("/api/v1/tenants/nobody/"), 404, "not_found")
    globex.refresh_from_db()
    assert globex.name == "Globex" and not ScriptVersion.objects.filter(tenant=globex).exists()


def test_a_tenant_scoped_key_cannot_create_tenants(acme, make_key, client_for):
    client = client_for(make_key(tenants=[acme]))
    body = assert_error(client.post("/api/v1/tenants/",
                                    {"slug": "new", "name": "N", "domains": ["n.example"]},
                                    format="json"), 403)
    assert "all tenants" in body["detail"]
    assert not Tenant.objects.filter(slug="new").exists()


def test_writes_are_audited_with_the_key_name(acme, make_key, client_for):
    client = client_for(make_key(name="deploy-bot"))
    client.patch("/api/v1/tenants/acme/", {"name": "Acme Inc"}, format="json")
    client.post("/api/v1/tenants/acme/backends/", {"name": "extra", "url": "http://e:1"},
                format="json")
    client.post("/api/v1/tenants/acme/scripts/", {"source": SCRIPT, "activate": True,
                                                   "tests": PASSING_TESTS}, format="json")
    actions = set(AuditEvent.objects.filter(actor="apikey:deploy-bot")
                  .values_list("action", flat=True))
    assert {"tenant.update", "backend.create", "script.publish", "script.activate"} <= actions
