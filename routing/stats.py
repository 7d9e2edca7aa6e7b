"""In-process request counters and latency histograms, and the access log line.

Counted by (tenant, route pattern, status); the operations issue exports them as metrics.
Everything here is cheap enough for every request: dict lookups and a bisect.
"""

from __future__ import annotations

import json
import logging
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

access_log = logging.getLogger("chistone.access")

# Upper bounds in seconds (Prometheus-style cumulative buckets are derived on export).
BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)


@dataclass(slots=True)
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def to_dict(self) -> dict[str, Any]:
        return {"buckets": list(BUCKETS), "counts": list(self.counts), "sum": self.total,
                "count": self.count}


@dataclass(slots=True)
class Series:
    requests: int = 0
    bytes_sent: int = 0
    latency: Histogram = field(default_factory=Histogram)
    upstream_latency: Histogram = field(default_factory=Histogram)
    lua_seconds: float = 0.0


@dataclass
class Stats:
    series: dict[tuple[str, str, int], Series] = field(default_factory=dict)
    lua_errors: dict[tuple[str, str], int] = field(default_factory=dict)  # (tenant, kind)
    retries: int = 0

    def record(self, tenant: str, route: str, status: int, *, total: float,
               upstream: float | None, lua: float, sent: int) -> None:
        key = (tenant, route, status)
        series = self.series.get(key)
        if series is None:
            if len(self.series) > 100_000:  # bound memory against a flood of distinct keys
                return
            series = self.series[key] = Series()
        series.requests += 1
        series.bytes_sent += sent
        series.latency.observe(total)
        if upstream is not None:
            series.upstream_latency.observe(upstream)
        series.lua_seconds += lua

    def lua_error(self, tenant: str, kind: str) -> None:
        key = (tenant, kind)
        self.lua_errors[key] = self.lua_errors.get(key, 0) + 1

    def report(self) -> dict[str, Any]:
        """A JSON-able copy for the metrics endpoint and the admin dashboard."""
        return {
            "requests": [
                {"tenant": t, "route": r, "status": s, "requests": v.requests,
                 "bytes_sent": v.bytes_sent, "latency": v.latency.to_dict(),
                 "upstream_latency": v.upstream_latency.to_dict(), "lua_seconds": v.lua_seconds}
                for (t, r, s), v in self.series.items()
            ],
            "lua_errors": [{"tenant": t, "kind": k, "count": n}
                           for (t, k), n in self.lua_errors.items()],
            "retries": self.retries,
        }


def log_access(**fields: Any) -> None:
    """One JSON line per request on the `chistone.access` logger."""
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(json.dumps(fields, separators=(",", ":"), default=str))
