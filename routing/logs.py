"""Structured logs: one JSON object per line, tagged with the request it was written for.

The gateway binds each request's exchange (request id, tenant, route pattern) to
`current_request` for the request's own task, so every record written while handling it
(gateway errors, the tenant script's log calls, upstream retries) carries those fields without
each call passing them. Records written outside a request (supervisor, snapshot rebuilds)
simply have none.

Tenant-controlled text stays inside JSON strings, so a newline in a script's message cannot
start a forged line.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextvars import ContextVar
from typing import Any, Protocol

FORMATS = ("json", "plain")
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class RequestContext(Protocol):
    request_id: str
    tenant: str
    route: str


current_request: ContextVar[RequestContext | None] = ContextVar("chistone_request", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName"}

_second: tuple[int, str] = (-1, "")


def utc_timestamp(epoch: float | None = None) -> str:
    """ISO 8601 in UTC with milliseconds ("2026-11-22T02:31:12.345Z"); the second part is
    formatted once per second, since the access log asks for it on every request."""
    global _second
    if epoch is None:
        epoch = time.time()
    whole = int(epoch)
    if whole != _second[0]:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int((epoch - whole) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", "pid", "request_id", "tenant", "route", ...}` per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process or os.getpid(),
        }
        request = current_request.get()
        if request is not None:
            entry["request_id"] = request.request_id
            entry["tenant"] = request.tenant
            entry["route"] = request.route
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def make_formatter(kind: str) -> logging.Formatter:
    if kind == "json":
        return JsonFormatter()
    if kind == "plain":
        return logging.Formatter(PLAIN_FORMAT)
    raise ValueError(f"unknown log format {kind!r}; expected one of {', '.join(FORMATS)}")
