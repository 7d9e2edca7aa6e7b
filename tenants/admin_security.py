"""Login throttling for the control plane: django-axes keyed on the real client IP.

daphne's REMOTE_ADDR is the TCP peer. When the peer is one of CHISTONE_TRUSTED_PROXIES, the
client is the first address that is *not* a trusted proxy, reading X-Forwarded-For from the
right (the leftmost entries are whatever the client chose to send). Without trusted proxies
X-Forwarded-For is ignored, so a client cannot pick a fresh "IP" for every guess.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from axes.backends import AxesStandaloneBackend
from django.conf import settings


@lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets = []
    for cidr in cidrs:
        try:
            nets.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            continue  # reported by system check chistone.E004
    return tuple(nets)


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def resolve_client_ip(peer: str, forwarded_for: str, trusted: tuple[str, ...]) -> str | None:
    """The client address given the TCP peer, an X-Forwarded-For value and trusted CIDRs.

    None when the peer is not an IP address (no request from a socket, e.g. `force_login`).
    """
    nets = _networks(tuple(trusted))
    peer_ip = _parse_ip(peer or "")
    if peer_ip is None:
        return None

    def is_trusted(ip) -> bool:
        return any(ip in net for net in nets)

    if not is_trusted(peer_ip):
        return str(peer_ip)
    for entry in reversed([e for e in forwarded_for.split(",") if e.strip()]):
        ip = _parse_ip(entry)
        if ip is None:
            # Garbage in the chain: stop at the last address we could still vouch for.
            break
        if not is_trusted(ip):
            return str(ip)
        peer_ip = ip
    return str(peer_ip)


def client_ip(request) -> str | None:
    """AXES_CLIENT_IP_CALLABLE: the IP address failed logins are counted against."""
    return resolve_client_ip(
        request.META.get("REMOTE_ADDR", ""),
        request.META.get("HTTP_X_FORWARDED_FOR", ""),
        tuple(settings.CHISTONE.get("TRUSTED_PROXIES", ())),
    )


class LoginThrottleBackend(AxesStandaloneBackend):
    """django-axes' lockout check, for every authentication that comes with a request.

    `authenticate()` without a request (the test client's `login()`, a shell) has no client
    address to throttle; axes would raise, so this backend simply steps aside there. The login
    form, DRF and every other HTTP path pass the request and are throttled.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
