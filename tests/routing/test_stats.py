"""routing.stats: the access-log line and its batching handler."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random

import pytest

from routing import stats

FIELDS = dict(request_id="r-1", tenant="acme", route="/users/{id}", method="GET",
              path="/users/7", status=200, backend="a", sent=3, upstream=0.0012345,
              total=0.0020001, lua=0.0000411, retries=0, error=None, client="10.0.0.1")


def reference(**fields) -> dict:
    """What the line must say, built the slow, obvious way."""
    def ms(seconds):
        return None if seconds is None else round(seconds * 1000, 3)

    return {"logger": "chistone.access", "request_id": fields["request_id"],
            "tenant": fields["tenant"], "route": fields["route"], "method": fields["method"],
            "path": fields["path"], "status": fields["status"], "backend": fields["backend"],
            "bytes": fields["sent"], "upstream_ms": ms(fields["upstream"]),
            "total_ms": ms(fields["total"]), "lua_ms": ms(fields["lua"]),
            "retries": fields["retries"], "error": fields["error"], "client": fields["client"]}


@pytest.mark.parametrize("changes", [
    {},
    {"upstream": None, "backend": None, "method": None, "path": None, "client": None},
    {"error": "upstream_broke_mid_body", "status": 502, "retries": 1},
    # Script-defined patterns and raw paths can hold quotes, backslashes and non-ASCII text.
    {"route": '/a/{x:["\\\\]+}', "path": '/q"\\x', "tenant": "ünï", "error": "line\nbreak"},
])
def test_the_access_line_is_the_json_of_its_fields(changes):
    fields = {**FIELDS, **changes}
    line = stats.access_line(**fields)
    assert "\n" not in line and line.isascii()
    parsed = json.loads(line)
    assert list(parsed)[:2] == ["ts", "logger"]
    timestamp = parsed.pop("ts")
    assert timestamp.endswith("Z") and len(timestamp) == len("2026-11-22T02:31:12.345Z")
    assert parsed == reference(**fields)
    # byte-for-byte what json.dumps gives, so log shippers see one format
    assert line == json.dumps({"ts": timestamp, **parsed}, separators=(",", ":"))


def test_milliseconds_are_written_as_json_writes_the_rounded_number():
    rng = random.Random(18)
    samples = [0.0, -0.0, 1e-9, 4e-7, 5e-7, 6e-7, 0.0000625, 0.0010005, 0.0020001, 0.1, 1.0,
               59.9999995, 86400.0, 1e6]
    samples += [rng.uniform(0, 10 ** rng.randint(-7, 6)) for _ in range(20000)]
    for seconds in samples:
        assert stats._ms(seconds) == json.dumps(round(seconds * 1000, 3)), seconds
    assert stats._ms(None) == "null"


class Writes(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def write(self, text: str) -> int:
        self.calls += 1
        return super().write(text)


async def test_lines_are_batched_into_one_write_per_interval():
    logger = logging.getLogger("chistone.access")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = []
    stream = Writes()
    handler = stats.install_buffered_access_log()
    assert handler is not None
    handler.stream, handler.interval = stream, 0.05
    try:
        for n in range(3):
            stats.log_access(stats.access_line(**{**FIELDS, "request_id": f"r-{n}"}))
        assert stream.calls == 0
        await asyncio.sleep(0.2)
    finally:
        stats.uninstall_access_log(handler)
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
    assert stream.calls == 1
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ["r-0", "r-1", "r-2"]


def test_other_handlers_get_the_line_through_logging(caplog):
    with caplog.at_level(logging.INFO, logger="chistone.access"):
        stats.log_access(stats.access_line(**FIELDS))
    (record,) = [r for r in caplog.records if r.name == "chistone.access"]
    assert json.loads(record.getMessage())["route"] == "/users/{id}"
