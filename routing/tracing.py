"""OpenTelemetry traces of the data plane: when configured, and nothing at all otherwise.

Tracing is on when the standard variable `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and `OTEL_SDK_DISABLED` is not true. Then each
worker exports with the maintained SDK over OTLP/HTTP (protobuf), batched by the SDK's
BatchSpanProcessor in its own thread, off the request path; every other OTEL_* variable
(service name, headers, timeouts, batch sizes, sampler) is the SDK's to read. When tracing
is off, `Tracing.create()` returns None and the gateway's only cost is one `is None` check
per request.

Spans of one request:

    request (SERVER)          tenant, route pattern, status, backend, request id
    +-- script                the tenant's script, from start to its answer (waits included;
    |   |                     `chistone.lua_ms` is the time spent running Lua)
    |   +-- call BACKEND      each http.request (CLIENT)
    |   +-- upstream BACKEND  each exchange a middleware opened by looking at a response
    +-- upstream BACKEND      each attempt of the final proxy (CLIENT): retries are visible

An incoming W3C `traceparent`/`tracestate` from the client is continued; a missing or
invalid one starts a new trace. Towards backends the gateway always sends its own upstream
span as the parent: whatever a client or a script wrote under those names is replaced, so a
tenant's script cannot graft the gateway's spans onto a trace of its choosing. Scripts add
attributes and events to the request span with `trace.set(key, value)` and
`trace.event(name)` (bounded; see luascripts/engine/helpers.lua).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

TRACE_HEADERS = frozenset({"traceparent", "tracestate"})


def configured(environ: Any = os.environ) -> bool:
    """Whether the standard OpenTelemetry variables ask for trace export."""
    if str(environ.get("OTEL_SDK_DISABLED", "")).strip().lower() == "true":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


class Tracing:
    """The process's tracer and propagator (one per worker, made when the plane starts)."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.tracer = provider.get_tracer("chistone.gateway")
        self.propagator = TraceContextTextMapPropagator()
        self._trace = trace

    @classmethod
    def create(cls, environ: Any = os.environ) -> Tracing | None:
        if not configured(environ):
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        attributes = {} if environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: "chistone"}
        provider = TracerProvider(resource=Resource.create(attributes))
        if environ is os.environ:  # the SDK reads every OTEL_* variable itself
            exporter = OTLPSpanExporter()
        else:  # a mapping of our own (tests, benchmarks): its endpoint, the SDK's rule
            endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
                environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces")
            exporter = OTLPSpanExporter(endpoint=endpoint)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    def shutdown(self) -> None:
        self.provider.shutdown()  # flushes what is batched

    # -- spans ----------------------------------------------------------------------------

    def start_request(self, headers: Iterable[tuple[str, str]], method: str) -> Any:
        """The request's SERVER span, continuing the client's trace when it sent a valid
        traceparent (the propagator ignores an invalid one: a new trace starts)."""
        carrier = {name: value for name, value in headers if name in TRACE_HEADERS}
        context = self.propagator.extract(carrier) if carrier else None
        return self.tracer.start_span(method, context=context,
                                      kind=self._trace.SpanKind.SERVER)

    def child(self, parent: Any, name: str, *, client: bool = False,
              attributes: dict[str, Any] | None = None) -> Any:
        context = self._trace.set_span_in_context(parent)
        kind = self._trace.SpanKind.CLIENT if client else self._trace.SpanKind.INTERNAL
        return self.tracer.start_span(name, context=context, kind=kind, attributes=attributes)

    def inject(self, span: Any, headers: list[tuple[str, str]]) -> None:
        """Make `span` the parent the backend sees: its traceparent replaces any other in
        `headers` (a client's or a script's)."""
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        headers[:] = [(n, v) for n, v in headers if n not in TRACE_HEADERS]
        headers.extend(carrier.items())

    def end(self, span: Any, *, status: int | None = None, error: str | None = None) -> None:
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, error))
        span.end()

    @contextmanager
    def client_span(self, parent: Any, name: str, headers: list[tuple[str, str]],
                    attributes: dict[str, Any]) -> Iterator[Any]:
        """A CLIENT span around one exchange with a backend; `headers` (the request's) get
        its traceparent, replacing any other."""
        span = self.child(parent, name, client=True, attributes=attributes)
        self.inject(span, headers)
        try:
            yield span
        except BaseException as exc:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            span.end()

    def finish_request(self, span: Any, ex: Any, method: str) -> None:
        route = ex.route if ex.route and ex.route != "-" else None
        span.update_name(f"{method} {route}" if route else method)
        span.set_attributes({
            "chistone.tenant": ex.tenant, "chistone.request_id": ex.request_id,
            "http.request.method": method, "http.response.status_code": ex.status,
        })
        if route:
            span.set_attribute("http.route", route)
        if ex.backend:
            span.set_attribute("chistone.backend", ex.backend)
        if ex.error:
            span.set_attribute("error.type", ex.error)
        if ex.status >= 500 or ex.status == 0:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
        span.end()


# Script entries in the log buffer that are for the trace, not the log (helpers.lua `trace`).
TRACE_ATTRIBUTE, TRACE_EVENT = "trace.set", "trace.event"


def apply_script_entries(span: Any, entries: Iterable[tuple[str, str]]) -> None:
    """`trace.set(key, value)` and `trace.event(name)` of a script, onto the request span."""
    for level, message in entries:
        if level == TRACE_ATTRIBUTE:
            key, _, value = message.partition("=")
            span.set_attribute(f"script.{key}", value)
        elif level == TRACE_EVENT:
            span.add_event(message)
