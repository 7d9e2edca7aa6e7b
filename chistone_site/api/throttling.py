"""Per-key throttling of writes (fairness between CI pipelines, not a security control).

DRF's cache-based counters are per process and racy under concurrency; a front proxy or the
database is where a hard limit would live. The rate is `CHISTONE_API["WRITE_RATE"]`.
"""

from __future__ import annotations

from rest_framework.throttling import SimpleRateThrottle

from chistone_site.api.authentication import principal_of
from chistone_site.api.conf import get_conf

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class KeyWriteThrottle(SimpleRateThrottle):
    scope = "chistone_write"

    def __init__(self) -> None:
        # SimpleRateThrottle reads its rate from DRF settings at import time; read ours lazily.
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)

    def get_rate(self) -> str | None:
        return get_conf().write_rate

    def get_cache_key(self, request, view) -> str | None:
        if request.method in SAFE_METHODS:
            return None
        principal = principal_of(request)
        if principal is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": principal.throttle_id}
