"""Operators limited to some tenants see and change only those; the rest answers 404."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from tenants import access, services
from tenants.models import AuditEvent, Backend, OperatorAccess, Tenant

from .conftest import GOOD, OPERATOR_PERMS, grant

pytestmark = pytest.mark.django_db


def script_url(name, tenant, *args):
    return reverse(f"admin:luascripts_scriptversion_{name}", args=[tenant.pk, *args])


def test_tenant_list_shows_only_the_operators_tenants(op_client, acme, globex):
    response = op_client.get(reverse("admin:tenants_tenant_changelist"))
    assert response.status_code == 200
    slugs = [t.slug for t in response.context["cl"].result_list]
    assert slugs == ["acme"]
    assert b"globex" not in response.content


def test_superuser_sees_every_tenant(su_client, acme, globex):
    response = su_client.get(reverse("admin:tenants_tenant_changelist"))
    assert sorted(t.slug for t in response.context["cl"].result_list) == ["acme", "globex"]


@pytest.mark.parametrize("view,own", [("change", 200), ("history", 200), ("delete", 403)])
def test_another_tenants_pages_answer_404(op_client, acme, globex, view, own):
    # The operator may not delete tenants at all (403), but even that is 404 for globex.
    assert op_client.get(reverse(f"admin:tenants_tenant_{view}", args=[acme.pk])).status_code \
        == own
    assert op_client.get(reverse(f"admin:tenants_tenant_{view}", args=[globex.pk])).status_code \
        == 404


def test_missing_and_foreign_objects_look_the_same(op_client, globex):
    foreign = op_client.get(reverse("admin:tenants_tenant_change", args=[globex.pk]))
    missing = op_client.get(reverse("admin:tenants_tenant_change", args=[999999]))
    assert foreign.status_code == missing.status_code == 404


def test_another_tenants_backend_answers_404_and_cannot_be_changed(op_client, globex):
    backend = Backend.objects.get(tenant=globex)
    url = reverse("admin:tenants_backend_change", args=[backend.pk])
    assert op_client.get(url).status_code == 404
    response = op_client.post(url, {"name": "stolen", "url": "http://127.0.0.1:1"})
    assert response.status_code == 404
    backend.refresh_from_db()
    assert backend.name == "secret-backend"


def test_posting_a_change_to_another_tenant_changes_nothing(op_client, globex):
    response = op_client.post(reverse("admin:tenants_tenant_change", args=[globex.pk]),
                              {"slug": "globex", "name": "Owned", "path_prefix": "/globex"})
    assert response.status_code == 404
    globex.refresh_from_db()
    assert globex.name == "Globex"


def test_backend_tenant_choices_are_scoped(op_client, acme, globex):
    response = op_client.get(reverse("admin:tenants_backend_add"))
    choices = [label for value, label in response.context["adminform"].form.fields["tenant"]
               .choices if value]
    assert choices == ["acme"]


def test_adding_a_backend_to_another_tenant_is_refused(op_client, acme, globex):
    response = op_client.post(reverse("admin:tenants_backend_add"), {
        "tenant": globex.pk, "name": "sneaky", "url": "http://127.0.0.1:9009", "weight": 1,
        "enabled": "on", "connect_timeout_ms": 2000, "read_timeout_ms": 30000})
    assert response.status_code == 200  # the form again, with an error on "tenant"
    assert "tenant" in response.context["adminform"].form.errors
    assert not Backend.objects.filter(name="sneaky").exists()


def test_autocomplete_answers_only_visible_tenants(op_client, acme, globex):
    response = op_client.get(reverse("admin:autocomplete"), {
        "app_label": "tenants", "model_name": "backend", "field_name": "tenant", "term": ""})
    assert response.status_code == 200
    assert [r["text"] for r in json.loads(response.content)["results"]] == ["acme"]
    response = op_client.get(reverse("admin:autocomplete"), {
        "app_label": "tenants", "model_name": "backend", "field_name": "tenant",
        "term": "glo"})
    assert json.loads(response.content)["results"] == []


def test_raw_id_popup_lists_only_visible_tenants(op_client, acme, globex):
    response = op_client.get(reverse("admin:tenants_tenant_changelist"),
                             {"_popup": "1", "_to_field": "id"})
    assert response.status_code == 200
    assert [t.slug for t in response.context["cl"].result_list] == ["acme"]


def test_list_filters_offer_only_visible_tenants(op_client, operator, superuser, acme, globex,
                                                system):
    # Two visible tenants, so that the admin shows the filter at all.
    initech = services.create_tenant(actor=system, slug="initech", name="Initech",
                                     domains=["initech.example.com"])
    access.set_operator_tenants(actor=system, user=operator, tenants=[acme, initech])
    response = op_client.get(reverse("admin:tenants_backend_changelist"))
    assert [b.name for b in response.context["cl"].result_list] == ["api"]
    tenant_filter = next(f for f in response.context["cl"].filter_specs
                         if getattr(f, "field_path", "") == "tenant")
    assert [label for _, label in tenant_filter.lookup_choices] == ["acme", "initech"]
    assert b"globex" not in response.content
    # Asking for the hidden tenant's backends by filter shows nothing of it.
    response = op_client.get(reverse("admin:tenants_backend_changelist"),
                             {"tenant__id__exact": globex.pk})
    assert b"secret-backend" not in response.content


def test_script_version_filter_is_scoped(op_client, acme, globex, publish):
    publish(acme, GOOD)
    publish(globex, GOOD)
    response = op_client.get(reverse("admin:luascripts_scriptversion_changelist"))
    assert [v.tenant.slug for v in response.context["cl"].result_list] == ["acme"]
    assert b"globex" not in response.content


@pytest.mark.parametrize("name,args", [
    ("script", ()), ("diff", ()), ("version", (1,)), ("activate", (1,)), ("deactivate", ()),
])
def test_another_tenants_script_pages_answer_404(op_client, acme, globex, publish, name, args):
    publish(acme, GOOD)
    publish(globex, GOOD)
    assert op_client.get(script_url(name, acme, *args)).status_code == 200
    assert op_client.get(script_url(name, globex, *args)).status_code == 404


def test_publishing_into_another_tenant_is_404(op_client, globex):
    response = op_client.post(script_url("script", globex), {"source": GOOD, "message": "x"})
    assert response.status_code == 404
    assert not globex.versions.exists()


def test_audit_log_hides_other_tenants(op_client, acme, globex):
    response = op_client.get(reverse("admin:tenants_auditevent_changelist"))
    rows = response.context["cl"].result_list
    assert rows and {e.tenant_slug for e in rows} == {"acme"}
    foreign = AuditEvent.objects.filter(tenant_slug="globex").first()
    assert op_client.get(reverse("admin:tenants_auditevent_change", args=[foreign.pk])) \
        .status_code == 404


def test_staff_without_access_sees_no_tenant(client, acme, globex):
    user = get_user_model().objects.create_user("nobody", password="pw-nobody-1", is_staff=True)
    grant(user, *OPERATOR_PERMS)
    client.force_login(user)
    response = client.get(reverse("admin:tenants_tenant_changelist"))
    assert list(response.context["cl"].result_list) == []
    assert client.get(reverse("admin:tenants_tenant_change", args=[acme.pk])).status_code == 404


def test_a_tenant_an_operator_creates_stays_visible_to_them(op_client, operator, acme):
    response = op_client.post(reverse("admin:tenants_tenant_add"), {
        "slug": "initech", "name": "Initech", "active": "on", "domains": "initech.example.com",
        "path_prefix": "", **empty_backend_formset()})
    assert response.status_code == 302, response.context and response.context.get("errors")
    tenant = Tenant.objects.get(slug="initech")
    assert operator.operator_access.tenants.filter(pk=tenant.pk).exists()
    assert AuditEvent.objects.filter(action="access.grant", tenant_slug="initech").exists()


def test_operator_access_admin_is_for_superusers(op_client, operator, acme):
    assert op_client.get(reverse("admin:tenants_operatoraccess_changelist")).status_code == 403


def test_superuser_sets_operator_tenants_through_the_audited_service(
        client, superuser, operator, acme, globex):
    client.force_login(superuser)
    access = OperatorAccess.objects.get(user=operator)
    response = client.post(reverse("admin:tenants_operatoraccess_change", args=[access.pk]),
                           {"tenants": [acme.pk, globex.pk]})
    assert response.status_code == 302
    assert set(access.tenants.values_list("slug", flat=True)) == {"acme", "globex"}
    event = AuditEvent.objects.filter(action="access.update").latest("id")
    assert event.detail["added"] == ["globex"] and event.actor == "root"


def test_non_staff_are_sent_to_the_login_page(client, acme, db):
    user = get_user_model().objects.create_user("civilian", password="pw-civ-123")
    client.force_login(user)
    response = client.get(reverse("admin:tenants_tenant_changelist"))
    assert response.status_code == 302 and "/login/" in response["Location"]


def empty_backend_formset(prefix="backends"):
    return {f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0",
            f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"}
