"""Staff accounts: a superuser can delete one that had operator access (audited)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from tenants.models import AuditEvent, OperatorAccess

pytestmark = pytest.mark.django_db


def test_superuser_deletes_a_staff_user_with_operator_access(su_client, operator):
    url = reverse("admin:auth_user_delete", args=[operator.pk])
    page = su_client.get(url).content.decode()
    assert "doesn’t have permission to delete" not in page
    assert "Yes, I’m sure" in page
    response = su_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not get_user_model().objects.filter(pk=operator.pk).exists()
    assert not OperatorAccess.objects.exists()
    event = AuditEvent.objects.get(action="access.remove")
    assert event.detail == {"user": "olga", "removed": ["acme"]} and event.actor == "root"


def test_an_operator_still_cannot_delete_accounts(op_client, superuser):
    url = reverse("admin:auth_user_delete", args=[superuser.pk])
    assert op_client.post(url, {"post": "yes"}).status_code in (302, 403)
    assert get_user_model().objects.filter(pk=superuser.pk).exists()
