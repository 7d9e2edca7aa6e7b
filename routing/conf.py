"""The data plane's settings: `settings.CHISTONE` with defaults, read once and cached.

Every key can also come from the environment as `CHISTONE_<KEY>` when the settings dict does
not set it (the test suite uses this to shorten health intervals in a server subprocess).
The cache is dropped on Django's `setting_changed` signal, as DRF does for its settings.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULTS: dict[str, Any] = {
    "TRUSTED_PROXIES": [],  # CIDRs whose X-Forwarded-For entries are believed
    "UPSTREAM_TOTAL_TIMEOUT_MS": 300_000,  # whole exchange, unless a script's timeout_ms is set
    "UPSTREAM_POOL_SIZE": 1000,  # open upstream connections per process, all backends
    "UPSTREAM_POOL_PER_BACKEND": 256,  # open connections per backend (host:port)
    "UPSTREAM_KEEPALIVE_S": 30.0,  # idle keep-alive connections are closed after this
    "CHUNK_BYTES": 64 * 1024,  # streaming chunk bound, both directions
    "REPLAY_BODY_BYTES": 64 * 1024,  # request bodies up to this size can be sent again on retry
    "BODY_TIMEOUT_S": 30.0,  # req.body(): the whole body must arrive within this (else 408)
    "RETRIES": 1,  # extra tries on another backend, per request
    "RETRY_BUDGET_RATIO": 0.2,  # retries allowed per request, averaged over time
    "RETRY_BUDGET_MIN": 10.0,  # retries always allowed in a burst
    "PASSIVE_FAILURES": 3,  # consecutive failures that take a backend out
    "PASSIVE_COOLDOWN_S": 10.0,  # how long it stays out before it is tried again
    "HEALTH_INTERVAL_S": 5.0,  # active checks of backends that have a health_check_path
    "HEALTH_TIMEOUT_S": 2.0,
    "HEALTH_RISE": 2,  # consecutive good checks that bring a backend back
    "HEALTH_FALL": 2,  # consecutive bad checks that take it out
    "RETRY_AFTER_S": 5,  # Retry-After on 503
    "MAX_PATH_BYTES": 8192,  # longer request targets answer 414
    "MAX_HEADER_BYTES": 64 * 1024,  # larger request header blocks answer 431
    "ACCESS_LOG": True,
    # The upstream HTTP client: "h1" (routing.upstream_h1, the lean one) or "aiohttp".
    "UPSTREAM_CLIENT": "h1",
    # WebSockets (routing.websocket): the largest message relayed either way (larger ones
    # close both sides with 1009), and how long a connection may carry no message either way
    # before the gateway closes it (1001). Pings and pongs are answered on each hop and do
    # not count as activity.
    "WEBSOCKET_MAX_MESSAGE_BYTES": 16 * 1024 * 1024,
    "WEBSOCKET_IDLE_TIMEOUT_S": 300.0,
}


@dataclass(frozen=True, slots=True)
class GatewayConf:
    trusted_proxies: tuple[IPNetwork, ...]
    upstream_total_timeout_s: float
    upstream_pool_size: int
    upstream_pool_per_backend: int
    upstream_keepalive_s: float
    chunk_bytes: int
    replay_body_bytes: int
    body_timeout_s: float
    retries: int
    retry_budget_ratio: float
    retry_budget_min: float
    passive_failures: int
    passive_cooldown_s: float
    health_interval_s: float
    health_timeout_s: float
    health_rise: int
    health_fall: int
    retry_after_s: int
    max_path_bytes: int
    max_header_bytes: int
    access_log: bool
    upstream_client: str = "h1"
    websocket_max_message_bytes: int = 16 * 1024 * 1024
    websocket_idle_timeout_s: float = 300.0


def _raw(key: str) -> Any:
    configured = getattr(settings, "CHISTONE", {}) or {}
    if key in configured:
        return configured[key]
    env = os.environ.get(f"CHISTONE_{key}")
    if env is None:
        return DEFAULTS[key]
    default = DEFAULTS[key]
    if isinstance(default, bool):
        return env.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, list):
        return [item.strip() for item in env.split(",") if item.strip()]
    return type(default)(env)


def parse_networks(values: list[str] | tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


@lru_cache(maxsize=1)
def get_conf() -> GatewayConf:
    return GatewayConf(
        trusted_proxies=parse_networks(_raw("TRUSTED_PROXIES")),
        upstream_total_timeout_s=float(_raw("UPSTREAM_TOTAL_TIMEOUT_MS")) / 1000,
        upstream_pool_size=int(_raw("UPSTREAM_POOL_SIZE")),
        upstream_pool_per_backend=int(_raw("UPSTREAM_POOL_PER_BACKEND")),
        upstream_keepalive_s=float(_raw("UPSTREAM_KEEPALIVE_S")),
        chunk_bytes=int(_raw("CHUNK_BYTES")),
        replay_body_bytes=int(_raw("REPLAY_BODY_BYTES")),
        body_timeout_s=float(_raw("BODY_TIMEOUT_S")),
        retries=int(_raw("RETRIES")),
        retry_budget_ratio=float(_raw("RETRY_BUDGET_RATIO")),
        retry_budget_min=float(_raw("RETRY_BUDGET_MIN")),
        passive_failures=int(_raw("PASSIVE_FAILURES")),
        passive_cooldown_s=float(_raw("PASSIVE_COOLDOWN_S")),
        health_interval_s=float(_raw("HEALTH_INTERVAL_S")),
        health_timeout_s=float(_raw("HEALTH_TIMEOUT_S")),
        health_rise=int(_raw("HEALTH_RISE")),
        health_fall=int(_raw("HEALTH_FALL")),
        retry_after_s=int(_raw("RETRY_AFTER_S")),
        max_path_bytes=int(_raw("MAX_PATH_BYTES")),
        max_header_bytes=int(_raw("MAX_HEADER_BYTES")),
        access_log=bool(_raw("ACCESS_LOG")),
        upstream_client=str(_raw("UPSTREAM_CLIENT")),
        websocket_max_message_bytes=int(_raw("WEBSOCKET_MAX_MESSAGE_BYTES")),
        websocket_idle_timeout_s=float(_raw("WEBSOCKET_IDLE_TIMEOUT_S")),
    )


def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "CHISTONE":
        get_conf.cache_clear()


setting_changed.connect(_reset)
