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


def test_script_rows_link_to_the_version_and_its_diff(su_client, superuser, acme):
    from luascripts import services as scripts

    from .conftest import GOOD, GOOD2

    actor = Actor.for_user(superuser)
    v1, _ = scripts.publish_version(actor=actor, tenant=acme, source=GOOD)
    v2, _ = scripts.publish_version(actor=actor, tenant=acme, source=GOOD2)
    scripts.activate_version(actor=actor, tenant=acme, version=v1)
    scripts.activate_version(actor=actor, tenant=acme, version=v2)
    content = su_client.get(reverse(LIST), {"action": "script.activate"}).content.decode()
    version_url = reverse("admin:luascripts_scriptversion_version", args=[acme.pk, 2])
    diff_url = reverse("admin:luascripts_scriptversion_diff", args=[acme.pk])
    assert f'href="{version_url}"' in content
    assert f'href="{diff_url}?a=1&amp;b=2"' in content and "v1 &rarr; v2" in content
    assert "acme v2" in content  # the object, by tenant slug rather than a database id
    publish = su_client.get(reverse(LIST), {"action": "script.publish"}).content.decode()
    assert f'href="{diff_url}?a=1&amp;b=2"' in publish


def test_tenant_history_is_the_audit_log_with_script_events(su_client, superuser, acme):
    from luascripts import services as scripts

    from .conftest import GOOD

    actor = Actor.for_user(superuser)
    version, _ = scripts.publish_version(actor=actor, tenant=acme, source=GOOD)
    scripts.activate_version(actor=actor, tenant=acme, version=version)
    services.update_tenant(actor=actor, tenant=acme, name="Acme Corp")
    response = su_client.get(reverse("admin:tenants_tenant_history", args=[acme.pk]))
    content = response.content.decode()
    actions = [row for row in ("tenant.create", "backend.create", "script.publish",
                               "script.activate", "tenant.update") if
               f'data-action="{row}"' in content]
    assert actions == ["tenant.create", "backend.create", "script.publish",
                       "script.activate", "tenant.update"]
    assert "name: &#x27;Acme&#x27; → &#x27;Acme Corp&#x27;" in content
    assert "Changed domains" not in content
    assert reverse("admin:luascripts_scriptversion_version", args=[acme.pk, 1]) in content


def test_operator_cannot_read_the_history_of_another_tenant(op_client, globex):
    response = op_client.get(reverse("admin:tenants_tenant_history", args=[globex.pk]))
    assert response.status_code == 404  # like a tenant that does not exist
