"""Authentication: API keys (Bearer, Api-Key), staff sessions with CSRF, never Basic."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from chistone_site.api import keys
from chistone_site.api.models import ApiKey
from tenants.audit import Actor

from .conftest import assert_error

pytestmark = pytest.mark.django_db
URL = "/api/v1/tenants/"


def test_no_credentials_is_401_with_a_challenge(acme):
    response = APIClient().get(URL)
    body = assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "acme" not in str(body)


@pytest.mark.parametrize("scheme", ["Bearer", "Api-Key", "bearer"])
def test_both_key_schemes_work(acme, make_key, client_for, scheme):
    response = client_for(make_key(), scheme=scheme).get(URL)
    assert response.status_code == 200
    assert [t["slug"] for t in response.json()] == ["acme"]


def test_basic_auth_is_refused_even_for_a_valid_user(acme):
    user = get_user_model().objects.create_superuser("root", "r@example.com", "pw-123456")
    client = APIClient()
    token = base64.b64encode(f"{user.username}:pw-123456".encode()).decode()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {token}")
    assert_error(client.get(URL), 401, "authentication_failed")


@pytest.mark.parametrize("raw", ["", "chs_", "chs_abcdefgh_wrong", "not-a-key", "two words"])
def test_malformed_or_unknown_keys_are_401(acme, client_for, raw):
    assert_error(client_for(raw).get(URL), 401)


def test_a_guessed_secret_with_a_real_prefix_is_401(acme, make_key, client_for):
    raw = make_key()
    forged = raw[:-4] + ("aaaa" if not raw.endswith("aaaa") else "bbbb")
    assert_error(client_for(forged).get(URL), 401, "authentication_failed")


def test_keys_are_stored_as_sha256_only(acme, make_key):
    raw = make_key(name="stored")
    key = ApiKey.objects.get(name="stored")
    assert key.hashed_key == hashlib.sha256(raw.encode()).hexdigest()
    assert raw.startswith(f"chs_{key.prefix}_")
    secret = raw.split("_", 2)[2]
    for value in ApiKey.objects.values_list(flat=False).get(pk=key.pk):
        assert secret not in str(value)


def test_revoked_key_is_401_at_once(acme, make_key, client_for):
    raw = make_key(name="soon-revoked")
    client = client_for(raw)
    assert client.get(URL).status_code == 200
    keys.revoke_api_key(actor=Actor(name="t"), key=ApiKey.objects.get(name="soon-revoked"))
    body = assert_error(client.get(URL), 401, "authentication_failed")
    assert "revoked" in body["detail"]


def test_expired_key_is_401(acme, make_key, client_for):
    raw = make_key(name="old", expires_at=timezone.now() - timedelta(seconds=1))
    assert "expired" in assert_error(client_for(raw).get(URL), 401)["detail"]


def test_expiry_in_days_is_honoured(acme, make_key, client_for):
    raw = make_key(name="fresh", expires_in_days=2)
    key = ApiKey.objects.get(name="fresh")
    assert timedelta(days=1) < key.expires_at - timezone.now() <= timedelta(days=2)
    assert client_for(raw).get(URL).status_code == 200


def test_last_used_is_recorded(acme, make_key, client_for):
    raw = make_key(name="used")
    assert ApiKey.objects.get(name="used").last_used_at is None
    client_for(raw).get(URL)
    assert ApiKey.objects.get(name="used").last_used_at is not None


def test_request_id_is_echoed_or_generated(acme, api):
    response = api.get(URL, HTTP_X_REQUEST_ID="ci-run-42")
    assert response["X-Request-ID"] == "ci-run-42"
    generated = api.get(URL, HTTP_X_REQUEST_ID="bad id with spaces")["X-Request-ID"]
    assert generated and " " not in generated
    body = assert_error(APIClient().get(URL, HTTP_X_REQUEST_ID="abc-1"), 401)
    assert body["request_id"] == "abc-1"


@pytest.fixture
def staff_client(db):
    user = get_user_model().objects.create_superuser("op", "op@example.com", "pw-123456")
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def test_superuser_session_reads_and_writes_with_csrf(acme, staff_client):
    assert staff_client.get(URL).status_code == 200
    refused = staff_client.post(URL, {"slug": "new", "name": "New", "domains": ["n.example"]},
                                format="json")
    body = assert_error(refused, 403, "permission_denied")
    assert "CSRF" in body["detail"]
    staff_client.get("/admin/")  # its logout form sets the CSRF cookie
    token = staff_client.cookies["csrftoken"].value
    created = staff_client.post(URL, {"slug": "new", "name": "New", "domains": ["n.example"]},
                                format="json", HTTP_X_CSRFTOKEN=token)
    assert created.status_code == 201, created.content
    from tenants.models import AuditEvent
    assert AuditEvent.objects.filter(action="tenant.create", actor="op").exists()


def test_staff_reach_only_the_tenants_the_admin_shows_them(acme, globex):
    from tenants.access import set_operator_tenants

    user = get_user_model().objects.create_user("ops-a", "a@example.com", "pw-123456",
                                                is_staff=True)
    client = APIClient()
    client.force_login(user)
    assert client.get(URL).json() == []  # no OperatorAccess: nothing (fail closed)
    set_operator_tenants(actor=Actor(name="t"), user=user, tenants=[acme])
    assert [t["slug"] for t in client.get(URL).json()] == ["acme"]
    assert client.get(URL + "acme/config/").status_code == 200
    assert_error(client.get(URL + "globex/"), 404)
    assert_error(client.post(URL, {"slug": "n", "name": "N", "domains": ["n.example"]},
                             format="json"), 403)


def test_a_non_staff_session_is_not_authenticated(acme):
    user = get_user_model().objects.create_user("joe", "joe@example.com", "pw-123456")
    client = APIClient()
    client.force_login(user)
    assert_error(client.get(URL), 401)
