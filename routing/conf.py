"""The data plane's settings: declared once here, read through `get_conf()`.

`chistone_site.settings` fills `settings.CHISTONE` from the CHISTONE_* variables of
`GATEWAY_SETTINGS` (only those that are set); `get_conf()` lays that dict over the defaults
below, checks the values once and caches a typed, frozen `GatewayConf`. Tests override
`settings.CHISTONE`; the cache is dropped on Django's `setting_changed` signal (connected in
routing.apps), as DRF does for its settings. Nothing else in the data plane reads
`settings.CHISTONE` or the environment (tests/test_settings.py checks).

Importing this module imports no Django: `chistone_site.conf` (used by the CLI) builds on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from routing.forwarded import HEADERS, IPNetwork, TrustedProxies, parse_networks
from routing.setting import (
    Setting,
    SettingError,
    boolean,
    choice,
    comma_list,
    integer,
    merged,
    number,
    text,
)

__all__ = ["GATEWAY_SETTINGS", "GatewayConf", "IPNetwork", "get_conf", "parse_networks"]


def _networks(raw: str) -> tuple[str, ...]:
    values = comma_list(raw)
    parse_networks(values)  # refuse a bad CIDR when the process starts
    return values


def _engine_default(field: str) -> str:
    from luascripts.engine import Limits  # the home of the Lua budgets; loads lupa: docs only

    value = getattr(Limits(), field)
    return str(int(value)) if float(value).is_integer() else str(value)


GATEWAY_SETTINGS: tuple[Setting, ...] = (
    Setting("TRUSTED_PROXIES", (), _networks,
            "comma-separated CIDRs of the proxies in front of chistone; only their forwarding "
            "headers are believed (client address, scheme), on both planes"),
    Setting("FORWARDED_HEADER", "x-forwarded-for", choice(*HEADERS),
            "the header the trusted proxies write: `x-forwarded-for` (with X-Forwarded-Proto) "
            "or `forwarded` (RFC 7239); the other one is ignored"),
    Setting("UPSTREAM_TOTAL_TIMEOUT_MS", 300_000, integer,
            "bound of a whole proxied exchange, unless a script sets `timeout_ms`"),
    Setting("UPSTREAM_POOL_SIZE", 1000, integer,
            "open upstream connections per worker process, all backends together"),
    Setting("UPSTREAM_POOL_PER_BACKEND", 256, integer,
            "open upstream connections per worker process and backend (host:port)"),
    Setting("UPSTREAM_KEEPALIVE_S", 30.0, number,
            "idle upstream keep-alive connections are closed after this many seconds"),
    Setting("CHUNK_BYTES", 64 * 1024, integer, "streaming chunk bound, both directions"),
    Setting("REPLAY_BODY_BYTES", 64 * 1024, integer,
            "request bodies up to this size can be sent again on a retry"),
    Setting("BODY_TIMEOUT_S", 30.0, number,
            "`req.body()`: the whole request body must arrive within this (else 408)"),
    Setting("RETRIES", 1, integer, "extra tries on another backend, per request"),
    Setting("RETRY_BUDGET_RATIO", 0.2, number,
            "retries allowed per request, averaged over time"),
    Setting("RETRY_BUDGET_MIN", 10.0, number, "retries always allowed in a burst"),
    Setting("PASSIVE_FAILURES", 3, integer,
            "consecutive failed exchanges that take a backend out"),
    Setting("PASSIVE_COOLDOWN_S", 10.0, number,
            "seconds a backend taken out by failures stays out before it is tried again"),
    Setting("HEALTH_INTERVAL_S", 5.0, number,
            "seconds between active checks of backends that have a health-check path"),
    Setting("HEALTH_TIMEOUT_S", 2.0, number, "bound of one active check"),
    Setting("HEALTH_RISE", 2, integer, "consecutive good checks that bring a backend back"),
    Setting("HEALTH_FALL", 2, integer, "consecutive bad checks that take a backend out"),
    Setting("RETRY_AFTER_S", 5, integer, "`Retry-After` of the data plane's 503 answers"),
    Setting("MAX_PATH_BYTES", 8192, integer, "longer request targets answer 414"),
    Setting("MAX_HEADER_BYTES", 64 * 1024, integer, "larger request header blocks answer 431"),
    Setting("ACCESS_LOG", True, boolean, "one `chistone.access` log line per request"),
    Setting("LUA_REQUEST_MS", None, number,
            "CPU budget of a script per request, in ms (default: `luascripts.engine.Limits`)",
            shown_default=lambda: _engine_default("request_cpu_ms")),
    Setting("LUA_MEMORY_BYTES", None, integer,
            "memory budget of a tenant's Lua runtime, in bytes (default: "
            "`luascripts.engine.Limits`)", shown_default=lambda: _engine_default("memory_bytes")),
    Setting("SNAPSHOT_FILE", "", text,
            "the last good configuration on disk, served by a worker that starts while the "
            "database is down", shown_default="`$CHISTONE_VAR_DIR/snapshot.json`"),
    Setting("UPSTREAM_CLIENT", "h1", choice("h1", "aiohttp"),
            "the upstream HTTP client: `h1`, chistone's own (routing.upstream_h1), or "
            "`aiohttp`, the one used before"),
    Setting("WEBSOCKET_MAX_MESSAGE_BYTES", 16 * 1024 * 1024, integer,
            "the largest WebSocket message relayed either way; a larger one closes both "
            "sides with 1009"),
    Setting("WEBSOCKET_IDLE_TIMEOUT_S", 300.0, number,
            "a WebSocket with no message either way for this long is closed with 1001 "
            "(pings do not count)"),
    Setting("JWKS_REFRESH_S", 300.0, number,
            "how often jwt.verify's JWKS keys are fetched again, in the background (a "
            "shorter Cache-Control max-age of the JWKS wins)"),
    Setting("JWKS_MIN_REFRESH_S", 30.0, number,
            "at most one JWKS fetch per this interval and JWKS, whatever unknown `kid`s "
            "or failures ask"),
    Setting("REDIS_URL", "", text,
            "Redis that holds the scripts' shared state (`shared.*`, `limit.allow`, "
            "`middleware.rate_limit`) for every worker of every node, e.g. "
            "`redis://127.0.0.1:6379/0`; unset: each worker process keeps its own "
            "(check `chistone.W003`)"),
    Setting("REDIS_TIMEOUT_MS", 50, integer,
            "bound of one shared-state operation on Redis; slower or unreachable: "
            "`shared.*` answer `nil, \"unavailable\"`, `limit.allow` lets the request "
            "through (or refuses it with `fail = \"closed\"`)"),
    Setting("REDIS_PREFIX", "chistone", text,
            "first part of every shared-state key in Redis (`<prefix>:{tenant}:...`); "
            "gateways that must not share state can share one Redis with different prefixes"),
    Setting("SHARED_MAX_KEYS", 10_000, integer, "`shared` keys one tenant may hold"),
    Setting("SHARED_MAX_BYTES", 16 * 1024 * 1024, integer,
            "bytes of `shared` keys and values one tenant may hold"),
    Setting("METRICS_DIR", "", text,
            "where the workers of one `serve` run write their counters for `/metrics`",
            shown_default="a new temporary directory per `serve` run", internal=True),
)


@dataclass(frozen=True, slots=True)
class GatewayConf:
    trusted_proxies: tuple[IPNetwork, ...]
    proxies: TrustedProxies  # the client-address rules built on trusted_proxies
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
    lua_request_cpu_ms: float | None  # None: the engine's default
    lua_memory_bytes: int | None
    snapshot_file: Path | None  # None: VAR_DIR/snapshot.json, or a temporary directory
    metrics_dir: Path | None  # None: a directory of this process's own
    upstream_client: str = "h1"  # routing.upstream.make_transport
    websocket_max_message_bytes: int = 16 * 1024 * 1024
    websocket_idle_timeout_s: float = 300.0
    jwks_refresh_s: float = 300.0
    jwks_min_refresh_s: float = 30.0
    redis_url: str = ""  # routing.shared_state
    redis_timeout_ms: int = 50
    redis_prefix: str = "chistone"
    shared_max_keys: int = 10_000
    shared_max_bytes: int = 16 * 1024 * 1024

    def lua_limit_overrides(self) -> dict[str, Any]:
        """Keyword arguments for `luascripts.engine.Limits`: only what is configured."""
        overrides: dict[str, Any] = {}
        if self.lua_request_cpu_ms is not None:
            overrides["request_cpu_ms"] = float(self.lua_request_cpu_ms)
        if self.lua_memory_bytes is not None:
            overrides["memory_bytes"] = int(self.lua_memory_bytes)
        return overrides


def default(key: str) -> Any:
    """The declared default of a data-plane setting (for the few places that need it bare)."""
    for setting in GATEWAY_SETTINGS:
        if setting.key == key:
            return setting.default
    raise KeyError(key)


def build_conf(overrides: dict[str, Any], var_dir: Path | None = None) -> GatewayConf:
    """A GatewayConf from `overrides` over the defaults; SettingError names a bad value."""
    values = merged(GATEWAY_SETTINGS, overrides)
    try:
        networks = parse_networks(values["TRUSTED_PROXIES"])
        proxies = TrustedProxies(networks, str(values["FORWARDED_HEADER"]).lower())
    except ValueError as exc:
        raise SettingError(f"CHISTONE_TRUSTED_PROXIES / CHISTONE_FORWARDED_HEADER: {exc}") \
            from None
    snapshot_file = values["SNAPSHOT_FILE"]
    lua_ms, lua_bytes = values["LUA_REQUEST_MS"], values["LUA_MEMORY_BYTES"]
    return GatewayConf(
        trusted_proxies=networks,
        proxies=proxies,
        upstream_total_timeout_s=float(values["UPSTREAM_TOTAL_TIMEOUT_MS"]) / 1000,
        upstream_pool_size=int(values["UPSTREAM_POOL_SIZE"]),
        upstream_pool_per_backend=int(values["UPSTREAM_POOL_PER_BACKEND"]),
        upstream_keepalive_s=float(values["UPSTREAM_KEEPALIVE_S"]),
        chunk_bytes=int(values["CHUNK_BYTES"]),
        replay_body_bytes=int(values["REPLAY_BODY_BYTES"]),
        body_timeout_s=float(values["BODY_TIMEOUT_S"]),
        retries=int(values["RETRIES"]),
        retry_budget_ratio=float(values["RETRY_BUDGET_RATIO"]),
        retry_budget_min=float(values["RETRY_BUDGET_MIN"]),
        passive_failures=int(values["PASSIVE_FAILURES"]),
        passive_cooldown_s=float(values["PASSIVE_COOLDOWN_S"]),
        health_interval_s=float(values["HEALTH_INTERVAL_S"]),
        health_timeout_s=float(values["HEALTH_TIMEOUT_S"]),
        health_rise=int(values["HEALTH_RISE"]),
        health_fall=int(values["HEALTH_FALL"]),
        retry_after_s=int(values["RETRY_AFTER_S"]),
        max_path_bytes=int(values["MAX_PATH_BYTES"]),
        max_header_bytes=int(values["MAX_HEADER_BYTES"]),
        access_log=bool(values["ACCESS_LOG"]),
        lua_request_cpu_ms=float(lua_ms) if lua_ms is not None else None,
        lua_memory_bytes=int(lua_bytes) if lua_bytes is not None else None,
        snapshot_file=(Path(snapshot_file) if snapshot_file
                       else var_dir / "snapshot.json" if var_dir is not None else None),
        metrics_dir=Path(values["METRICS_DIR"]) if values["METRICS_DIR"] else None,
        upstream_client=str(values["UPSTREAM_CLIENT"]),
        websocket_max_message_bytes=int(values["WEBSOCKET_MAX_MESSAGE_BYTES"]),
        websocket_idle_timeout_s=float(values["WEBSOCKET_IDLE_TIMEOUT_S"]),
        jwks_refresh_s=float(values["JWKS_REFRESH_S"]),
        jwks_min_refresh_s=float(values["JWKS_MIN_REFRESH_S"]),
        redis_url=str(values["REDIS_URL"]),
        redis_timeout_ms=int(values["REDIS_TIMEOUT_MS"]),
        redis_prefix=str(values["REDIS_PREFIX"]),
        shared_max_keys=int(values["SHARED_MAX_KEYS"]),
        shared_max_bytes=int(values["SHARED_MAX_BYTES"]),
    )


@lru_cache(maxsize=1)
def get_conf() -> GatewayConf:
    from django.conf import settings

    var_dir = getattr(settings, "VAR_DIR", None)
    return build_conf(dict(getattr(settings, "CHISTONE", None) or {}),
                      Path(var_dir) if var_dir else None)


def reset(*, setting: str, **kwargs: Any) -> None:
    """`setting_changed` receiver: a changed CHISTONE or VAR_DIR is read again."""
    if setting in ("CHISTONE", "VAR_DIR"):
        get_conf.cache_clear()
