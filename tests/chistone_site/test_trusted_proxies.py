"""The control plane behind a TLS-terminating proxy: X-Forwarded-Proto counts only from it."""

from __future__ import annotations

import pytest
from django.http import HttpResponse
from django.test import Client

from chistone_site import checks
from chistone_site.trusted_proxies import TrustedProxyMiddleware, apply_forwarded_scheme

LOGIN = "/admin/login/"
PROXY = "10.0.0.2"


@pytest.fixture
def behind_tls(settings):
    settings.CHISTONE = {"TRUSTED_PROXIES": ["10.0.0.0/24"]}
    settings.SECURE_SSL_REDIRECT = True
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_HSTS_SECONDS = 3600
    return settings


def test_https_from_a_trusted_proxy_is_https(behind_tls, db):
    response = Client(REMOTE_ADDR=PROXY).get(LOGIN, HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=3600"
    assert response.cookies["csrftoken"]["secure"] is True


def test_https_claimed_by_any_other_peer_is_plain_http(behind_tls, db):
    response = Client(REMOTE_ADDR="203.0.113.9").get(LOGIN, HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 301
    assert response["Location"] == f"https://testserver{LOGIN}"
    assert "Strict-Transport-Security" not in response


def test_plain_http_through_the_proxy_is_redirected(behind_tls, db):
    response = Client(REMOTE_ADDR=PROXY).get(LOGIN, HTTP_X_FORWARDED_PROTO="http")
    assert response.status_code == 301
    garbage = Client(REMOTE_ADDR=PROXY).get(LOGIN, HTTP_X_FORWARDED_PROTO="https, http")
    assert garbage.status_code == 301


def test_forwarded_mode_reads_proto_from_rfc_7239_only(behind_tls, db):
    behind_tls.CHISTONE = {**behind_tls.CHISTONE, "FORWARDED_HEADER": "forwarded"}
    client = Client(REMOTE_ADDR=PROXY)
    assert client.get(LOGIN, HTTP_FORWARDED="for=203.0.113.7;proto=https").status_code == 200
    assert client.get(LOGIN, HTTP_X_FORWARDED_PROTO="https").status_code == 301


async def test_the_async_path_applies_the_same_rule(behind_tls, rf):
    async def scheme_view(request):
        return HttpResponse(request.scheme)

    middleware = TrustedProxyMiddleware(scheme_view)
    trusted = rf.get("/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_PROTO="https")
    assert (await middleware(trusted)).content == b"https"
    forged = rf.get("/", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_PROTO="https")
    assert (await middleware(forged)).content == b"http"


def test_without_trusted_proxies_the_header_is_dropped(rf, settings):
    settings.CHISTONE = {}
    request = rf.get("/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_PROTO="https")
    apply_forwarded_scheme(request)
    assert "HTTP_X_FORWARDED_PROTO" not in request.META
    assert request.is_secure() is False


def test_ssl_redirect_without_a_trusted_proxy_is_a_configuration_error(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.CHISTONE = {}
    assert [m.id for m in checks.check_listeners(None)] == ["chistone.E006"]
    settings.CHISTONE = {"TRUSTED_PROXIES": ["10.0.0.0/24"]}
    assert checks.check_listeners(None) == []
