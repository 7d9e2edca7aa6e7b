"""The API's settings: `settings.CHISTONE_API` over these defaults, cached, reset on change.

    WRITE_RATE            writes per key (DRF rate syntax); throttling is for fairness, not
                          security: concurrent requests can slip past it
    MAX_TESTS             script tests one publish or validate request may carry
    LAST_USED_RESOLUTION_S  how stale `ApiKey.last_used_at` may get before a request rewrites it
    KEY_DEFAULT_EXPIRY_DAYS expiry for keys created without one (None: never expire)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    "WRITE_RATE": "600/min",
    "MAX_TESTS": 200,
    "LAST_USED_RESOLUTION_S": 60,
    "KEY_DEFAULT_EXPIRY_DAYS": None,
}


@dataclass(frozen=True, slots=True)
class ApiConf:
    write_rate: str | None
    max_tests: int
    last_used_resolution_s: int
    key_default_expiry_days: int | None


@lru_cache(maxsize=1)
def get_conf() -> ApiConf:
    values = {**DEFAULTS, **(getattr(settings, "CHISTONE_API", None) or {})}
    unknown = set(values) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"Unknown CHISTONE_API settings: {', '.join(sorted(unknown))}")
    return ApiConf(
        write_rate=values["WRITE_RATE"],
        max_tests=int(values["MAX_TESTS"]),
        last_used_resolution_s=int(values["LAST_USED_RESOLUTION_S"]),
        key_default_expiry_days=values["KEY_DEFAULT_EXPIRY_DAYS"],
    )


def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "CHISTONE_API":
        get_conf.cache_clear()


setting_changed.connect(_reset)
