"""The branded admin site and the control plane's error pages."""

from __future__ import annotations

import pytest
from django.test import RequestFactory
from django.urls import reverse
from django.views import defaults

pytestmark = pytest.mark.django_db


def test_the_admin_is_branded_chistone_with_no_view_site_link(admin_client):
    content = admin_client.get(reverse("admin:index")).content.decode()
    assert "Django administration" not in content and "Django site admin" not in content
    assert 'class="chistone-brand"' in content and "chistone console" in content
    assert "View site" not in content
    assert reverse("admin:requests") in content  # the console's navigation


def test_the_login_page_is_branded_too(client):
    content = client.get(reverse("admin:login")).content.decode()
    assert "Django administration" not in content and "chistone" in content


def test_a_missing_page_gets_the_styled_404(admin_client):
    response = admin_client.get("/no/such/page/")
    assert response.status_code == 404
    content = response.content.decode()
    assert 'id="error-page"' in content and "This page does not exist" in content
    assert "chistone/console.css" in content


def test_a_server_error_gets_the_styled_500_without_any_context():
    response = defaults.server_error(RequestFactory().get("/admin/"))
    assert response.status_code == 500
    content = response.content.decode()
    assert "The control plane failed to answer" in content and 'id="error-page"' in content


def test_a_stale_form_gets_the_styled_csrf_page(admin_user):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(admin_user)
    response = strict.post(reverse("admin:tenants_tenant_add"), {"slug": "x"})
    assert response.status_code == 403
    assert "This form could not be verified" in response.content.decode()
