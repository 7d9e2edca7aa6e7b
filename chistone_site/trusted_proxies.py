"""The control plane behind a TLS-terminating proxy: forwarding headers count only from it.

Django's SECURE_PROXY_SSL_HEADER believes `X-Forwarded-Proto: https` from any peer, so a
client talking plain HTTP to the control port could pass for HTTPS (secure cookies sent in
clear, no redirect). `TrustedProxyMiddleware` runs first and replaces the header with the
verdict of `routing.forwarded` (the data plane's own rules): the scheme the nearest trusted
proxy reports, or nothing when the peer is not one of CHISTONE_TRUSTED_PROXIES.

`client_ip` is django-axes' AXES_CLIENT_IP_CALLABLE: failed logins are counted against the
address the data plane would log for the same request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from routing.conf import get_conf
from routing.forwarded import parse_address

PROTO_KEY = "HTTP_X_FORWARDED_PROTO"


def _header(request: HttpRequest, key: str) -> list[str]:
    value = request.META.get(key)
    return [value] if value else []


def client_ip(request: HttpRequest) -> str | None:
    """The client's address; None when the request did not come from a socket."""
    peer = request.META.get("REMOTE_ADDR") or ""
    if parse_address(peer) is None:
        return None
    return get_conf().proxies.client(
        peer, x_forwarded_for=_header(request, "HTTP_X_FORWARDED_FOR"),
        forwarded=_header(request, "HTTP_FORWARDED"))


def apply_forwarded_scheme(request: HttpRequest) -> None:
    """Leave in META only the X-Forwarded-Proto that the trusted-proxy rules vouch for."""
    meta = request.META
    proxies = get_conf().proxies
    peer = meta.get("REMOTE_ADDR") or ""
    if not proxies.trusts(peer):
        meta.pop(PROTO_KEY, None)
        return
    # The connection's own scheme (ASGI scope or WSGI environ), as Django reads it when no
    # proxy header applies.
    transport = request._get_scheme()
    scheme = proxies.scheme(peer, transport, x_forwarded_proto=meta.get(PROTO_KEY),
                            forwarded=_header(request, "HTTP_FORWARDED"))
    meta[PROTO_KEY] = scheme


class TrustedProxyMiddleware:
    """First in MIDDLEWARE: see the module docstring. Sync and async capable."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse | Awaitable]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        apply_forwarded_scheme(request)
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        apply_forwarded_scheme(request)
        return await self.get_response(request)
