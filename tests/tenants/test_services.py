import pytest
from django.db import transaction

from tenants import events, services
from tenants.errors import Conflict, InvalidInput
from tenants.models import AuditEvent, Backend, ConfigState, HostClaim, Tenant

pytestmark = pytest.mark.django_db


def test_create_tenant_normalises_writes_claims_audit_and_bumps_generation(actor):
    before = ConfigState.objects.get(pk=1).generation
    tenant = services.create_tenant(actor=actor, slug="acme", name="Acme",
                                    domains=["API.Acme.com", "*.acme.dev"], path_prefix="shop/")
    assert tenant.domains == ["*.acme.dev", "api.acme.com"]
    assert tenant.path_prefix == "/shop"
    assert sorted(HostClaim.objects.values_list("host", "path_prefix")) == [
        ("*.acme.dev", "/shop"), ("api.acme.com", "/shop")]
    event = AuditEvent.objects.get()
    assert (event.actor, event.action, event.tenant_slug) == ("tester", "tenant.create", "acme")
    assert event.detail["domains"] == ["*.acme.dev", "api.acme.com"]
    assert ConfigState.objects.get(pk=1).generation == before + 1


def test_a_tenant_needs_a_domain_or_a_prefix(actor):
    with pytest.raises(InvalidInput, match="at least one domain or a path prefix"):
        services.create_tenant(actor=actor, slug="nowhere", name="Nowhere")
    assert not Tenant.objects.exists()
    assert not AuditEvent.objects.exists()


def test_two_tenants_cannot_claim_the_same_host_and_prefix(actor, tenant_factory):
    tenant_factory("acme", domains=["api.example.com"], path_prefix="/v1")
    with pytest.raises(Conflict, match="Another tenant already answers for host 'api.example.com'"):
        tenant_factory("globex", domains=["API.example.com"], path_prefix="/v1/")
    # Same host, different prefix, and same prefix on another host are both fine.
    tenant_factory("globex", domains=["api.example.com"], path_prefix="/v2")
    tenant_factory("initech", domains=["other.example.com"], path_prefix="/v1")
    assert Tenant.objects.count() == 3
    assert AuditEvent.objects.filter(action="tenant.create").count() == 3


def test_prefix_only_tenants_collide_on_the_prefix(actor, tenant_factory):
    tenant_factory("acme", path_prefix="/acme")
    with pytest.raises(Conflict, match="any host"):
        tenant_factory("acme2", path_prefix="/acme")


def test_duplicate_slug_is_a_conflict(tenant_factory):
    tenant_factory("acme")
    with pytest.raises(Conflict, match="slug 'acme' already exists"):
        tenant_factory("acme", domains=["x.example.com"])


@pytest.mark.parametrize(
    "kwargs, field",
    [({"slug": "Bad Slug"}, "slug"), ({"domains": ["a b"]}, "domains"),
     ({"path_prefix": "/a/../b"}, "path_prefix"), ({"name": "  "}, "name")],
)
def test_invalid_tenant_fields_are_reported_per_field(actor, kwargs, field):
    values = {"slug": "ok", "name": "Ok", "domains": ["ok.example.com"], **kwargs}
    with pytest.raises(InvalidInput) as exc:
        services.create_tenant(actor=actor, **values)
    assert field in exc.value.detail
    assert not Tenant.objects.exists()


def test_update_tenant_moves_claims_and_audits_the_diff(actor, tenant_factory):
    tenant = tenant_factory("acme", domains=["a.example.com"])
    version_before = tenant.config_version
    updated = services.update_tenant(actor=actor, tenant=tenant, domains=["b.example.com"],
                                     name="Acme Inc")
    assert list(HostClaim.objects.values_list("host", flat=True)) == ["b.example.com"]
    assert updated.config_version == version_before + 1
    event = AuditEvent.objects.filter(action="tenant.update").get()
    assert event.detail["changes"]["domains"] == [["a.example.com"], ["b.example.com"]]
    assert event.detail["changes"]["name"] == ["Acme", "Acme Inc"]


def test_update_that_collides_rolls_back_everything(actor, tenant_factory):
    tenant_factory("acme", domains=["a.example.com"])
    globex = tenant_factory("globex", domains=["g.example.com"])
    events_before = AuditEvent.objects.count()
    with pytest.raises(Conflict):
        services.update_tenant(actor=actor, tenant=globex, domains=["a.example.com"],
                               name="Changed")
    globex.refresh_from_db()
    assert globex.name == "Globex"
    assert globex.domains == ["g.example.com"]
    assert list(globex.claims.values_list("host", flat=True)) == ["g.example.com"]
    assert AuditEvent.objects.count() == events_before


def test_update_without_changes_writes_nothing(actor, tenant_factory):
    tenant = tenant_factory("acme")
    count = AuditEvent.objects.count()
    services.update_tenant(actor=actor, tenant=tenant, name="Acme")
    assert AuditEvent.objects.count() == count


def test_backends_validated_unique_per_tenant_and_audited(actor, tenant_factory):
    acme = tenant_factory("acme")
    globex = tenant_factory("globex")
    backend = services.create_backend(actor=actor, tenant=acme, name="api",
                                      url="HTTP://127.0.0.1:9000/base/", weight=3)
    assert backend.url == "http://127.0.0.1:9000/base"
    services.create_backend(actor=actor, tenant=globex, name="api", url="http://127.0.0.1:9001")
    with pytest.raises(Conflict, match="already has a backend named 'api'"):
        services.create_backend(actor=actor, tenant=acme, name="api", url="http://127.0.0.1:9002")
    with pytest.raises(InvalidInput) as exc:
        services.create_backend(actor=actor, tenant=acme, name="other", url="ftp://x", weight=-1)
    assert set(exc.value.detail) == {"url", "weight"}
    assert Backend.objects.count() == 2
    assert AuditEvent.objects.filter(action="backend.create").count() == 2


def test_backend_update_and_delete_bump_the_tenant_config_version(actor, tenant_factory):
    acme = tenant_factory("acme")
    backend = services.create_backend(actor=actor, tenant=acme, name="api", url="http://h:1")
    acme.refresh_from_db()
    v = acme.config_version
    services.update_backend(actor=actor, backend=backend, enabled=False, read_timeout_ms=500)
    backend.refresh_from_db()
    assert (backend.enabled, backend.read_timeout_ms) == (False, 500)
    services.delete_backend(actor=actor, backend=backend)
    acme.refresh_from_db()
    assert acme.config_version == v + 2
    assert list(AuditEvent.objects.filter(tenant=acme).values_list("action", flat=True)[:2]) == [
        "backend.delete", "backend.update"]


def test_delete_tenant_keeps_the_audit_trail(actor, tenant_factory):
    tenant = tenant_factory("acme")
    services.delete_tenant(actor=actor, tenant=tenant)
    assert not Tenant.objects.exists()
    assert not HostClaim.objects.exists()
    assert set(AuditEvent.objects.values_list("tenant_slug", flat=True)) == {"acme"}
    assert AuditEvent.objects.filter(action="tenant.delete").exists()


@pytest.mark.django_db(transaction=True)
def test_listeners_hear_committed_changes_only(actor):
    heard = []

    def listener(generation, slugs):
        heard.append((generation, slugs))

    events.add_listener(listener)
    try:
        services.create_tenant(actor=actor, slug="acme", name="Acme", domains=["a.example.com"])
        assert len(heard) == 1 and heard[0][1] == frozenset({"acme"})
        with pytest.raises(RuntimeError), transaction.atomic():
            services.create_tenant(actor=actor, slug="globex", name="G", domains=["g.example.com"])
            raise RuntimeError("rolled back")
        assert len(heard) == 1
        assert not Tenant.objects.filter(slug="globex").exists()
        assert events.current_generation() == heard[0][0]
    finally:
        events.remove_listener(listener)


def test_a_failing_listener_does_not_undo_the_change(
    actor, caplog, django_capture_on_commit_callbacks
):
    def broken(generation, slugs):
        raise ValueError("boom")

    events.add_listener(broken)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            services.create_tenant(actor=actor, slug="acme", name="Acme", domains=["a.example.com"])
    finally:
        events.remove_listener(broken)
    assert Tenant.objects.filter(slug="acme").exists()
    assert "config listener" in caplog.text


def test_the_config_state_updated_at_moves_with_the_generation(actor, tenant_factory):
    from tenants.models import ConfigState

    tenant_factory("acme", domains=["acme.example.com"])
    first = ConfigState.objects.get(pk=1)
    tenant_factory("globex", domains=["globex.example.com"])
    second = ConfigState.objects.get(pk=1)
    assert second.generation == first.generation + 1
    assert second.updated_at > first.updated_at
