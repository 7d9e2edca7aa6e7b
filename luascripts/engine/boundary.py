"""The records that cross between the host (Python) and the sandbox (Lua), declared once.

Values cross as flat sequences of plain strings, numbers, booleans and nils (the host never
reads a tenant table, lua-sandbox.md). Which position holds which field is declared here and
nowhere else: the Lua modules receive `lua_layout()` at bootstrap (`K.layout.<record>.<field>`
is a position) and build records by field name; the host decodes with the positions of the
same `Record`s (`PROXY.path`, ...). Changing a record is changing this file.

Strings are latin-1 on the Python side (one char per byte, as in lupa's runtime). Lists of
names and header blocks are "\\0"-joined blobs: `names` = "a\\0b", `pairs` = "n1\\0v1\\0n2\\0v2".
A header block handed *to* Lua for lookups is a "headers" blob: "\\nname\\0value" per header.

    request (host -> Lua, K.run's arguments after the deadline)
    result  (Lua -> host, what K.run / K.resume return): a state, then per state:
        "done": the response patch, then the final action
        "wait": the token of the suspended request, then one effect record
        "fail": why the request failed
    actions: proxy, respond, reject, router (the router's own 404/405), mount (a backend
        mount's proxy, filled in by the host), exchange (an upstream exchange already made)
    effects (what a waiting script asks for): body, upstream, response_body, call, render,
        jwt (jwt.verify), shared (shared.*), limit (limit.allow), jwt
    answers (host -> Lua, K.resume's arguments after the token), one per effect
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class Record:
    """A named layout: `record.field` is the field's 1-based position (as Lua counts)."""

    def __init__(self, name: str, *fields: str) -> None:
        self.name = name
        self.fields = fields
        for position, field in enumerate(fields, start=1):
            setattr(self, field, position)

    def __len__(self) -> int:
        return len(self.fields)

    def __iter__(self) -> Iterator[str]:
        return iter(self.fields)

    def pack(self, **values: Any) -> tuple[Any, ...]:
        """A tuple in this record's order (fields not given are nil)."""
        unknown = set(values) - set(self.fields)
        if unknown:
            raise KeyError(f"{self.name} has no field(s) {sorted(unknown)}")
        return tuple(values.get(field) for field in self.fields)

    def unpack(self, values: tuple[Any, ...], offset: int = 0) -> dict[str, Any]:
        """Field name -> value, reading positions after `offset` (padded with None)."""
        return {field: values[offset + i] if offset + i < len(values) else None
                for i, field in enumerate(self.fields)}


# -- Lua -> host: what registration recorded ------------------------------------------------
# One record per registration call (and one per router and per function at the end), each
# REGISTRATION_STRIDE values wide whatever its kind; the first field is the kind and the
# last the script line. routes.py reads them by field name.
REGISTRATION_STRIDE = 7
ROUTE_RECORD = Record("route_record", "kind", "mux", "method", "pattern", "handler",
                      "middleware")  # r.get/post/.../handle
MOUNT_RECORD = Record("mount_record", "kind", "mux", "prefix", "target_kind", "target",
                      "middleware")  # target_kind "backend" (a name) or "router" (its id)
HANDLER_RECORD = Record("handler_record", "kind", "mux", "handler",
                        "middleware")  # r.not_found / r.method_not_allowed
MUX_RECORD = Record("mux_record", "kind", "mux", "middleware",
                    "used")  # used: 1 once any route, mount, group or with() is on it
LABEL_RECORD = Record("label_record", "kind", "function", "label")  # a name for each
# middleware and handler function, for display
# ("line", the script line of the call, is the last value of every record's stride.)
REGISTRATION = {"route": ROUTE_RECORD, "mount": MOUNT_RECORD, "not_found": HANDLER_RECORD,
                "method_not_allowed": HANDLER_RECORD, "mux": MUX_RECORD,
                "label": LABEL_RECORD}


def registration_records(flat: Any) -> Iterator[dict[str, Any]]:
    """The records of an export, each as {field: value} (its "kind" included)."""
    for start in range(0, len(flat) - REGISTRATION_STRIDE + 1, REGISTRATION_STRIDE):
        record = REGISTRATION.get(flat[start])
        if record is None:
            raise ValueError(f"unknown registration record {flat[start]!r}")
        values = record.unpack(flat, start)
        values["line"] = flat[start + REGISTRATION_STRIDE - 1]
        yield values


# -- host -> Lua: one request --------------------------------------------------------------
REQUEST = Record(
    "request",
    "chain",  # chain id (middleware..., terminal), chosen by the host's matcher
    "pattern",  # the route pattern, nil for a 404/405 fallback
    "fallback_status",  # 404 or 405 when the chain ends in the router's own answer, else 0
    "method", "path", "query", "host", "scheme", "client_ip", "tenant", "request_id",
    "headers",  # headers blob: "\nname\0value" per header
    "websocket",  # boolean
    "backends",  # selector scripts: "name\0url\0weight\0healthy(0/1)\0..." ; nil for routers
)
# After REQUEST come the URL params, name and value alternating.

# -- Lua -> host: the result of a step -----------------------------------------------------
RESULT = Record(
    "result",
    "state",  # "done" | "wait" | "fail"
    "ran",  # how many middleware ran (labels[:ran] are reported)
    "request_headers",  # pairs blob of the complete request headers if the script changed them
    "logs",  # pairs blob: level, message, level, message...
    "dropped_logs",
)
# "done": PATCH at offset len(RESULT), then the action at offset len(RESULT) + len(PATCH)
# (last, since its length varies).  "wait": WAIT at offset len(RESULT).  "fail": FAIL at
# offset len(RESULT).
WAIT = Record("wait", "token", "op")  # then the effect's record (after "op")
FAIL = Record(
    "fail",
    "kind",  # "error" | "timeout" | "memory" | "body:<why>" (req.body() failed, uncaught;
    # why: too_large | timeout | disconnected | memory) | "upstream:<why>" (res.body()
    # failed, uncaught; why: too_large | timeout | broken)
    "message",  # with a Lua traceback after "\nstack traceback:\n"
    "line",  # where a timeout stopped the script
)

# -- actions (all share the first field, "kind") -------------------------------------------
PROXY = Record("proxy", "kind", "backends", "path", "query", "hash_key", "timeout_ms",
               "set_headers", "remove_headers", "body")
RESPOND = Record("respond", "kind", "status", "body", "headers")
REJECT = Record("reject", "kind", "status", "message")
ROUTER = Record("router", "kind")  # the router's own 404/405 (status from the host's match)
MOUNT = Record("mount", "kind")  # a backend mount's proxy (backend and path from the match)
EXCHANGE = Record("exchange", "kind", "id")  # answer with upstream exchange `id`
ACTIONS = {"P": PROXY, "R": RESPOND, "J": REJECT, "N": ROUTER, "M": MOUNT, "U": EXCHANGE}
ACTION_SLOTS = max(len(record) for record in ACTIONS.values())

PATCH = Record(
    "patch",
    "status",  # nil = unchanged
    "headers",  # pairs blob of the headers set (each replaces every header of its name)
    "removed",  # names blob of the headers removed (every header of that name)
    "body",  # replacement body, nil = unchanged
)

# -- effects: what a waiting script asks the host for (after WAIT's "op") ------------------
BODY = Record("body", "op")  # req.body(): the whole request body
UPSTREAM = Record(
    "upstream",  # a middleware looked at the response of a proxy: make the exchange
    "op",
    "id",  # the exchange id Lua gave this response
    "request_headers",  # pairs blob of the request headers when changed, else nil
)  # then the action (PROXY or MOUNT) at offset len(RESULT) + len(WAIT) + len(UPSTREAM) - 1
RESPONSE_BODY = Record("response_body", "op", "id")  # res.body() of exchange `id`
CALL = Record("call", "op", "backend", "method", "path", "query", "headers", "body",
              "timeout_ms")  # http.request(); headers is a pairs blob
RENDER = Record("render", "op", "status", "message")  # headers and body of a gateway answer
JWT = Record("jwt", "op", "token", "keys", "jwks_backend", "jwks_path", "algorithms", "issuer",
             "audience", "leeway_s")  # jwt.verify(); keys, algorithms, audience: names blobs
# shared.get/set/incr/delete (action: "get" | "set" | "incr" | "delete"); value a string or
# a number, ttl_s and delta numbers or nil (state.lua, routing.shared_state)
SHARED = Record("shared", "op", "action", "key", "value", "ttl_s", "delta")
LIMIT = Record("limit", "op", "key", "rate", "window_s", "fail_closed")  # limit.allow()
EFFECTS = {"body": BODY, "upstream": UPSTREAM, "response_body": RESPONSE_BODY, "call": CALL,
           "render": RENDER, "jwt": JWT, "shared": SHARED, "limit": LIMIT}

# -- answers: host -> Lua, K.resume's arguments after the token ----------------------------
HEAD_ANSWER = Record("head", "status", "headers", "backend")  # headers blob for lookups
BODY_ANSWER = Record("body_answer", "body", "error")  # error: "too_large" | "broken" | ...
CALL_ANSWER = Record("call_answer", "status", "headers", "body", "error")
RENDER_ANSWER = Record("render_answer", "status", "headers", "body")
JWT_ANSWER = Record("jwt_answer", "claims", "error")  # claims: a JSON object; error: a reason
SHARED_ANSWER = Record("shared_answer", "value", "error")  # error: "quota" | "unavailable" ...
LIMIT_ANSWER = Record("limit_answer", "allowed", "limit", "remaining", "reset_s", "degraded",
                      "error")  # error: "unavailable" (refused with fail = "closed")

RECORDS = (REQUEST, RESULT, WAIT, FAIL, *ACTIONS.values(), PATCH, *EFFECTS.values(),
           HEAD_ANSWER, BODY_ANSWER, CALL_ANSWER, RENDER_ANSWER, JWT_ANSWER, SHARED_ANSWER,
           LIMIT_ANSWER, ROUTE_RECORD, MOUNT_RECORD, HANDLER_RECORD, MUX_RECORD, LABEL_RECORD)


def lua_layout() -> dict[str, Any]:
    """{record name: {field: position, "_n": field count}} plus the offsets, for K.layout."""
    layout: dict[str, Any] = {
        record.name: {**{f: i for i, f in enumerate(record, start=1)}, "_n": len(record)}
        for record in RECORDS}
    # Registration records: the line is always the last of the stride.
    for record in (ROUTE_RECORD, MOUNT_RECORD, HANDLER_RECORD, MUX_RECORD, LABEL_RECORD):
        layout[record.name]["line"] = REGISTRATION_STRIDE
    layout["offsets"] = {
        "registration_stride": REGISTRATION_STRIDE,
        "payload": len(RESULT),  # after the RESULT fields
        "patch": len(RESULT),
        "action": len(RESULT) + len(PATCH),
        "action_slots": ACTION_SLOTS,
        "effect": len(RESULT) + len(WAIT) - 1,  # effects' "op" is WAIT's "op"
        "upstream_action": len(RESULT) + len(WAIT) + len(UPSTREAM) - 1,
    }
    return layout
