"""Admin login is throttled per client IP (django-axes), computed like the gateway does."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from django.urls import reverse

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


@override_settings(AXES_FAILURE_LIMIT=2, CHISTONE={"TRUSTED_PROXIES": ["10.0.0.0/8"]})
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


BEHIND_PROXY = {"TRUSTED_PROXIES": ["10.0.0.0/8"]}


@override_settings(AXES_FAILURE_LIMIT=2, CHISTONE=BEHIND_PROXY)
def test_a_port_on_the_forwarded_client_counts_against_the_same_address(root):
    proxy = Client(REMOTE_ADDR="10.0.0.2")
    attempt(proxy, "wrong", HTTP_X_FORWARDED_FOR="203.0.113.7:5555")
    attempt(proxy, "wrong", HTTP_X_FORWARDED_FOR="203.0.113.7:6666")
    assert attempt(proxy, "right-pw-123",
                   HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 429


@pytest.mark.parametrize("headers", [
    {"HTTP_X_FORWARDED_FOR": "203.0.113.7:5555"},
    {"HTTP_X_FORWARDED_FOR": "6.6.6.6, 203.0.113.7, 10.0.0.9"},
    {"HTTP_X_FORWARDED_FOR": "[2001:db8::7]:443"},
    {"HTTP_X_FORWARDED_FOR": "garbage, 10.0.0.5"},
    {"HTTP_FORWARDED": "for=6.6.6.6"},
    {},
])
@pytest.mark.parametrize("peer", ["10.0.0.2", "203.0.113.9"])
def test_login_throttling_and_the_gateway_agree_on_the_client(settings, rf, peer, headers):
    """The issue's bug: axes counted 203.0.113.7 while the gateway logged the proxy."""
    from chistone_site.trusted_proxies import client_ip
    from routing.conf import get_conf
    from routing.request import parse_scope
    from tests.routing.asgi import http_scope

    settings.CHISTONE = BEHIND_PROXY
    django_request = rf.get("/admin/login/", REMOTE_ADDR=peer, **headers)
    names = {"HTTP_X_FORWARDED_FOR": "x-forwarded-for", "HTTP_FORWARDED": "forwarded"}
    scope = http_scope("/", client=peer,
                       headers=[(names[key], value) for key, value in headers.items()])
    assert client_ip(django_request) == parse_scope(scope, get_conf()).client_ip


def test_a_request_without_a_socket_address_is_not_counted(rf):
    from chistone_site.trusted_proxies import client_ip

    assert client_ip(rf.get("/", REMOTE_ADDR="")) is None
