"""What the running gateway knows, for the admin: backend health and traffic counters.

The data plane lives in the same process as the admin (chistone_site.asgi builds it next to
Django's application), so the admin reads its in-memory state directly. Under `serve`, the
traffic counters are those of every worker, merged from the reports they write once a second
for /metrics (routing.metrics); backend health is this worker's view. Under a process that
does not serve traffic (a shell, a test run) there is no data plane and everything here says
"unknown" rather than inventing numbers.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


def running_data_plane() -> Any | None:
    """The DataPlane serving in this process, if chistone_site.asgi has been loaded."""
    module = sys.modules.get("chistone_site.asgi")
    return getattr(module, "data_plane", None)


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


def gateway_report(tenant_slugs: Iterable[str], plane: Any | None = None) -> GatewayReport | None:
    """Traffic and backend health for `tenant_slugs`, or None when no gateway runs here."""
    plane = plane if plane is not None else running_data_plane()
    if plane is None:
        return None
    snapshot = plane.holder.current
    health = plane.health.report(snapshot)
    all_stats = _worker_stats(plane)
    wanted = list(tenant_slugs)
    tenants = {slug: TenantTraffic(slug=slug) for slug in wanted}
    for stats in all_stats:
        for row in stats["requests"]:
            traffic = tenants.get(row["tenant"])
            if traffic is None:
                continue
            traffic.requests += row["requests"]
            if 400 <= row["status"] < 500:
                traffic.client_errors += row["requests"]
            elif row["status"] >= 500:
                traffic.server_errors += row["requests"]
        for row in stats["lua_errors"]:
            if row["tenant"] in tenants:
                tenants[row["tenant"]].lua_errors += row["count"]
    for slug, traffic in tenants.items():
        traffic.backends = [{"name": name, **state}
                            for name, state in sorted(health.get(slug, {}).items())]
    return GatewayReport(
        generation=snapshot.generation if snapshot is not None else None,
        ready=snapshot is not None,
        tenants=tenants,
        retries=sum(stats.get("retries", 0) for stats in all_stats),
    )


def _worker_stats(plane: Any) -> list[dict[str, Any]]:
    """Every worker's counters under `serve`; this process's alone otherwise."""
    import os

    from routing import metrics

    own = plane.stats.report()
    if not metrics.shared_by_workers():
        return [own]
    reports = {r.get("pid"): r["stats"] for r in metrics.read_reports() if "stats" in r}
    reports[os.getpid()] = own  # fresher than this worker's last file
    return list(reports.values())
