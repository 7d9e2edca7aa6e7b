"""The immutable configuration a process serves from, and the holder it is swapped in.

`build_snapshot()` reads the database synchronously (never on the event loop: at startup in a
thread, after a committed change in the committing thread, or from the generation watcher
through `asyncio.to_thread`). Loaded scripts are cached by (tenant id, version number, sha256,
backend names): an unchanged version keeps its Lua runtime across rebuilds, so only changed
tenants pay for a load. A request reads `holder.current` once and uses that object to the end,
so it never sees half of two configurations.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from luascripts.engine.types import BackendView
from routing import snapshot_disk as disk
from routing.resolve import Claim, Resolver
from tenants import backend_defaults

if TYPE_CHECKING:
    from luascripts.engine import LoadedScript

log = logging.getLogger("chistone.snapshot")

ScriptKey = tuple[int, int, str, frozenset[str], tuple[tuple[str, int], ...]]
Loader = Callable[..., "LoadedScript"]


@dataclass(frozen=True, slots=True)
class BackendEntry:
    """A registered backend, with its URL split once and its timeouts in seconds."""

    id: int
    tenant: str
    name: str
    url: str  # as registered (normalised by tenants.validators)
    origin: str  # scheme://host[:port]
    host_header: str  # host[:port] as the backend expects it in Host
    base_path: str  # "" or "/base", no trailing slash
    weight: int
    enabled: bool
    health_check_path: str
    connect_timeout_s: float
    read_timeout_s: float

    @property
    def key(self) -> str:
        """Identity for health and counters: a changed URL is a different target."""
        return f"{self.tenant}/{self.name}@{self.url}"

    @classmethod
    def from_url(cls, *, id: int, tenant: str, name: str, url: str,
                 weight: int = backend_defaults.WEIGHT, enabled: bool = True,
                 health_check_path: str = "",
                 connect_timeout_ms: int = backend_defaults.CONNECT_TIMEOUT_MS,
                 read_timeout_ms: int = backend_defaults.READ_TIMEOUT_MS) -> BackendEntry:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        netloc_host = f"[{host}]" if ":" in host else host
        port = parts.port
        default_port = 443 if scheme == "https" else 80
        host_header = netloc_host if port in (None, default_port) else f"{netloc_host}:{port}"
        origin = f"{scheme}://{netloc_host}:{port or default_port}"
        return cls(id=id, tenant=tenant, name=name, url=url, origin=origin,
                   host_header=host_header, base_path=parts.path.rstrip("/"),
                   weight=weight, enabled=enabled, health_check_path=health_check_path,
                   connect_timeout_s=connect_timeout_ms / 1000,
                   read_timeout_s=read_timeout_ms / 1000)


@dataclass(frozen=True, slots=True)
class TenantEntry:
    id: int
    slug: str
    name: str
    prefix: str
    domains: tuple[str, ...]
    backends: Mapping[str, BackendEntry]
    default_pool: tuple[BackendEntry, ...]  # enabled, weight > 0: used without a script
    script: LoadedScript | None = None
    version_id: int | None = None
    version_number: int | None = None
    is_selector: bool = False
    unavailable: str = ""  # why the tenant answers 503 (faulty or unloadable script)

    def backend_views(self, healthy: Callable[[BackendEntry], bool]) -> tuple[BackendView, ...]:
        return tuple(BackendView(b.name, b.url, b.weight, b.enabled and healthy(b))
                     for b in self.backends.values())


@dataclass(frozen=True, slots=True)
class Snapshot:
    generation: int
    tenants: Mapping[str, TenantEntry]
    resolver: Resolver[TenantEntry]
    scripts: Mapping[ScriptKey, Any] = field(default_factory=dict)
    built_at: float = 0.0
    build_seconds: float = 0.0
    # The response header naming this configuration, built once here, not per request.
    config_header: tuple[bytes, bytes] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "config_header",
                           (b"x-chistone-config", str(self.generation).encode()))

    def backends(self) -> list[BackendEntry]:
        return [b for t in self.tenants.values() for b in t.backends.values()]


def compile_snapshot(generation: int, tenants: list[TenantEntry], *,
                     scripts: Mapping[ScriptKey, Any] | None = None,
                     build_seconds: float = 0.0) -> Snapshot:
    """Index already-built tenant entries (also used by tests and the dry run)."""
    claims = []
    for tenant in tenants:
        for host in tenant.domains or ("",):
            claims.append(Claim(host, tenant.prefix, tenant))
    return Snapshot(
        generation=generation,
        tenants=MappingProxyType({t.slug: t for t in tenants}),
        resolver=Resolver.compile(claims),
        scripts=MappingProxyType(dict(scripts or {})),
        built_at=time.time(),
        build_seconds=build_seconds,
    )


def _default_loader() -> Loader:
    return load_tenant_script


def load_tenant_script(source: str, *, tenant: str, backend_names: Any,
                       limits: Any = None, overrides: Mapping[str, int] | None = None) -> Any:
    """The one way a tenant's script is loaded: for the data plane's snapshot, the dry run
    and script tests alike, with the gateway's limits (`script_limits`), so what a dry run
    or a test shows is what the gateway does."""
    from luascripts.engine import load_script

    return load_script(source, tenant=tenant, backend_names=sorted(backend_names),
                       limits=limits if limits is not None else script_limits(overrides))


def read_config() -> dict[str, Any]:
    """Everything a snapshot is built from, as plain JSON-able data (one consistent read)."""
    from django.db import transaction

    from luascripts.models import ScriptFault
    from tenants.events import current_generation
    from tenants.models import Backend, Tenant

    with transaction.atomic():  # one snapshot of the database on PostgreSQL and SQLite alike
        generation = current_generation()
        rows = list(Tenant.objects.filter(active=True).select_related("active_version"))
        by_tenant: dict[int, list[dict[str, Any]]] = {}
        for b in Backend.objects.filter(tenant__active=True).order_by("tenant_id", "name"):
            by_tenant.setdefault(b.tenant_id, []).append({
                "id": b.pk, "name": b.name, "url": b.url, "weight": b.weight,
                "enabled": b.enabled, "health_check_path": b.health_check_path,
                "connect_timeout_ms": b.connect_timeout_ms,
                "read_timeout_ms": b.read_timeout_ms})
        faults = dict(ScriptFault.objects.values_list("version_id", "reason"))
    tenants = []
    for row in rows:
        version = row.active_version
        tenants.append({
            "id": row.pk, "slug": row.slug, "name": row.name, "prefix": row.path_prefix,
            "domains": list(row.domains or ()), "backends": by_tenant.get(row.pk, []),
            "limits": row.script_limits(),
            "version": None if version is None else {
                "id": version.pk, "number": version.number, "sha256": version.sha256,
                "source": version.source, "fault": faults.get(version.pk)},
        })
    return {"generation": generation, "tenants": tenants}


def build_from_config(config: Mapping[str, Any], previous: Snapshot | None = None, *,
                      loader: Loader | None = None) -> Snapshot:
    """Build a snapshot from `read_config()` data; reuse unchanged scripts of `previous`."""
    started = time.perf_counter()
    load = loader or _default_loader()
    cache = previous.scripts if previous is not None else {}
    scripts: dict[ScriptKey, Any] = {}
    tenants: list[TenantEntry] = []
    for row in config["tenants"]:
        backends = {
            b["name"]: BackendEntry.from_url(
                id=b["id"], tenant=row["slug"], name=b["name"], url=b["url"],
                weight=b["weight"], enabled=b["enabled"],
                health_check_path=b["health_check_path"],
                connect_timeout_ms=b["connect_timeout_ms"],
                read_timeout_ms=b["read_timeout_ms"])
            for b in row["backends"]
        }
        script = None
        unavailable = ""
        version = row["version"]
        if version is not None:
            if version["fault"]:
                unavailable = (f"script version {version['number']} was disabled after it "
                               f"blocked a gateway worker ({version['fault']}); "
                               "activate another one")
            else:
                overrides = dict(row.get("limits") or {})
                key: ScriptKey = (row["id"], version["number"], version["sha256"],
                                  frozenset(backends), tuple(sorted(overrides.items())))
                script = cache.get(key)
                if script is None:
                    try:
                        script = load(version["source"], tenant=row["slug"],
                                      backend_names=sorted(backends),
                                      limits=script_limits(overrides))
                    except Exception as exc:  # ScriptLoadError, or anything the engine raised
                        log.error("tenant %s: script v%s could not be loaded: %s",
                                  row["slug"], version["number"], exc)
                        unavailable = f"script version {version['number']} could not be loaded"
                if script is not None:
                    scripts[key] = script
        tenants.append(TenantEntry(
            id=row["id"], slug=row["slug"], name=row["name"], prefix=row["prefix"],
            domains=tuple(row["domains"]),
            backends=MappingProxyType(backends),
            default_pool=tuple(b for b in backends.values() if b.enabled and b.weight > 0),
            script=script,
            version_id=version["id"] if version is not None else None,
            version_number=version["number"] if version is not None else None,
            is_selector=bool(getattr(script, "is_selector", False)),
            unavailable=unavailable,
        ))
    return compile_snapshot(config["generation"], tenants, scripts=scripts,
                            build_seconds=time.perf_counter() - started)


def script_limits(overrides: Mapping[str, int] | None = None) -> Any:
    """The Limits every tenant script is loaded with: the engine's defaults, the gateway's
    settings (CHISTONE_LUA_*, routing.conf), then the tenant's own (`overrides`). The data
    plane, the dry run and script tests all load through this, so a limit behaves the same in
    all three."""
    from luascripts.engine import Limits
    from routing.conf import get_conf

    values: dict[str, Any] = get_conf().lua_limit_overrides()
    values.update(overrides or {})
    return Limits(**values) if values else Limits()


def build_snapshot(previous: Snapshot | None = None, *, loader: Loader | None = None) -> Snapshot:
    """Read active tenants, backends and active script versions; reuse unchanged scripts."""
    config = read_config()
    snapshot = build_from_config(config, previous, loader=loader)
    if previous is None or previous.generation != snapshot.generation:
        disk.save(config)
    return snapshot


class SnapshotHolder:
    """Where the serving snapshot lives; `current` is replaced by one assignment.

    `rebuild()` is serialised by a lock and never replaces a snapshot with an older
    generation, whichever thread calls it (the committing thread, the watcher, startup).
    """

    def __init__(self) -> None:
        self.current: Snapshot | None = None
        self.last_error: str = ""
        self.from_disk = False  # serving a configuration read from disk, not the database
        self.reloads = 0
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[Snapshot], None]] = []

    def subscribe(self, callback: Callable[[Snapshot], None]) -> None:
        self._subscribers.append(callback)

    def swap(self, snapshot: Snapshot) -> bool:
        current = self.current
        if current is not None and snapshot.generation < current.generation:
            return False
        self.current = snapshot
        self.reloads += 1
        for callback in list(self._subscribers):
            try:
                callback(snapshot)
            except Exception:
                log.exception("snapshot subscriber failed")
        return True

    def rebuild(self, *, loader: Loader | None = None) -> Snapshot | None:
        """Build from the database and swap; on failure keep serving the last snapshot."""
        from django.db import close_old_connections

        with self._lock:
            close_old_connections()
            try:
                snapshot = build_snapshot(self.current, loader=loader)
            except Exception as exc:
                self.last_error = str(exc)
                if self.current is None:
                    return self._cold_start_from_disk(loader)
                log.warning("snapshot rebuild failed (%s); still serving generation %s",
                            exc, self.current.generation)
                return None
            self.last_error = ""
            self.from_disk = False
            self.swap(snapshot)
            log.info("snapshot generation %s: %d tenants in %.1f ms", snapshot.generation,
                     len(snapshot.tenants), snapshot.build_seconds * 1000)
            return snapshot

    def _cold_start_from_disk(self, loader: Loader | None) -> Snapshot | None:
        """The database is down at start: serve the last configuration saved on disk."""
        config = disk.load()
        if config is None:
            log.error("no configuration: the database is unreachable (%s) and no snapshot "
                      "was saved on disk", self.last_error)
            return None
        snapshot = build_from_config(config, None, loader=loader)
        self.from_disk = True
        self.swap(snapshot)
        log.warning("database unreachable (%s): serving generation %s from the on-disk "
                    "snapshot", self.last_error, snapshot.generation)
        return snapshot

    def on_config_change(self, generation: int, slugs: frozenset[str]) -> None:
        """A `tenants.events` listener: rebuild right after a committed change in this process."""
        if self.current is None or generation > self.current.generation:
            self.rebuild()


holder = SnapshotHolder()
"""The process's snapshot holder: `routing.snapshot.holder.current` is what is served."""
