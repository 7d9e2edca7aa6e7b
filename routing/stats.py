"""In-process request counters and latency histograms, and the access log line.

Counted by (tenant, route pattern, status); the operations issue exports them as metrics.
Everything here is cheap enough for every request: dict lookups and a bisect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

from routing.guard import GuardCounter
from routing.logs import utc_timestamp
from routing.traffic import RecentRequests, TrafficWindow

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
    # http.request calls by (tenant, backend, outcome: ok|refused|timeout|broken|too_large)
    calls: dict[tuple[str, str, str], Histogram] = field(default_factory=dict)
    # WebSockets: open now and accepted so far by (tenant, backend); messages relayed by
    # (tenant, backend, direction: to_backend|to_client), counted by routing.websocket as
    # they pass; ended connections by (tenant, backend, close code).
    websockets_open: dict[tuple[str, str], int] = field(default_factory=dict)
    websocket_connections: dict[tuple[str, str], int] = field(default_factory=dict)
    websocket_messages: dict[tuple[str, str, str], int] = field(default_factory=dict)
    websocket_closes: dict[tuple[str, str, str], int] = field(default_factory=dict)
    window: TrafficWindow = field(default_factory=TrafficWindow)  # the console's last hour
    recent: RecentRequests = field(default_factory=RecentRequests)  # the request lookup
    guards: GuardCounter = field(default_factory=GuardCounter)  # guarded rollouts' counts
    # Shared-state operations answered without Redis, by (tenant, op: get|set|incr|delete|
    # limit) (routing.shared_state)
    shared_unavailable: dict[tuple[str, str], int] = field(default_factory=dict)

    def observe(self, ex: Any, total: float, scope: Any, request: Any) -> None:
        """Count one finished exchange (the gateway's one call per request): the counters,
        the console's per-minute window and its ring of recent requests."""
        tenant, route, status, backend = ex.tenant, ex.route, ex.status, ex.backend
        self.record(tenant, route, status, total=total, upstream=ex.upstream, lua=ex.lua,
                    sent=ex.sent)
        if ex.guard:
            self.guards.count(ex.guard, ex.arm, status)
        now = time.time()
        self.window.add(tenant, route, backend, status, total, now)
        path = request.raw_path if request is not None else scope.get("path")
        self.recent.add((ex.request_id, now, tenant, route, status, backend, ex.version,
                         scope.get("method"), path[:300] if path else path, total, ex.upstream,
                         ex.lua, ex.retries, ex.error))

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

    def call(self, tenant: str, backend: str, outcome: str, seconds: float) -> None:
        key = (tenant, backend, outcome)
        histogram = self.calls.get(key)
        if histogram is None:
            if len(self.calls) > 10_000:
                return
            histogram = self.calls[key] = Histogram()
        histogram.observe(seconds)

    # -- WebSockets (routing.websocket), by (tenant, backend) --------------------------------
    def websocket_opened(self, tenant: str, backend: str) -> None:
        key = (tenant, backend)
        self.websockets_open[key] = self.websockets_open.get(key, 0) + 1
        self.websocket_connections[key] = self.websocket_connections.get(key, 0) + 1

    def websocket_closed(self, tenant: str, backend: str, code: int | None) -> None:
        key = (tenant, backend)
        self.websockets_open[key] = self.websockets_open.get(key, 1) - 1
        closed = (tenant, backend, str(code) if code is not None else "none")
        if len(self.websocket_closes) < 10_000 or closed in self.websocket_closes:
            self.websocket_closes[closed] = self.websocket_closes.get(closed, 0) + 1

    def shared_state_unavailable(self, tenant: str, op: str) -> None:
        key = (tenant, op)
        self.shared_unavailable[key] = self.shared_unavailable.get(key, 0) + 1

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
            "calls": [{"tenant": t, "backend": b, "outcome": o, "latency": h.to_dict()}
                      for (t, b, o), h in self.calls.items()],
            "websockets": [{"tenant": t, "backend": b, "open": self.websockets_open.get((t, b), 0),
                            "connections": n}
                           for (t, b), n in self.websocket_connections.items()],
            "websocket_messages": [{"tenant": t, "backend": b, "direction": d, "count": n}
                                   for (t, b, d), n in self.websocket_messages.items()],
            "websocket_closes": [{"tenant": t, "backend": b, "code": c, "count": n}
                                 for (t, b, c), n in self.websocket_closes.items()],
            "shared_unavailable": [{"tenant": t, "op": o, "count": n}
                                   for (t, o), n in self.shared_unavailable.items()],
        }


_fast_sink: BufferedLineHandler | None = None  # set by install_buffered_access_log
_text = json.encoder.encode_basestring_ascii  # what json.dumps does to a str, in C


def _opt(value: str | None) -> str:
    return "null" if value is None else _text(value)


def _ms(seconds: float | None) -> str:
    """Milliseconds as `json.dumps(round(seconds * 1000, 3))` writes them. One correctly
    rounded formatting with its trailing zeros stripped is the same text for every duration
    (below 10^12 ms) at a third of the cost: round() formats, parses back, and repr() formats
    again."""
    if seconds is None:
        return "null"
    text = ("%.3f" % (seconds * 1000)).rstrip("0")
    return text + "0" if text[-1] == "." else text


def access_line(*, request_id: str, tenant: str, route: str, method: str | None,
                path: str | None, status: int, backend: str | None, sent: int,
                upstream: float | None, total: float, lua: float, retries: int,
                error: str | None, client: str | None) -> str:
    """The access-log line: what `json.dumps` gives for these fields (compact separators,
    ASCII), written out field by field because it runs for every request (about 4x faster
    than encoding a dict). Times come in seconds and are logged in milliseconds."""
    return (f'{{"ts":"{utc_timestamp()}","logger":"chistone.access",'
            f'"request_id":{_text(request_id)},"tenant":{_text(tenant)},'
            f'"route":{_text(route)},"method":{_opt(method)},"path":{_opt(path)},'
            f'"status":{int(status)},"backend":{_opt(backend)},"bytes":{int(sent)},'
            f'"upstream_ms":{_ms(upstream)},"total_ms":{_ms(total)},"lua_ms":{_ms(lua)},'
            f'"retries":{int(retries)},"error":{_opt(error)},"client":{_opt(client)}}}')


def websocket_fields(line: str, session: Any) -> str:
    """An access-log line of a WebSocket request (written when the connection ends) with its
    own fields appended: `"websocket": {"duration_ms", "messages_in", "messages_out",
    "bytes_in", "bytes_out", "close_code", "close_reason", "closed_by"}` ("in": from the
    client to the backend), or `"websocket": null` when it was never upgraded."""
    if session is None:
        return line[:-1] + ',"websocket":null}'
    duration = time.monotonic() - session.opened
    code = "null" if session.close_code is None else str(int(session.close_code))
    return (f'{line[:-1]},"websocket":{{"duration_ms":{_ms(duration)},'
            f'"messages_in":{int(session.messages_in)},'
            f'"messages_out":{int(session.messages_out)},'
            f'"bytes_in":{int(session.bytes_in)},"bytes_out":{int(session.bytes_out)},'
            f'"close_code":{code},"close_reason":{_text(session.close_reason or "")},'
            f'"closed_by":{_opt(session.closed_by or None)}}}}}')


def log_access(line: str) -> None:
    """One JSON line per request on the `chistone.access` logger (see `access_line`), led by
    the same "ts" and "logger" fields as every other log line (routing.logs).

    When the gateway's own batching handler is the logger's only handler, the line goes
    straight into its buffer (no LogRecord per request); otherwise through logging as usual.
    """
    sink = _fast_sink
    if sink is not None and access_log.handlers == [sink]:
        sink.write_line(line)
    elif access_log.isEnabledFor(logging.INFO):
        access_log.info(line)


class BufferedLineHandler(logging.Handler):
    """Writes each record's message as one line, in batches: at most every `interval` seconds
    or `max_bytes`, so a busy gateway does not pay a write system call per request."""

    def __init__(self, stream=None, *, interval: float = 0.2, max_bytes: int = 64 * 1024) -> None:
        super().__init__()
        self.stream = stream or sys.stderr
        self.interval = interval
        self.max_bytes = max_bytes
        self._lines: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = record.getMessage()
        except Exception:
            self.handleError(record)
            return
        self.write_line(line)

    def write_line(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line) + 1
        if self._size >= self.max_bytes:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        self._timer = None
        if not self._lines:
            return
        lines, self._lines, self._size = self._lines, [], 0
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except Exception:
            pass


def install_buffered_access_log() -> BufferedLineHandler | None:
    """Give the access logger a batching handler unless logging settings configured one."""
    if access_log.handlers:
        return None
    global _fast_sink
    handler = BufferedLineHandler()
    access_log.addHandler(handler)
    _fast_sink = handler
    access_log.propagate = False
    if access_log.level == logging.NOTSET:
        access_log.setLevel(logging.INFO)
    return handler


def uninstall_access_log(handler: BufferedLineHandler | None) -> None:
    global _fast_sink
    if handler is not None:
        _fast_sink = None
        handler.flush()
        access_log.removeHandler(handler)
        access_log.propagate = True
