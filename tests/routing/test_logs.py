"""Structured logs: the JSON formatter, and the request fields the gateway binds to records."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest

from luascripts.engine.types import Outcome, RespondAction
from routing.logs import JsonFormatter, current_request, make_formatter, utc_timestamp
from tests.routing.asgi import call, http_scope
from tests.routing.fakes import FakeScript, FakeTransport, tenant
from tests.routing.test_gateway import make, two_backends


@pytest.fixture
def json_lines():
    """Everything the `chistone` loggers write while the test runs, as parsed JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("chistone")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)

    def lines() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_a_record_outside_a_request_has_the_base_fields_and_its_extras():
    record = logging.LogRecord("chistone.snapshot", logging.WARNING, __file__, 1,
                               "rebuilt %d tenants", (3,), None)
    record.generation = 42  # as logging's `extra=` sets it
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "warning" and entry["logger"] == "chistone.snapshot"
    assert entry["msg"] == "rebuilt 3 tenants" and entry["generation"] == 42
    assert entry["ts"].endswith("Z") and isinstance(entry["pid"], int)
    assert "request_id" not in entry and "tenant" not in entry


def test_an_exception_stays_inside_one_line():
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = logging.LogRecord("chistone.gateway", logging.ERROR, __file__, 1, "failed",
                                   (), sys.exc_info())
    text = JsonFormatter().format(record)
    assert "\n" not in text
    assert "ValueError: bad\nvalue" in json.loads(text)["exc"]


def test_a_bound_request_tags_every_record():
    class Exchange:
        request_id, tenant, route = "r-1", "acme", "/users/{id}"

    token = current_request.set(Exchange())
    try:
        record = logging.LogRecord("chistone.script", logging.INFO, __file__, 1, "hi", (), None)
        entry = json.loads(JsonFormatter().format(record))
    finally:
        current_request.reset(token)
    assert (entry["request_id"], entry["tenant"], entry["route"]) == ("r-1", "acme",
                                                                       "/users/{id}")


def test_utc_timestamp():
    assert utc_timestamp(0.5) == "1970-01-01T00:00:00.500Z"
    assert utc_timestamp(1_763_778_672.0071) == "2025-11-22T02:31:12.007Z"


def test_unknown_format_is_refused():
    assert isinstance(make_formatter("json"), JsonFormatter)
    assert not isinstance(make_formatter("plain"), JsonFormatter)
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        make_formatter("xml")


async def test_script_log_lines_carry_request_id_tenant_and_route(json_lines):
    script = FakeScript(lambda req: Outcome(RespondAction(200, b"ok"), route_pattern="/u/{id}",
                                            logs=(("warn", "slow path\n{\"forged\":1}"),)))
    gw = make(FakeTransport(), two_backends(script))
    result = await call(gw, http_scope("/u/7", headers=[("x-request-id", "req-77")]))
    assert result.status == 200
    (line,) = [entry for entry in json_lines() if entry["logger"] == "chistone.script"]
    assert line["level"] == "warning" and line["request_id"] == "req-77"
    assert line["tenant"] == "acme" and line["route"] == "/u/{id}"
    assert line["msg"].endswith('slow path\n{"forged":1}')  # still one JSON line
    assert current_request.get() is None  # unbound once the request is done


async def test_gateway_errors_carry_the_request_and_tenant(json_lines):
    def boom(req):
        raise RuntimeError("attempt to index a nil value")

    gw = make(FakeTransport(), tenant("bad", domains=("bad.example",), script=FakeScript(boom)))
    result = await call(gw, http_scope("/", host="bad.example"))
    assert result.status == 500
    errors = [entry for entry in json_lines() if entry["logger"] == "chistone.gateway"]
    assert errors and all(e["request_id"] == result.json()["request_id"] for e in errors)
    assert {e["tenant"] for e in errors} == {"bad"}
    assert any("attempt to index a nil value" in e["msg"] for e in errors)


def test_settings_refuse_an_unknown_log_format():
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={"CHISTONE_LOG_FORMAT": "xml", "DJANGO_SETTINGS_MODULE": "chistone_site.settings",
             "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0
    assert "CHISTONE_LOG_FORMAT must be json or plain, not 'xml'" in done.stderr
