"""Activate and roll back through confirmation pages that show the diff; audited."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from luascripts.services import mark_version_faulty
from tenants.audit import Actor
from tenants.models import AuditEvent, ConfigState

from .conftest import BAD, GOOD, GOOD2

pytestmark = pytest.mark.django_db


def url(name, tenant, *args):
    return reverse(f"admin:luascripts_scriptversion_{name}", args=[tenant.pk, *args])


def test_activation_asks_for_confirmation_with_the_diff(op_client, acme, publish):
    publish(acme, GOOD)
    response = op_client.get(url("activate", acme, 1))
    assert response.status_code == 200
    content = response.content.decode()
    assert "Activate <strong>v1</strong> for <strong>acme</strong>" in content
    assert 'id="confirm-activate"' in content
    assert 'class="insert"' in content  # everything is new against "no active version"
    acme.refresh_from_db()
    assert acme.active_version_id is None  # GET changed nothing


def test_activate_then_roll_back(op_client, acme, publish):
    v1 = publish(acme, GOOD)
    v2 = publish(acme, GOOD2)
    generation = ConfigState.objects.get().generation
    response = op_client.post(url("activate", acme, 1))
    assert response.status_code == 302 and response["Location"] == url("script", acme)
    acme.refresh_from_db()
    assert acme.active_version_id == v1.pk
    assert ConfigState.objects.get().generation > generation  # the data plane reloads
    op_client.post(url("activate", acme, 2))
    acme.refresh_from_db()
    assert acme.active_version_id == v2.pk

    confirm = op_client.get(url("activate", acme, 1))
    content = confirm.content.decode()
    assert "Roll back <strong>acme</strong> from the active v2 to the older <strong>v1" in content
    assert "Yes, roll back to v1" in content
    rows = confirm.context["side_rows"]
    assert any(r.kind == "delete" and "/users/{id}" in r.old for r in rows)
    unified = op_client.get(url("activate", acme, 1), {"mode": "unified"})
    assert any(r.kind == "delete" for r in unified.context["unified_rows"])

    response = op_client.post(url("activate", acme, 1), follow=True)
    assert "Rolled back to v1" in response.content.decode()
    acme.refresh_from_db()
    assert acme.active_version_id == v1.pk
    events = list(AuditEvent.objects.filter(tenant_slug="acme", action__startswith="script.")
                  .exclude(action="script.publish").order_by("id")
                  .values_list("action", "actor", "detail"))
    assert events == [
        ("script.activate", "olga", {"version": 1, "previous": None}),
        ("script.activate", "olga", {"version": 2, "previous": 1}),
        ("script.rollback", "olga", {"version": 1, "previous": 2}),
    ]


def test_a_draft_cannot_be_activated(op_client, acme, publish):
    publish(acme, BAD)
    confirm = op_client.get(url("activate", acme, 1))
    content = confirm.content.decode()
    assert "draft with errors and can never be activated" in content
    assert 'id="confirm-activate"' not in content
    response = op_client.post(url("activate", acme, 1), follow=True)
    assert "cannot be activated" in response.content.decode()
    acme.refresh_from_db()
    assert acme.active_version_id is None


def test_a_faulty_version_cannot_be_activated(op_client, acme, publish):
    publish(acme, GOOD)
    mark_version_faulty(actor=Actor.system("watchdog"), version_id=acme.versions.get().pk,
                        reason="blocked worker pid 1")
    content = op_client.get(url("activate", acme, 1)).content.decode()
    assert "blocked a gateway worker" in content and 'id="confirm-activate"' not in content
    op_client.post(url("activate", acme, 1))
    acme.refresh_from_db()
    assert acme.active_version_id is None


def test_activation_needs_the_change_tenant_permission(op_client, operator, acme, publish):
    publish(acme, GOOD)
    operator.user_permissions.remove(Permission.objects.get(codename="change_tenant"))
    assert op_client.get(url("activate", acme, 1)).status_code == 403
    assert op_client.post(url("activate", acme, 1)).status_code == 403
    acme.refresh_from_db()
    assert acme.active_version_id is None
    assert url("activate", acme, 1) not in op_client.get(url("script", acme)).content.decode()


def test_activation_needs_csrf(client, operator, acme, publish):
    from django.test import Client

    publish(acme, GOOD)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(operator)
    assert strict.post(url("activate", acme, 1)).status_code == 403
    acme.refresh_from_db()
    assert acme.active_version_id is None


def test_remove_the_active_script(op_client, acme, publish, activate):
    activate(acme, publish(acme, GOOD))
    confirm = op_client.get(url("deactivate", acme))
    assert "Remove the active script (v1)" in confirm.content.decode()
    response = op_client.post(url("deactivate", acme))
    assert response.status_code == 302
    acme.refresh_from_db()
    assert acme.active_version_id is None
    assert AuditEvent.objects.filter(action="script.deactivate", actor="olga").exists()
