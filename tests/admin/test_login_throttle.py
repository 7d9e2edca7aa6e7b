"""Admin login is throttled per client IP (django-axes), computed like the gateway does."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from django.urls import reverse

from tenants.admin_security import resolve_client_ip

LOGIN = "admin:login"


def attempt(client, password, **extra):
    return client.post(reverse(LOGIN), {"username": "root", "password": password,
                                        "next": "/admin/"}, **extra)


@pytest.fixture
def root(db):
    return get_user_model().objects.create_superuser("root", "r@example.com", "right-pw-123")


@override_settings(AXES_FAILURE_LIMIT=3)
def test_login_is_refused_after_repeated_failures_even_with_the_right_password(root):
    client = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(2):
        response = attempt(client, "wrong")
        assert response.status_code == 200  # the login form again, with its error
    locked = attempt(client, "wrong")
    assert locked.status_code == 429
    assert b"Too many failed login attempts" in locked.content
    assert attempt(client, "right-pw-123").status_code == 429
    assert "_auth_user_id" not in client.session


@override_settings(AXES_FAILURE_LIMIT=3)
def test_the_lockout_is_per_client_ip(root):
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(3):
        attempt(attacker, "wrong")
    assert attempt(attacker, "right-pw-123").status_code == 429
    colleague = Client(REMOTE_ADDR="198.51.100.20")
    response = attempt(colleague, "right-pw-123")
    assert response.status_code == 302 and response["Location"] == "/admin/"


@override_settings(AXES_FAILURE_LIMIT=3)
def test_a_forged_x_forwarded_for_does_not_reset_the_count(root):
    client = Client(REMOTE_ADDR="203.0.113.7")
    for n in range(3):
        attempt(client, "wrong", HTTP_X_FORWARDED_FOR=f"10.9.9.{n}")
    assert attempt(client, "right-pw-123", HTTP_X_FORWARDED_FOR="10.1.1.1").status_code == 429


@override_settings(AXES_FAILURE_LIMIT=2,
                   CHISTONE={"TRUSTED_PROXIES": ["10.0.0.0/8"], "DATA_PORT": 8000,
                             "CONTROL_PORT": 8001})
def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(root):
    proxy = Client(REMOTE_ADDR="10.0.0.2")
    for _ in range(2):
        attempt(proxy, "wrong", HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert attempt(proxy, "right-pw-123",
                   HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 429
    # Another client behind the same proxy is not locked out.
    ok = attempt(proxy, "right-pw-123", HTTP_X_FORWARDED_FOR="198.51.100.20")
    assert ok.status_code == 302


def test_a_successful_login_works_and_resets_the_count(root):
    client = Client(REMOTE_ADDR="192.0.2.1")
    attempt(client, "wrong")
    response = attempt(client, "right-pw-123")
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200


def test_test_clients_can_still_log_in_without_a_request(root):
    client = Client()
    assert client.login(username="root", password="right-pw-123")
    assert client.get("/admin/").status_code == 200


@pytest.mark.parametrize("peer,xff,trusted,expected", [
    ("203.0.113.7", "", (), "203.0.113.7"),
    ("203.0.113.7", "1.2.3.4", (), "203.0.113.7"),  # untrusted peer: XFF ignored
    ("10.0.0.2", "1.2.3.4", ("10.0.0.0/8",), "1.2.3.4"),
    ("10.0.0.2", "6.6.6.6, 1.2.3.4, 10.0.0.9", ("10.0.0.0/8",), "1.2.3.4"),  # rightmost untrusted
    ("10.0.0.2", "", ("10.0.0.0/8",), "10.0.0.2"),
    ("10.0.0.2", "junk, 10.0.0.5", ("10.0.0.0/8",), "10.0.0.5"),
    ("::1", "", (), "::1"),
    ("10.0.0.2", "[2001:db8::1]:443", ("10.0.0.0/8",), "2001:db8::1"),
    ("", "1.2.3.4", (), None),
])
def test_resolve_client_ip(peer, xff, trusted, expected):
    assert resolve_client_ip(peer, xff, trusted) == expected
