"""What the operators' console shows of recent traffic: per-minute windows and recent requests.

Per worker and bounded, so the cost per request is a few dict and list operations:

- `TrafficWindow`: one bucket per wall-clock minute for the last `MINUTES` minutes, each
  holding, per (tenant, route pattern, backend), the request count, the 4xx and 5xx counts
  and a latency histogram. Rates and percentiles over the last 5 minutes or the last hour
  come from summing buckets (`merge_windows`), also across the workers of a node, whose
  minutes line up because they are wall-clock minutes.
- `RecentRequests`: a ring of the last `size` requests (id, time, tenant, route, status,
  backend, version, timings, error) for the request lookup.

Each worker publishes both next to its metrics report (routing.metrics, once a second); the
admin merges every worker's file. A closed minute never changes, so its JSON is encoded once.
"""

from __future__ import annotations

import json
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from typing import Any

MINUTES = 60
MAX_KEYS_PER_MINUTE = 2000  # beyond this, a minute's new keys fold into one "(other)" row
OTHER = "(other)"
# Latency bucket upper bounds in milliseconds (about 1.5x apart): p50/p99 are read from
# these, interpolated within a bucket, so they are accurate to a fraction of a bucket.
LATENCY_MS: tuple[float, ...] = (
    0.5, 1, 1.5, 2, 3, 4, 5, 7, 10, 15, 20, 30, 40, 50, 70, 100, 150, 200, 300, 400, 500, 700,
    1000, 1500, 2000, 3000, 5000, 7000, 10000, 15000, 20000, 30000, 60000,
)
_BOUNDS_S = tuple(ms / 1000 for ms in LATENCY_MS)
_HIST = 3  # row layout: [requests, 4xx, 5xx, bucket 0, bucket 1, ..., overflow bucket]
_ROW = _HIST + len(LATENCY_MS) + 1


class TrafficWindow:
    """Per-minute request counts and latency histograms of one worker, for the last hour."""

    def __init__(self, clock=time.time) -> None:
        self.clock = clock
        self.minute = -1
        self.current: dict[tuple[str, str, str], list[int]] = {}
        # Closed minutes, oldest first: (minute, JSON of its rows), encoded once when closed.
        self.closed: deque[tuple[int, str]] = deque(maxlen=MINUTES)

    def add(self, tenant: str, route: str, backend: str, status: int, seconds: float,
            now: float) -> None:
        minute = int(now) // 60
        if minute != self.minute:
            self._roll(minute)
        key = (tenant, route, backend)
        row = self.current.get(key)
        if row is None:
            if len(self.current) >= MAX_KEYS_PER_MINUTE:
                key = (tenant, OTHER, "")
                row = self.current.get(key)
            if row is None:
                row = self.current[key] = [0] * _ROW
        row[0] += 1
        if status >= 500:
            row[2] += 1
        elif status >= 400:
            row[1] += 1
        row[_HIST + bisect_left(_BOUNDS_S, seconds)] += 1

    def _roll(self, minute: int) -> None:
        if self.current and self.minute >= 0:
            self.closed.append((self.minute, _encode_rows(self.current)))
        self.current = {}
        self.minute = minute

    def to_json(self) -> str:
        """The last hour as JSON: {"minutes": [[minute, rows], ...]}; rows are
        [tenant, route, backend, requests, 4xx, 5xx, {bucket index: count}]."""
        horizon = int(self.clock()) // 60 - MINUTES
        parts = [f"[{minute},{rows}]" for minute, rows in self.closed if minute > horizon]
        if self.current and self.minute > horizon:
            parts.append(f"[{self.minute},{_encode_rows(self.current)}]")
        return '{"minutes":[' + ",".join(parts) + "]}"


def _encode_rows(rows: dict[tuple[str, str, str], list[int]]) -> str:
    out = []
    for (tenant, route, backend), row in rows.items():
        hist = {i: n for i, n in enumerate(row[_HIST:]) if n}
        out.append([tenant, route, backend, row[0], row[1], row[2], hist])
    return json.dumps(out, separators=(",", ":"))


class RecentRequests:
    """A ring of the last `size` requests this worker answered."""

    FIELDS = ("request_id", "time", "tenant", "route", "status", "backend", "version",
              "method", "path", "total_ms", "upstream_ms", "lua_ms", "retries", "error")

    def __init__(self, size: int = 1000) -> None:
        self.ring: deque[tuple] = deque(maxlen=size)

    def add(self, entry: tuple) -> None:
        self.ring.append(entry)

    def to_list(self) -> list[list[Any]]:
        """Rows in FIELDS order, times in milliseconds."""
        out = []
        for (rid, at, tenant, route, status, backend, version, method, path, total, upstream,
             lua, retries, error) in self.ring:
            out.append([rid, round(at, 3), tenant, route, status, backend, version, method,
                        path, _ms(total), _ms(upstream), _ms(lua), retries, error])
        return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


# -- reading: merge the workers' windows, then summarise ---------------------------------------

class Aggregate:
    """Requests, 4xx, 5xx and a latency histogram summed over minutes (and workers)."""

    __slots__ = ("requests", "client_errors", "server_errors", "hist")

    def __init__(self) -> None:
        self.requests = 0
        self.client_errors = 0
        self.server_errors = 0
        self.hist = [0] * (len(LATENCY_MS) + 1)

    def add_row(self, requests: int, c4: int, c5: int, hist: dict[Any, int]) -> None:
        self.requests += requests
        self.client_errors += c4
        self.server_errors += c5
        for index, count in hist.items():
            i = int(index)
            if 0 <= i < len(self.hist):
                self.hist[i] += count

    def percentile(self, q: float) -> float | None:
        """Latency in ms below which a share `q` of the requests fell, or None without any."""
        total = sum(self.hist)
        if not total:
            return None
        rank = q * total
        seen = 0
        for i, count in enumerate(self.hist):
            if count and seen + count >= rank:
                low = LATENCY_MS[i - 1] if i > 0 else 0.0
                high = LATENCY_MS[i] if i < len(LATENCY_MS) else LATENCY_MS[-1] * 2
                return round(low + (high - low) * (rank - seen) / count, 1)
            seen += count
        return LATENCY_MS[-1]


def merge_windows(windows: Iterable[dict[str, Any]], *, now: float, minutes: int
                  ) -> tuple[dict[tuple[str, str, str], Aggregate], float]:
    """Sum the rows of the last `minutes` minutes (the current one included) of every window.

    Returns ({(tenant, route, backend): Aggregate}, seconds the window spans): the current
    minute counts only as far as it has gone, so a rate is `requests / seconds`.
    """
    current = int(now) // 60
    first = current - minutes + 1
    out: dict[tuple[str, str, str], Aggregate] = {}
    for window in windows:
        for minute, rows in window.get("minutes", []):
            if not first <= minute <= current:
                continue
            for tenant, route, backend, requests, c4, c5, hist in rows:
                key = (tenant, route, backend)
                agg = out.get(key)
                if agg is None:
                    agg = out[key] = Aggregate()
                agg.add_row(requests, c4, c5, hist)
    seconds = (minutes - 1) * 60 + (now - current * 60)
    return out, max(seconds, 1.0)


def per_minute(windows: Iterable[dict[str, Any]], *, now: float, minutes: int = MINUTES
               ) -> dict[str, list[tuple[int, int, int, int]]]:
    """{tenant: [(minute start, requests, 4xx, 5xx) for each of the last `minutes`]} for charts."""
    current = int(now) // 60
    first = current - minutes + 1
    counts: dict[str, dict[int, list[int]]] = {}
    for window in windows:
        for minute, rows in window.get("minutes", []):
            if not first <= minute <= current:
                continue
            for tenant, _route, _backend, requests, c4, c5, _hist in rows:
                slot = counts.setdefault(tenant, {}).setdefault(minute, [0, 0, 0])
                slot[0] += requests
                slot[1] += c4
                slot[2] += c5
    return {tenant: [(m * 60, *by_minute.get(m, (0, 0, 0))) for m in range(first, current + 1)]
            for tenant, by_minute in counts.items()}
