"""Prometheus metrics that are correct across N worker processes.

Each worker keeps cheap in-process counters (routing.stats, routing.health) and, once a second
off the request path, writes a JSON report of them to its own file in a shared directory
(`write_report`). `/metrics` on the control plane, answered by whichever worker gets it,
merges every file (`render`): counters and histograms are summed, so the totals are those of
the whole node. Files of workers that died stay, so counters never go backwards; the
supervisor gives each `serve` run a fresh directory. No per-request cost beyond the counters.

Gauges (the generation a worker serves, its last reload time, whether a backend is healthy)
describe the present, so they come only from fresh reports: a worker that has not published
for STALE_AFTER_S is gone (or hung, and about to be replaced). Otherwise a worker that died
while it saw a backend down would keep that backend reported down until `serve` restarts.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from routing.conf import get_conf

STALE_AFTER_S = 5.0  # five missed publications (one a second); the watchdog's default bound


def shared_by_workers() -> bool:
    """True under `serve`, which gives its workers one directory (CHISTONE_METRICS_DIR)."""
    return get_conf().metrics_dir is not None


def metrics_dir() -> Path:
    path = get_conf().metrics_dir or Path(tempfile.gettempdir(),
                                          f"chistone-metrics-{os.getpid()}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_report(report: dict[str, Any], directory: Path | None = None) -> Path:
    """Atomically replace this process's report file (stamped with the time it was written)."""
    report = {**report, "written": time.time()}
    return write_text(json.dumps(report, separators=(",", ":")), directory)


def write_text(text: str, directory: Path | None = None, *, kind: str = "worker") -> Path:
    """Atomically replace this process's `kind` file: "worker" for the metrics report,
    "console" for the admin's traffic window and recent requests (routing.traffic)."""
    directory = directory or metrics_dir()
    target = directory / f"{kind}-{os.getpid()}.json"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, target)
    return target


def read_reports(directory: Path | None = None, *, kind: str = "worker") -> list[dict[str, Any]]:
    directory = directory or metrics_dir()
    reports = []
    for path in sorted(directory.glob(f"{kind}-*.json")):
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # a file being replaced right now; the next scrape sees it
    return reports


def _histogram(name: str, doc: str, labels: list[str],
               series: dict[tuple, dict[str, Any]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for key, hist in series.items():
        cumulative, running = [], 0
        for bound, count in zip([*hist["buckets"], float("inf")], hist["counts"], strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        family.add_metric(list(key), cumulative, hist["sum"])
    return family


def _family(kind: Any, name: str, doc: str, labels: list[str],
            values: dict[tuple, float]) -> Any:
    family = kind(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


def _add_hist(into: dict[str, Any] | None, hist: dict[str, Any]) -> dict[str, Any]:
    if into is None:
        return {"buckets": list(hist["buckets"]), "counts": list(hist["counts"]),
                "sum": hist["sum"], "count": hist["count"]}
    into["counts"] = [a + b for a, b in zip(into["counts"], hist["counts"], strict=True)]
    into["sum"] += hist["sum"]
    into["count"] += hist["count"]
    return into


class ReportCollector(Collector):
    """Turns merged worker reports into Prometheus metric families."""

    def __init__(self, reports: Iterable[dict[str, Any]]) -> None:
        self.reports = list(reports)

    def collect(self) -> Iterator[Any]:
        requests: dict[tuple, int] = defaultdict(int)
        sent: dict[tuple, int] = defaultdict(int)
        latency: dict[tuple, Any] = {}
        upstream: dict[tuple, Any] = {}
        lua_seconds: dict[tuple, float] = defaultdict(float)
        lua_errors: dict[tuple, int] = defaultdict(int)
        backend_requests: dict[tuple, int] = defaultdict(int)
        backend_errors: dict[tuple, int] = defaultdict(int)
        backend_up: dict[tuple, int] = {}
        calls: dict[tuple, Any] = {}
        auto_rollbacks: dict[tuple, int] = defaultdict(int)
        rollout_percent: dict[tuple, int] = {}
        shadow: dict[tuple, int] = defaultdict(int)
        ws_open: dict[tuple, int] = defaultdict(int)
        ws_connections: dict[tuple, int] = defaultdict(int)
        ws_messages: dict[tuple, int] = defaultdict(int)
        ws_closes: dict[tuple, int] = defaultdict(int)
        shared_unavailable: dict[tuple, int] = defaultdict(int)
        retries = 0
        generation = GaugeMetricFamily("chistone_config_generation",
                                       "Configuration generation each worker serves.",
                                       labels=["worker"])
        reload_seconds = GaugeMetricFamily("chistone_config_reload_seconds",
                                           "Duration of each worker's last snapshot rebuild.",
                                           labels=["worker"])
        reloads = CounterMetricFamily("chistone_config_reloads",
                                      "Snapshot swaps per worker.", labels=["worker"])
        now = time.time()
        live = 0
        for report in self.reports:
            worker = str(report.get("pid", "?"))
            fresh = now - report.get("written", now) <= STALE_AFTER_S
            live += fresh
            stats = report.get("stats", {})
            for row in stats.get("requests", []):
                key = (row["tenant"], row["route"], str(row["status"]))
                requests[key] += row["requests"]
                sent[key] += row["bytes_sent"]
                latency[key] = _add_hist(latency.get(key), row["latency"])
                if row["upstream_latency"]["count"]:
                    upstream[key] = _add_hist(upstream.get(key), row["upstream_latency"])
                lua_seconds[(row["tenant"],)] += row["lua_seconds"]
            for row in stats.get("lua_errors", []):
                lua_errors[(row["tenant"], row["kind"])] += row["count"]
            retries += stats.get("retries", 0)
            for row in stats.get("calls", []):
                key = (row["tenant"], row["backend"], row["outcome"])
                calls[key] = _add_hist(calls.get(key), row["latency"])
            for row in stats.get("websockets", []):
                key = (row["tenant"], row["backend"])
                ws_connections[key] += row["connections"]
                ws_open[key] += row["open"] if fresh else 0  # a gone worker's are closed
            for row in stats.get("websocket_messages", []):
                ws_messages[(row["tenant"], row["backend"], row["direction"])] += row["count"]
            for row in stats.get("websocket_closes", []):
                ws_closes[(row["tenant"], row["backend"], row["code"])] += row["count"]
            for row in stats.get("shared_unavailable", []):
                shared_unavailable[(row["tenant"], row["op"])] += row["count"]
            for tenant, backends in report.get("health", {}).items():
                for name, state in backends.items():
                    backend_requests[(tenant, name)] += state.get("requests", 0)
                    backend_errors[(tenant, name)] += state.get("errors", 0)
                    if fresh:  # healthy only if every live worker that knows it says so
                        up = 1 if state.get("healthy") else 0
                        backend_up[(tenant, name)] = min(backend_up.get((tenant, name), 1), up)
            for tenant, count in (report.get("auto_rollbacks") or {}).items():
                auto_rollbacks[(tenant,)] += count
            for tenant, (same, different, dropped) in (report.get("shadow") or {}).items():
                shadow[(tenant, "same")] += same
                shadow[(tenant, "different")] += different
                shadow[(tenant, "dropped")] += dropped
            if fresh:
                for row in report.get("rollouts") or []:
                    rollout_percent[(row["tenant"], str(row["version"]))] = row["percent"]
            if report.get("generation") is not None:
                reloads.add_metric([worker], report.get("reloads", 0))
                if fresh:
                    generation.add_metric([worker], report["generation"])
                    reload_seconds.add_metric([worker], report.get("build_seconds", 0.0))

        yield _family(CounterMetricFamily, "chistone_requests", "Data-plane requests answered.",
                      ["tenant", "route", "status"], requests)
        yield _family(CounterMetricFamily, "chistone_response_bytes", "Response body bytes sent.",
                      ["tenant", "route", "status"], sent)
        yield _histogram("chistone_request_duration_seconds", "Total time per request.",
                         ["tenant", "route", "status"], latency)
        yield _histogram("chistone_upstream_duration_seconds",
                         "Time to the upstream's response headers.",
                         ["tenant", "route", "status"], upstream)
        yield _family(CounterMetricFamily, "chistone_lua_seconds",
                      "Time spent running tenant Lua.", ["tenant"], lua_seconds)
        yield _family(CounterMetricFamily, "chistone_lua_errors",
                      "Script failures by kind (error, timeout, memory).", ["tenant", "kind"],
                      lua_errors)
        yield _family(CounterMetricFamily, "chistone_upstream_requests",
                      "Requests sent to backends.", ["tenant", "backend"], backend_requests)
        yield _family(CounterMetricFamily, "chistone_upstream_failures",
                      "Backend failures (refused, reset, timeout, bad response).",
                      ["tenant", "backend"], backend_errors)
        yield _family(GaugeMetricFamily, "chistone_backend_healthy",
                      "1 if the backend is in service.", ["tenant", "backend"], backend_up)
        yield CounterMetricFamily("chistone_upstream_retries", "Retries to another backend.",
                                  value=retries)
        yield _histogram("chistone_script_call_duration_seconds",
                         "Scripts' http.request calls by outcome (ok, refused, timeout, broken, "
                         "too_large).", ["tenant", "backend", "outcome"], calls)
        yield _family(CounterMetricFamily, "chistone_auto_rollbacks",
                      "Rollouts a guard rolled back (counted by the worker that did it).",
                      ["tenant"], auto_rollbacks)
        yield _family(GaugeMetricFamily, "chistone_rollout_percent",
                      "Share of requests a running rollout's version answers.",
                      ["tenant", "version"], rollout_percent)
        yield _family(CounterMetricFamily, "chistone_shadow_requests",
                      "Sampled requests a shadow version decided: the same as the active one, "
                      "differently, or not at all (dropped, the worker was busy).",
                      ["tenant", "result"], shadow)
        yield _family(GaugeMetricFamily, "chistone_websocket_connections_open",
                      "WebSocket connections open now.", ["tenant", "backend"], ws_open)
        yield _family(CounterMetricFamily, "chistone_websocket_connections",
                      "WebSocket connections accepted (upgraded and relayed).",
                      ["tenant", "backend"], ws_connections)
        yield _family(CounterMetricFamily, "chistone_websocket_messages",
                      "WebSocket messages relayed, by direction (to_backend, to_client).",
                      ["tenant", "backend", "direction"], ws_messages)
        yield _family(CounterMetricFamily, "chistone_websocket_closes",
                      "WebSocket connections ended, by close code.",
                      ["tenant", "backend", "code"], ws_closes)
        yield _family(CounterMetricFamily, "chistone_shared_state_unavailable",
                      "Shared-state operations (shared.*, limit.allow) answered without Redis: "
                      "unreachable, slower than CHISTONE_REDIS_TIMEOUT_MS, or in the back-off "
                      "after a failure.", ["tenant", "op"], shared_unavailable)
        yield generation
        yield reload_seconds
        yield reloads
        yield GaugeMetricFamily("chistone_workers_reporting",
                                f"Workers that published within {STALE_AFTER_S:g} s.", value=live)


def render(directory: Path | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReportCollector(read_reports(directory)))
    return generate_latest(registry)
