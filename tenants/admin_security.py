"""Login throttling for the control plane: django-axes keyed on the real client IP.

The address is the data plane's own (AXES_CLIENT_IP_CALLABLE is
chistone_site.trusted_proxies.client_ip, built on routing.forwarded): the TCP peer, or the
client behind CHISTONE_TRUSTED_PROXIES. Without trusted proxies X-Forwarded-For is ignored,
so a client cannot pick a fresh "IP" for every guess.
"""

from __future__ import annotations

from axes.backends import AxesStandaloneBackend


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
