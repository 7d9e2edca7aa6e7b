"""The audit log: read-only, filterable by tenant and by user."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tenants import services
from tenants.audit import Actor
from tenants.models import AuditEvent

pytestmark = pytest.mark.django_db

LIST = "admin:tenants_auditevent_changelist"


def test_filter_by_tenant_and_by_user(su_client, superuser, acme, globex):
    services.update_tenant(actor=Actor.for_user(superuser), tenant=acme, name="Acme Corp")
    everything = su_client.get(reverse(LIST)).context["cl"]
    assert {e.tenant_slug for e in everything.result_list} >= {"acme", "globex"}
    by_tenant = su_client.get(reverse(LIST), {"tenant": "globex"}).context["cl"]
    assert by_tenant.result_list and {e.tenant_slug for e in by_tenant.result_list} == {"globex"}
    by_user = su_client.get(reverse(LIST), {"actor": "root"}).context["cl"]
    assert [(e.action, e.tenant_slug) for e in by_user.result_list] == [
        ("tenant.update", "acme")]
    both = su_client.get(reverse(LIST), {"actor": "root", "tenant": "globex"}).context["cl"]
    assert list(both.result_list) == []
    filters = {f.title: f for f in everything.filter_specs}
    assert {"tenant", "user", "action"} <= set(filters)
    assert [slug for slug, _ in filters["user"].lookup_choices] == ["fixture", "root"]


def test_trail_of_a_deleted_tenant_stays_filterable(su_client, superuser, globex):
    services.delete_tenant(actor=Actor.for_user(superuser), tenant=globex)
    rows = su_client.get(reverse(LIST), {"tenant": "globex"}).context["cl"].result_list
    assert "tenant.delete" in [e.action for e in rows]


def test_operator_filters_only_offer_their_tenants(op_client, acme, globex):
    cl = op_client.get(reverse(LIST)).context["cl"]
    tenant_filter = next(f for f in cl.filter_specs if f.title == "tenant")
    assert [slug for slug, _ in tenant_filter.lookup_choices] == ["acme"]
    assert list(op_client.get(reverse(LIST), {"tenant": "globex"}).context["cl"]
                .result_list) == []


def test_the_audit_log_is_read_only(su_client, acme):
    event = AuditEvent.objects.filter(tenant_slug="acme").first()
    assert su_client.get(reverse("admin:tenants_auditevent_add")).status_code == 403
    response = su_client.get(reverse("admin:tenants_auditevent_change", args=[event.pk]))
    assert response.status_code == 200
    assert b'type="submit"' not in response.content.split(b'id="content-main"')[1]
    assert su_client.post(reverse("admin:tenants_auditevent_change", args=[event.pk]),
                          {"actor": "forged"}).status_code == 403
    assert su_client.post(reverse("admin:tenants_auditevent_delete", args=[event.pk]),
                          {"post": "yes"}).status_code == 403
    event.refresh_from_db()
    assert event.actor == "fixture"


def test_admin_writes_are_audited_with_the_operator_as_actor(op_client, operator, acme):
    from .test_tenant_admin import backend_rows

    op_client.post(reverse("admin:tenants_tenant_change", args=[acme.pk]), {
        "slug": "acme", "name": "Acme 2", "active": "on", "domains": "acme.example.com",
        "path_prefix": "", **backend_rows()})
    event = AuditEvent.objects.filter(action="tenant.update").latest("id")
    assert (event.actor, event.user_id, event.tenant_slug) == ("olga", operator.pk, "acme")
    assert event.detail == {"changes": {"name": ["Acme", "Acme 2"]}}
