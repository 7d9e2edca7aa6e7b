"""OpenTelemetry traces through the real server: a real OTLP/HTTP receiver on loopback gets the
spans, their parent links continue the client's trace across the gateway, and the backend
receives the gateway's span as its parent in `traceparent`."""

from __future__ import annotations

import gzip
import http.server
import threading
import time
import zlib
from collections.abc import Iterator

import pytest

from tests.e2e.backends import BackendFarm, free_port
from tests.serving import prepare_database, server_env, start_serve

pytestmark = pytest.mark.e2e

SCRIPT = r"""
chi.use(function(req, next)
  local who = http.request("auth", {path = "/verify", headers = {traceparent = "00-" ..
    string.rep("a", 32) .. "-" .. string.rep("b", 16) .. "-01"}})
  trace.set("caller", who and who.body or "?")
  trace.event("checked")
  req.headers["traceparent"] = "00-" .. string.rep("c", 32) .. "-" .. string.rep("d", 16) .. "-01"
  return next(req)
end)
chi.get("/traced", function(req) return proxy("app") end)
"""

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class Receiver:
    """A minimal OTLP/HTTP trace receiver: POST /v1/traces with a protobuf body."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        spans = self.spans = []
        lock = self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                encoding = self.headers.get("content-encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                message = ExportTraceServiceRequest()
                message.ParseFromString(body)
                with lock:
                    for resource in message.resource_spans:
                        for scope in resource.scope_spans:
                            spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 15.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.spans) >= count:
                    return list(self.spans)
            time.sleep(0.1)
        with self.lock:
            return list(self.spans)

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def traced(tmp_path_factory) -> Iterator[tuple]:
    farm = BackendFarm()
    app, auth = farm.add("trace-app"), farm.add("trace-auth")
    dead = f"http://127.0.0.1:{free_port()}"
    receiver = Receiver()
    tmp = tmp_path_factory.mktemp("tracing")
    env = server_env(f"sqlite:///{tmp / 'db.sqlite3'}", tmp,
                     OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}",
                     OTEL_BSP_SCHEDULE_DELAY="100", OTEL_SERVICE_NAME="chistone-test")
    prepare_database(env, {"tenants": [
        {"slug": "traced", "domains": ["traced.test"], "script": SCRIPT,
         "backends": [{"name": "app", "url": app.url}, {"name": "auth", "url": auth.url}]},
        {"slug": "retried", "domains": ["retried.test"],
         "backends": [{"name": "a-dead", "url": dead}, {"name": "b-alive", "url": app.url}]},
    ]}, tmp)
    served = start_serve(env, tmp / "serve.log", "--workers", "1")
    try:
        served.wait_ready()
        yield served, farm, receiver
    finally:
        served.stop()
        receiver.close()
        farm.close()


def by_id(spans: list) -> dict[str, object]:
    return {span.span_id.hex(): span for span in spans}


def attributes(span) -> dict[str, object]:
    out = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = value.string_value or value.int_value or value.bool_value
    return out


def test_the_clients_trace_continues_through_the_gateway_to_the_backend(traced):
    served, farm, receiver = traced
    import httpx

    with httpx.Client(base_url=served.data, trust_env=False, timeout=10) as client:
        response = client.get("/traced", headers={
            "Host": "traced.test", "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
    assert response.status_code == 200, response.text
    spans = [s for s in receiver.wait_for(5) if s.trace_id.hex() == CLIENT_TRACE]
    names = {s.name: s for s in spans}
    assert {"GET /traced", "script", "call auth", "upstream app"} <= set(names), sorted(names)
    request = names["GET /traced"]
    assert request.parent_span_id.hex() == CLIENT_SPAN  # continues the client's span
    assert names["script"].parent_span_id == request.span_id
    assert names["call auth"].parent_span_id == names["script"].span_id
    assert names["upstream app"].parent_span_id == request.span_id
    attrs = attributes(request)
    assert attrs["chistone.tenant"] == "traced" and attrs["http.route"] == "/traced"
    assert attrs["http.response.status_code"] == 200
    assert attrs["chistone.backend"] == "app"
    assert attrs["chistone.request_id"] == response.headers["x-request-id"]
    assert attrs["script.caller"]  # trace.set from the script
    assert [event.name for event in request.events] == ["checked"]
    # The backend saw the gateway's upstream span as its parent, not the script's header.
    seen = dict(farm.backends["trace-app"].seen[-1].headers)
    assert seen["traceparent"] == (f"00-{CLIENT_TRACE}-"
                                   f"{names['upstream app'].span_id.hex()}-01")
    called = dict(farm.backends["trace-auth"].seen[-1].headers)
    assert called["traceparent"].split("-")[1:3] == [CLIENT_TRACE,
                                                     names["call auth"].span_id.hex()]


@pytest.mark.parametrize("header", ["00-zzzz-00f067aa0ba902b7-01",
                                    f"00-{'0' * 32}-{CLIENT_SPAN}-01", "garbage"])
def test_an_invalid_traceparent_starts_a_new_trace(traced, header):
    served, _farm, receiver = traced
    import httpx

    before = len(receiver.wait_for(0))
    with httpx.Client(base_url=served.data, trust_env=False, timeout=10) as client:
        response = client.get("/traced", headers={"Host": "traced.test", "traceparent": header})
    assert response.status_code == 200
    spans = receiver.wait_for(before + 4)[before:]
    [request] = [s for s in spans if s.name == "GET /traced"
                 and attributes(s)["chistone.request_id"] == response.headers["x-request-id"]]
    assert request.parent_span_id == b""
    assert request.trace_id.hex() not in ("0" * 32, CLIENT_TRACE)


def test_retries_are_visible_as_upstream_attempts(traced):
    served, _farm, receiver = traced
    import httpx

    before = len(receiver.wait_for(0))
    with httpx.Client(base_url=served.data, trust_env=False, timeout=10) as client:
        # round robin over a dead and a live backend: some request meets the dead one first
        responses = [client.get("/x", headers={"Host": "retried.test"}) for _ in range(4)]
    assert {r.status_code for r in responses} == {200}
    spans = receiver.wait_for(before + 8)[before:]
    attempts = [s for s in spans if s.name.startswith("upstream ")]
    failed = [s for s in attempts if s.name == "upstream a-dead"]
    assert failed and all(s.status.code == 2 for s in failed)  # STATUS_CODE_ERROR
    retried = {s.parent_span_id for s in failed}
    assert any(s.name == "upstream b-alive" and s.parent_span_id in retried for s in attempts)
