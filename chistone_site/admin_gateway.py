"""What the running gateway knows, for the admin: traffic, recent requests, backend health.

The data plane lives in the same processes as the admin (chistone_site.asgi builds it next to
Django's application). Under `serve` every worker publishes, once a second, its counters and
backend health (routing.metrics) and its console report, its last hour per minute and its
recent requests (routing.traffic), each to its own file; the admin merges every worker's
files, with this worker's own state read from memory (fresher than its file). So the figures
are those of every worker of this node. Under a process that serves no traffic (a shell, a
test run) there is no data plane and everything here says "unknown" rather than inventing
numbers.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from routing import metrics
from routing.traffic import Aggregate, RecentRequests, merge_windows, per_minute

WINDOWS = {"5m": 5, "1h": 60}

# When a figure turns amber ("warn") or red ("bad"): one place, documented in docs/admin.md.
THRESHOLDS: dict[str, tuple[float, float]] = {
    "server_error_pct": (1.0, 5.0),
    "client_error_pct": (10.0, 30.0),
    "p50_ms": (200.0, 1000.0),
    "p99_ms": (500.0, 2000.0),
}


def level(name: str, value: float | None) -> str:
    """"ok", "warn" or "bad" for a figure (an unknown figure is "ok": nothing to flag)."""
    if value is None:
        return "ok"
    warn, bad = THRESHOLDS[name]
    return "bad" if value >= bad else "warn" if value >= warn else "ok"


def running_data_plane() -> Any | None:
    """The DataPlane serving in this process, if chistone_site.asgi has been loaded."""
    module = sys.modules.get("chistone_site.asgi")
    return getattr(module, "data_plane", None)


def _under_serve() -> bool:
    return metrics.shared_by_workers()


# -- traffic ----------------------------------------------------------------------------------

@dataclass
class Figures:
    """Requests/s, error shares and latency percentiles of one row over one window."""

    requests: int
    rate: float
    client_errors: int
    server_errors: int
    p50_ms: float | None
    p99_ms: float | None

    @classmethod
    def of(cls, agg: Aggregate, seconds: float) -> Figures:
        return cls(requests=agg.requests, rate=agg.requests / seconds,
                   client_errors=agg.client_errors, server_errors=agg.server_errors,
                   p50_ms=agg.percentile(0.5), p99_ms=agg.percentile(0.99))

    def _pct(self, part: int) -> float | None:
        return round(100.0 * part / self.requests, 1) if self.requests else None

    @property
    def client_error_pct(self) -> float | None:
        return self._pct(self.client_errors)

    @property
    def server_error_pct(self) -> float | None:
        return self._pct(self.server_errors)

    @property
    def levels(self) -> dict[str, str]:
        return {name: level(name, getattr(self, name)) for name in THRESHOLDS}


@dataclass
class TenantTrafficWindow:
    slug: str
    total: Figures
    routes: list[tuple[str, Figures]] = field(default_factory=list)
    backends: list[tuple[str, Figures]] = field(default_factory=list)
    chart: list[tuple[int, int, int, int]] = field(default_factory=list)  # per minute


@dataclass
class TrafficReport:
    window: str
    minutes: int
    seconds: float
    workers: int
    tenants: dict[str, TenantTrafficWindow]


def _console_reports(plane: Any) -> list[dict[str, Any]]:
    """Every worker's console report under `serve`; this process's alone otherwise."""
    own = json.loads(plane.console_report())
    if not _under_serve():
        return [own]
    reports = {r.get("pid"): r for r in metrics.read_reports(kind="console")}
    reports[os.getpid()] = own
    return list(reports.values())


def traffic_report(tenant_slugs: Iterable[str], window: str = "5m", *,
                   plane: Any | None = None, now: float | None = None) -> TrafficReport | None:
    """Per tenant, route and backend figures over `window` ("5m" or "1h"), or None when no
    gateway runs here. Only `tenant_slugs` (the operator's tenants) are read."""
    plane = plane if plane is not None else running_data_plane()
    if plane is None:
        return None
    now = time.time() if now is None else now
    minutes = WINDOWS.get(window, 5)
    reports = _console_reports(plane)
    windows = [r.get("window", {}) for r in reports]
    rows, seconds = merge_windows(windows, now=now, minutes=minutes)
    charts = per_minute(windows, now=now)
    wanted = set(tenant_slugs)
    totals: dict[str, Aggregate] = {}
    routes: dict[str, dict[str, Aggregate]] = {}
    backends: dict[str, dict[str, Aggregate]] = {}
    for (tenant, route, backend), agg in rows.items():
        if tenant not in wanted:
            continue
        for bucket, key in ((totals, None), (routes.setdefault(tenant, {}), route),
                            (backends.setdefault(tenant, {}), backend)):
            if key == "":
                continue  # answered without a backend (a Lua response, an error)
            slot_key = tenant if key is None else key
            target = bucket.get(slot_key)
            if target is None:
                target = bucket[slot_key] = Aggregate()
            target.add_row(agg.requests, agg.client_errors, agg.server_errors,
                           dict(enumerate(agg.hist)))
    tenants = {}
    for slug in sorted(wanted):
        total = totals.get(slug, Aggregate())
        tenants[slug] = TenantTrafficWindow(
            slug=slug, total=Figures.of(total, seconds),
            routes=sorted(((r, Figures.of(a, seconds)) for r, a in routes.get(slug, {}).items()),
                          key=lambda item: -item[1].requests),
            backends=sorted(((b, Figures.of(a, seconds))
                             for b, a in backends.get(slug, {}).items()),
                            key=lambda item: item[0]),
            chart=charts.get(slug, []),
        )
    return TrafficReport(window=window if window in WINDOWS else "5m", minutes=minutes,
                         seconds=seconds, workers=len(reports), tenants=tenants)


# -- recent requests --------------------------------------------------------------------------

def recent_requests(tenant_slugs: Iterable[str], *, request_id: str = "", tenant: str = "",
                    status: str = "", route: str = "", limit: int = 200,
                    plane: Any | None = None) -> list[dict[str, Any]] | None:
    """The recent requests of every worker, newest first, filtered; None without a gateway.

    `status` is a code ("502") or a class ("5xx"); `route` matches a substring of the route
    pattern; `request_id` a prefix of the id. Requests of tenants outside `tenant_slugs` are
    never returned (nor are requests that matched no tenant, unless `"-"` is among them).
    """
    plane = plane if plane is not None else running_data_plane()
    if plane is None:
        return None
    wanted = set(tenant_slugs)
    if tenant:
        wanted &= {tenant}
    status = status.strip().lower()
    rows = []
    for report in _console_reports(plane):
        for values in report.get("recent", []):
            row = dict(zip(RecentRequests.FIELDS, values, strict=False))
            row["worker"] = report.get("pid")
            if row["tenant"] not in wanted:
                continue
            if request_id and not str(row["request_id"]).startswith(request_id.strip()):
                continue
            if status:
                code = str(row["status"])
                if status.endswith("xx") and len(status) == 3:
                    if code[:1] != status[0]:
                        continue
                elif code != status:
                    continue
            if route and route not in (row["route"] or ""):
                continue
            rows.append(row)
    rows.sort(key=lambda r: r["time"], reverse=True)
    return rows[:limit]


# -- backend health and lifetime counters ---------------------------------------------------

@dataclass
class TenantTraffic:
    slug: str
    requests: int = 0
    client_errors: int = 0  # 4xx
    server_errors: int = 0  # 5xx: the gateway's and the backends' failures
    lua_errors: int = 0
    backends: list[dict[str, Any]] = field(default_factory=list)

    @property
    def error_rate(self) -> float | None:
        return self.server_errors / self.requests if self.requests else None

    @property
    def healthy_backends(self) -> int:
        return sum(1 for b in self.backends if b["healthy"])


@dataclass
class GatewayReport:
    generation: int | None
    ready: bool
    tenants: dict[str, TenantTraffic]
    retries: int = 0
    workers: int = 1


def when(epoch: float | None, now: float | None = None) -> str:
    """"03:51:20 UTC (4 min ago)" for a wall-clock time, "" for none."""
    if not epoch:
        return ""
    now = time.time() if now is None else now
    ago = max(0, int(now - epoch))
    span = (f"{ago} s" if ago < 120 else f"{ago // 60} min" if ago < 7200
            else f"{ago // 3600} h" if ago < 172800 else f"{ago // 86400} days")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))
    return f"{stamp} UTC ({span} ago)"


# Which state wins when workers disagree: the worst one (one worker that took a backend out
# is worth seeing), then "pending" over "healthy".
_STATE_RANK = {"unhealthy": 0, "pending": 1, "healthy": 2, "disabled": 3}


def _merge_health(views: list[dict[str, Any]]) -> dict[str, Any]:
    """One backend's health as every worker sees it: counters summed; the worst state, with
    that worker's reason; since the earliest of the workers in a bad state, or the latest
    of the workers in a good one (healthy everywhere since then)."""
    fresh = [v for v in views if v.get("_fresh", True)] or views
    worst = min(fresh, key=lambda v: _STATE_RANK.get(v.get("state", "healthy"), 2))
    state = worst.get("state", "healthy" if worst.get("healthy") else "unhealthy")
    same = [v.get("since") or 0 for v in fresh if v.get("state") == state]
    since = (min(same) if state in ("unhealthy", "pending") else max(same)) if same else None
    checks = [v for v in fresh if v.get("last_check")]
    latest = max(checks, key=lambda v: v["last_check"]) if checks else worst
    merged = {k: v for k, v in worst.items() if k != "_fresh"}
    merged.update(
        state=state, since=since or None,
        healthy=all(v.get("healthy") for v in fresh),
        requests=sum(v.get("requests", 0) for v in views),
        errors=sum(v.get("errors", 0) for v in views),
        ejections=sum(v.get("ejections", 0) for v in views),
        last_check=latest.get("last_check"), last_check_ok=latest.get("last_check_ok"),
        check_reason=latest.get("check_reason", ""),
        workers_unhealthy=sum(1 for v in fresh if v.get("state") == "unhealthy"),
        workers=len(fresh),
    )
    merged["since_text"] = when(merged["since"])
    merged["last_check_text"] = when(merged["last_check"])
    if not merged.get("last_error"):
        merged["last_error"] = next((v["last_error"] for v in views if v.get("last_error")), "")
    return merged


def _worker_reports(plane: Any) -> list[dict[str, Any]]:
    """Every worker's metrics report under `serve` (own state from memory); else our own."""
    own = {**plane.metrics_report(), "written": time.time()}
    if not _under_serve():
        return [own]
    reports = {r.get("pid"): r for r in metrics.read_reports() if "stats" in r}
    reports[os.getpid()] = own
    return list(reports.values())


def gateway_report(tenant_slugs: Iterable[str], plane: Any | None = None) -> GatewayReport | None:
    """Lifetime counters and backend health for `tenant_slugs`, merged over every worker of
    the node, or None when no gateway runs here."""
    plane = plane if plane is not None else running_data_plane()
    if plane is None:
        return None
    snapshot = plane.holder.current
    reports = _worker_reports(plane)
    now = time.time()
    wanted = list(tenant_slugs)
    tenants = {slug: TenantTraffic(slug=slug) for slug in wanted}
    health_views: dict[str, dict[str, list[dict[str, Any]]]] = {}
    live = 0
    for report in reports:
        fresh = now - report.get("written", now) <= metrics.STALE_AFTER_S
        live += fresh
        stats = report.get("stats", {})
        for row in stats.get("requests", []):
            traffic = tenants.get(row["tenant"])
            if traffic is None:
                continue
            traffic.requests += row["requests"]
            if 400 <= row["status"] < 500:
                traffic.client_errors += row["requests"]
            elif row["status"] >= 500:
                traffic.server_errors += row["requests"]
        for row in stats.get("lua_errors", []):
            if row["tenant"] in tenants:
                tenants[row["tenant"]].lua_errors += row["count"]
        for slug, backends in report.get("health", {}).items():
            if slug not in tenants:
                continue
            for name, view in backends.items():
                health_views.setdefault(slug, {}).setdefault(name, []).append(
                    {**view, "_fresh": fresh})
    # Only backends the current configuration has (a removed one may linger in old files).
    current = plane.health.report(snapshot)
    for slug, traffic in tenants.items():
        names = sorted(current.get(slug, {}))
        traffic.backends = [{"name": name, **_merge_health(health_views[slug][name])}
                            for name in names if name in health_views.get(slug, {})]
    return GatewayReport(
        generation=snapshot.generation if snapshot is not None else None,
        ready=snapshot is not None,
        tenants=tenants,
        retries=sum(r.get("stats", {}).get("retries", 0) for r in reports),
        workers=max(live, 1),
    )
