"""The tenant page: writes through the services, refusals as form errors, overview sections."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tenants import services
from tenants.errors import Conflict
from tenants.models import AuditEvent, Backend, Tenant

from .conftest import GOOD2

pytestmark = pytest.mark.django_db


def backend_rows(*rows, initial=0, prefix="backends"):
    data = {f"{prefix}-TOTAL_FORMS": str(len(rows)), f"{prefix}-INITIAL_FORMS": str(initial),
            f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"}
    for index, row in enumerate(rows):
        values = {"weight": 1, "enabled": "on", "health_check_path": "",
                  "connect_timeout_ms": 2000, "read_timeout_ms": 30000, **row}
        for key, value in values.items():
            if value is not None:
                data[f"{prefix}-{index}-{key}"] = value
    return data


def test_create_a_tenant_with_a_backend_through_the_services(su_client):
    response = su_client.post(reverse("admin:tenants_tenant_add"), {
        "slug": "initech", "name": "Initech", "active": "on",
        "domains": "Initech.example.com\napi.initech.example.com", "path_prefix": "",
        **backend_rows({"name": "legacy", "url": "http://127.0.0.1:9100"})})
    assert response.status_code == 302
    tenant = Tenant.objects.get(slug="initech")
    # Normalised by the services: sorted, lower-case, host claims in step.
    assert tenant.domains == ["api.initech.example.com", "initech.example.com"]
    assert sorted(tenant.claims.values_list("host", flat=True)) == tenant.domains
    assert Backend.objects.get(tenant=tenant).url == "http://127.0.0.1:9100"
    actions = list(AuditEvent.objects.filter(tenant_slug="initech").values_list("action",
                                                                                flat=True))
    assert sorted(actions) == ["backend.create", "tenant.create"]
    assert AuditEvent.objects.filter(tenant_slug="initech").first().actor == "root"


def test_a_claimed_host_is_a_form_error_and_nothing_is_saved(su_client, acme):
    before = AuditEvent.objects.count()
    response = su_client.post(reverse("admin:tenants_tenant_add"), {
        "slug": "copycat", "name": "Copycat", "active": "on", "domains": "acme.example.com",
        "path_prefix": "", **backend_rows({"name": "x", "url": "http://127.0.0.1:9100"})})
    assert response.status_code == 200
    form = response.context["adminform"].form
    # A superuser sees every tenant, so the message may name the other one.
    assert form.errors["domains"] == [
        "Another tenant (tenant 'acme') already answers for host 'acme.example.com' with "
        "prefix '/'."]
    assert not Tenant.objects.filter(slug="copycat").exists()
    assert not Backend.objects.filter(name="x").exists()
    assert AuditEvent.objects.count() == before


def test_a_clash_never_names_a_tenant_the_operator_cannot_see(op_client, system):
    services.create_tenant(actor=system, slug="zeta", name="Zeta", domains=["shop.example.com"])
    response = op_client.post(reverse("admin:tenants_tenant_add"), {
        "slug": "shop", "name": "Shop", "active": "on", "domains": "shop.example.com",
        "path_prefix": "", **backend_rows()})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["domains"] == [
        "Another tenant already answers for host 'shop.example.com' with prefix '/'."]
    assert b"zeta" not in response.content.lower()
    # The service says the same, whoever calls it (the API, the CLI).
    with pytest.raises(Conflict) as refused:
        services.create_tenant(actor=system, slug="shop", name="Shop",
                               domains=["shop.example.com"])
    assert "zeta" not in refused.value.message


def test_every_error_of_the_page_shows_at_once_and_each_once(su_client, acme):
    response = su_client.post(reverse("admin:tenants_tenant_add"), {
        "slug": "Not A Slug", "name": "X", "active": "on",
        "domains": "acme.example.com\nbad_host!", "path_prefix": "",
        **backend_rows({"name": "api", "url": "ftp://127.0.0.1/"})})
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert "slug" in form.errors
    assert any("bad_host!" in e for e in form.errors["domains"])
    row = response.context["inline_admin_formsets"][0].formset.forms[0]
    assert row.errors["url"] == ["'ftp://127.0.0.1/': only http:// and https:// backends are "
                                 "supported."]
    assert response.content.decode().count("only http:// and https:// backends") == 1
    # Fix the slug and the host: the clash with acme is the next error, not a new round of
    # the old ones.
    response = su_client.post(reverse("admin:tenants_tenant_add"), {
        "slug": "copycat", "name": "X", "active": "on", "domains": "acme.example.com",
        "path_prefix": "", **backend_rows({"name": "api", "url": "http://127.0.0.1:9"})})
    assert list(response.context["adminform"].form.errors) == ["domains"]


def test_saving_unchanged_domains_logs_no_domain_change(su_client, acme):
    from django.contrib.admin.models import LogEntry

    existing = Backend.objects.get(tenant=acme)
    su_client.post(reverse("admin:tenants_tenant_change", args=[acme.pk]), {
        "slug": "acme", "name": "Acme 2", "active": "on", "domains": "acme.example.com\r\n",
        "path_prefix": "", **backend_rows({"id": existing.pk, "tenant": acme.pk,
                                            "name": "api", "url": "http://127.0.0.1:9001"},
                                           initial=1)})
    message = LogEntry.objects.latest("id").get_change_message()
    assert "Name" in message and "Domains" not in message


def test_a_refused_backend_row_shows_its_error_and_rolls_back_the_tenant_change(su_client,
                                                                              acme):
    existing = Backend.objects.get(tenant=acme)
    response = su_client.post(reverse("admin:tenants_tenant_change", args=[acme.pk]), {
        "slug": "acme", "name": "Acme renamed", "active": "on",
        "domains": "acme.example.com", "path_prefix": "",
        **backend_rows({"id": existing.pk, "tenant": acme.pk, "name": "api",
                        "url": "http://127.0.0.1:9001"},
                       {"name": "bad", "url": "ftp://127.0.0.1/"}, initial=1)})
    assert response.status_code == 200
    formset = response.context["inline_admin_formsets"][0].formset
    assert formset.forms[1].errors  # the row with the ftp URL
    acme.refresh_from_db()
    assert acme.name == "Acme"  # the whole save was rolled back
    assert not Backend.objects.filter(name="bad").exists()


def test_a_service_refusal_after_validation_lands_on_its_inline_row(su_client, acme, system,
                                                                    monkeypatch):
    """A refusal only the service can know (a race, a rule of its own) is still a form error."""
    from tenants import services
    from tenants.errors import Conflict

    def refuse(**kwargs):
        raise Conflict("Tenant 'acme' already has a backend named 'api2'.",
                       detail={"name": ["Already taken."]})

    monkeypatch.setattr(services, "create_backend", refuse)
    response = su_client.post(reverse("admin:tenants_tenant_change", args=[acme.pk]), {
        "slug": "acme", "name": "Acme", "active": "on", "domains": "acme.example.com",
        "path_prefix": "", **backend_rows({"name": "api2", "url": "http://127.0.0.1:9003"})})
    assert response.status_code == 200
    row = response.context["inline_admin_formsets"][0].formset.forms[0]
    assert "already has a backend named 'api2'" in " ".join(row.non_field_errors())
    assert row.errors["name"] == ["Already taken."]


def test_edit_and_delete_backends_inline(su_client, acme):
    existing = Backend.objects.get(tenant=acme)
    response = su_client.post(reverse("admin:tenants_tenant_change", args=[acme.pk]), {
        "slug": "acme", "name": "Acme", "active": "on", "domains": "acme.example.com",
        "path_prefix": "",
        **backend_rows({"id": existing.pk, "tenant": acme.pk, "name": "api",
                        "url": "http://127.0.0.1:9001", "weight": 5},
                       {"name": "api2", "url": "http://127.0.0.1:9003"}, initial=1)})
    assert response.status_code == 302
    existing.refresh_from_db()
    assert existing.weight == 5
    assert AuditEvent.objects.filter(action="backend.update").latest("id").detail == {
        "changes": {"weight": [1, 5]}}
    api2 = Backend.objects.get(tenant=acme, name="api2")
    response = su_client.post(reverse("admin:tenants_tenant_change", args=[acme.pk]), {
        "slug": "acme", "name": "Acme", "active": "on", "domains": "acme.example.com",
        "path_prefix": "",
        **backend_rows({"id": existing.pk, "tenant": acme.pk, "name": "api",
                        "url": "http://127.0.0.1:9001", "weight": 5},
                       {"id": api2.pk, "tenant": acme.pk, "name": "api2",
                        "url": "http://127.0.0.1:9003", "DELETE": "on"}, initial=2)})
    assert response.status_code == 302
    assert not Backend.objects.filter(pk=api2.pk).exists()
    assert AuditEvent.objects.filter(action="backend.delete", tenant_slug="acme").exists()


def test_invalid_domain_is_a_field_error(su_client):
    response = su_client.post(reverse("admin:tenants_tenant_add"), {
        "slug": "x1", "name": "X", "domains": "bad_host!", "path_prefix": "",
        **backend_rows()})
    assert response.status_code == 200
    assert "domains" in response.context["adminform"].form.errors


def test_tenant_page_shows_active_version_and_route_table(su_client, acme, publish, activate):
    version = publish(acme, GOOD2, message="two routes")
    activate(acme, version)
    response = su_client.get(reverse("admin:tenants_tenant_change", args=[acme.pk]))
    content = response.content.decode()
    assert 'id="route-table"' in content
    assert "/users/{id}" in content and "/hello" in content
    assert "v1" in content and "two routes" in content
    assert 'id="tenant-health"' in content
    assert reverse("admin:luascripts_scriptversion_script", args=[acme.pk]) in content


def test_deleting_a_tenant_with_an_active_script(su_client, acme, publish, activate):
    activate(acme, publish(acme, GOOD2))
    url = reverse("admin:tenants_tenant_delete", args=[acme.pk])
    confirm = su_client.get(url)
    assert confirm.status_code == 200 and not confirm.context["protected"]
    response = su_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not Tenant.objects.filter(slug="acme").exists()
    assert AuditEvent.objects.filter(action="tenant.delete", tenant_slug="acme").exists()


def test_tenant_list_search_and_filters(su_client, acme, globex, publish, activate):
    activate(acme, publish(acme, GOOD2))
    url = reverse("admin:tenants_tenant_changelist")
    assert [t.slug for t in su_client.get(url, {"q": "acme.example"}).context["cl"]
            .result_list] == ["acme"]
    assert [t.slug for t in su_client.get(url, {"script": "no"}).context["cl"]
            .result_list] == ["globex"]
