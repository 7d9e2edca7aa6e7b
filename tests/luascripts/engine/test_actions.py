"""Actions, result tables, selector scripts and the request a script sees."""

from __future__ import annotations

import dataclasses

import pytest

from luascripts.engine import (
    BackendView,
    Outcome,
    ProxyAction,
    RejectAction,
    RespondAction,
    ScriptRuntimeError,
)
from luascripts.engine.build import fast_constructor

from .support import BACKENDS, load, request, run


def handler(body: str, route: str = "/") -> str:
    return f"chi.handle('*', '{route}', function(req)\n{body}\nend)"


def test_proxy_with_every_option() -> None:
    outcome = run(handler("""
      return proxy({"a", "b"}, {path = "/v2/items", query = "x=1&y=%20",
        set_headers = {["X-Trace"] = "on", ["x-n"] = 5}, remove_headers = {"Cookie"},
        hash_key = "user-7", timeout_ms = 2500})""", "/x"), "/x")
    assert outcome.action == ProxyAction(
        backends=("a", "b"), path="/v2/items", query="x=1&y=%20",
        set_headers=(("x-n", "5"), ("x-trace", "on")), remove_headers=("cookie",),
        hash_key="user-7", timeout_ms=2500)
    assert outcome.route_pattern == "/x"


@pytest.mark.parametrize(("call", "message"), [
    ('proxy("nope")', "unknown backend 'nope'"),
    ("proxy(42)", "backend name or a list"),
    ("proxy({})", "1 to 64 names"),
    ('proxy("a", {path = "v2"})', "exactly one '/'"),
    ('proxy("a", {path = "//evil.example"})', "exactly one '/'"),
    ('proxy("a", {path = "/a b"})', "spaces"),
    ('proxy("a", {path = "/a\\r\\nX-Injected: 1"})', "control characters"),
    ('proxy("a", {path = "/a\\0"})', "control characters"),
    ('proxy("a", {path = "/a?b=1"})', "'?'"),
    ('proxy("a", {path = "/a/../admin"})', "'..' segments"),
    ('proxy("a", {path = "/a/%2E%2e/admin"})', "'..' segments"),
    ('proxy("a", {query = "a=1 2"})', "query must not contain"),
    ('proxy("a", {set_headers = {["bad name"] = "x"}})', "not a valid HTTP token"),
    ('proxy("a", {set_headers = {x = "a\\r\\nb: c"}})', "CR, LF or NUL"),
    ('proxy("a", {set_headers = {x = {}}})', "string value"),
    ('proxy("a", {remove_headers = {"ok", "no pe"}})', "not a valid HTTP token"),
    ('proxy("a", {timeout_ms = 0})', "timeout_ms"),
    ('proxy("a", {timeout_ms = 1.5})', "timeout_ms"),
    ('proxy("a", {hash_key = {}})', "hash_key"),
    ('proxy("a", {pathh = "/x"})', "unknown option 'pathh'"),
    ("respond(700)", "status must be an integer from 200 to 599"),
    ("respond(200, {})", "body must be a string"),
    ('reject(302, "no")', "from 400 to 599"),
    ("return nil", "returned nothing"),
    ("return 42", "returned a number"),
    ("return {unrelated = true}", "not an action"),
])
def test_invalid_actions_are_runtime_errors_with_a_line(call: str, message: str) -> None:
    body = call if call.startswith("return") else f"return {call}"
    script = load(handler(body))
    with pytest.raises(ScriptRuntimeError) as exc_info:
        script.handle(request("/"))
    assert message in str(exc_info.value)
    if not call.startswith("return"):
        # `return proxy(...)` is a tail call: the handler's own line is what is left
        assert exc_info.value.diagnostics[0].line == 1


def test_helper_errors_point_at_the_calling_line() -> None:
    script = load(handler('local a = proxy("a", {path = "bad"})\nreturn a'))
    with pytest.raises(ScriptRuntimeError) as exc_info:
        script.handle(request("/"))
    assert exc_info.value.diagnostics[0].line == 2
    assert "script:2: in local 'handler'" in exc_info.value.lua_traceback
    assert "dispatch:" not in exc_info.value.lua_traceback  # sandbox frames are filtered


def test_header_limits() -> None:
    many = ", ".join(f'["h{i}"] = "v"' for i in range(101))
    with pytest.raises(ScriptRuntimeError, match="more than 100 headers"):
        run(handler(f'return proxy("a", {{set_headers = {{{many}}}}})'))
    with pytest.raises(ScriptRuntimeError, match="longer than 8192"):
        run(handler('return proxy("a", {set_headers = {x = ("v"):rep(9000)}})'))


def test_respond_and_reject() -> None:
    outcome = run(handler('return respond(201, "caf\\xc3\\xa9\\0", {["Content-Type"] = "x/y"})'))
    assert outcome.action == RespondAction(201, "café\0".encode(), (("content-type", "x/y"),))
    assert run(handler("return respond(204)")).action == RespondAction(204, b"")
    assert run(handler('return reject(429)')).action == RejectAction(429, "Too Many Requests")
    assert run(handler('return reject(503, "down")')).action == RejectAction(503, "down")


def test_respond_body_limit() -> None:
    with pytest.raises(ScriptRuntimeError, match="the limit is 1048576"):
        run(handler('return respond(200, ("x"):rep(1048577))'))


def test_actions_are_read_only_objects() -> None:
    source = handler("""
      local a = proxy("a")
      local ok, err = pcall(function() a.path = "/x" end)
      return respond(200, a.kind .. ":" .. tostring(ok) .. ":" .. tostring(getmetatable(a)))
    """)
    assert run(source).action.body == b"proxy:false:action"


def test_next_returns_a_response_a_middleware_can_inspect_and_change() -> None:
    # chi-style: what next() returns is the response of the rest of the chain; its status is
    # assignable (the change is a patch the host applies), its kind and message readable.
    source = """
    chi.use(function(req, next)
      local res = next(req)
      local before = res.status
      res.status = 451
      return respond(200, res.kind .. ":" .. before .. ":" .. res.status .. ":" ..
        res.message .. ":" .. tostring(getmetatable(res)))
    end)
    chi.get("/", function() return reject(418, "teapot") end)
    """
    assert run(source).action.body == b"reject:418:451:teapot:response"


def test_legacy_result_tables() -> None:
    outcome = run(handler("""return {selected_backend = "b", modified_path = "/new",
        modified_headers = {["X-A"] = "1"}}"""))
    assert outcome.action == ProxyAction(("b",), path="/new", set_headers=(("x-a", "1"),))
    assert run(handler("return {reject = true}")).action == RejectAction(403, "Forbidden")
    rejected = run(handler('return {reject = true, reject_status = 451, reject_message = "no"}'))
    assert rejected.action == RejectAction(451, "no")
    # no choice: balance over all of the tenant's backends
    assert run(handler('return {modified_path = "/p"}')).action.backends == tuple(
        sorted(BACKENDS))
    with pytest.raises(ScriptRuntimeError, match="unknown backend"):
        run(handler('return {selected_backend = "zzz"}'))
    with pytest.raises(ScriptRuntimeError, match="modified_path"):
        run(handler('return {selected_backend = "a", modified_path = "no-slash"}'))


SELECTOR = """
function on_route_request(request, backends)
  local names = {}
  for _, b in ipairs(backends) do
    names[#names + 1] = b.name .. "/" .. b.url .. "/" .. b.weight .. "/" .. tostring(b.healthy)
  end
  if request.path == "/reject" then return {reject = true, reject_status = 401} end
  if request.path == "/nothing" then return nil end
  return {selected_backend = "b", modified_headers = {["x-seen"] = table.concat(names, ",")}}
end
"""


def test_selector_scripts() -> None:
    script = load(SELECTOR)
    assert script.is_selector and script.routes == ()
    backends = (BackendView("a", "http://a:1", 3, True), BackendView("b", "http://b:2", 1, False))
    outcome = script.handle(request("/x", backends=backends))
    assert outcome.action == ProxyAction(
        ("b",), set_headers=(("x-seen", "a/http://a:1/3/true,b/http://b:2/1/false"),))
    assert outcome.route_pattern is None
    assert script.handle(request("/reject")).action == RejectAction(401, "Unauthorized")
    # nil: no decision, the gateway balances over the request's backends
    assert script.handle(request("/nothing", backends=backends)).action == ProxyAction(
        ("a", "b"))


def test_request_fields() -> None:
    source = handler("""
      local q = req.query
      return respond(200, table.concat({req.method, req.path, req.host, req.scheme,
        req.client_ip, req.tenant, req.request_id, req.route_pattern, req.params.id,
        q.a, q.b, q["sp ace"], tostring(q.missing), req.headers["user-agent"],
        req.headers["User-Agent"], tostring(req.headers.nope)}, "|"))""", "/items/{id}")
    outcome = run(source, "/items/%41x", "POST", query="a=1&a=2&b=x+y%2Fz&sp%20ace=%C3%A9",
                  headers={"user-agent": "curl/8"}, request_id="r-9")
    assert outcome.action.body.decode() == ("POST|/items/%41x|acme.example.com|https|"
                                            "203.0.113.9|acme|r-9|/items/{id}|%41x|1|x y/z|é|"
                                            "nil|curl/8|curl/8|nil")


def test_request_headers_unchanged_is_none_and_changes_are_complete() -> None:
    untouched = run(handler('local ua = req.headers["user-agent"] return proxy("a")'))
    assert untouched.request_headers is None
    changed = run(handler("""
      req.headers["X-Added"] = "1"
      req.headers["user-agent"] = nil
      req.headers["accept"] = 42
      return proxy("a")"""), headers={"user-agent": "u", "accept": "*/*", "x-keep": "k"})
    assert changed.request_headers == {"x-added": "1", "accept": "42", "x-keep": "k"}
    replaced = run(handler('req.headers = {Only = "this"} return proxy("a")'))
    assert replaced.request_headers == {"only": "this"}


def test_request_header_writes_are_validated_at_the_assignment() -> None:
    with pytest.raises(ScriptRuntimeError) as exc_info:
        run(handler('req.headers["x"] = "a\\nb"\nreturn proxy("a")'))
    assert "CR, LF or NUL" in str(exc_info.value)
    assert exc_info.value.diagnostics[0].line == 2


def test_headers_iterate_with_pairs() -> None:
    outcome = run(handler("""
      req.headers["z-new"] = "3"
      local names = {}
      for k, v in pairs(req.headers) do names[#names + 1] = k .. "=" .. v end
      table.sort(names)
      return respond(200, table.concat(names, ","))"""), headers={"b": "2", "a": "1"})
    assert outcome.action.body == b"a=1,b=2,z-new=3"


def test_header_values_cannot_fake_other_headers() -> None:
    # A NUL or LF in a (simulated) request header must not create an "authorization" header.
    outcome = run(handler('return respond(200, tostring(req.headers.authorization))'),
                  headers={"x": "1\nauthorization\0Bearer forged"})
    assert outcome.action.body == b"nil"


def test_request_text_reaches_lua_as_bytes() -> None:
    # str values are bytes decoded as latin-1 (as the data plane decodes headers): "ü" is the
    # single byte 0xFC; characters beyond latin-1 cannot be bytes, so they arrive as UTF-8.
    outcome = run(handler('return respond(200, req.headers["x-name"] .. "/" .. #req.host)'),
                  headers={"x-name": "日本"}, host="ü.example")
    assert outcome.action.body == "日本/9".encode()


def test_logs_are_returned_limited_and_escaped() -> None:
    source = handler("""
      log.info("hello", 42, nil, true, {})
      log.warn("line\\nbreak\\0nul")
      log.error(("x"):rep(5000))
      for i = 1, 30 do log.info("spam", i) end
      return proxy("a")""")
    outcome = run(source)
    assert outcome.logs[0] == ("info", "hello 42 nil true <table>")
    assert outcome.logs[1] == ("warn", "line\\nbreak\\x00nul")
    assert outcome.logs[2][0] == "error" and len(outcome.logs[2][1]) == 2048
    assert len(outcome.logs) == 20
    assert outcome.dropped_logs == 13


def test_fast_constructors_build_equal_frozen_objects() -> None:
    for cls, args in ((ProxyAction, (("a",), "/p", None, (), (), "k", 5)),
                      (Outcome, (RejectAction(404, "x"), None, {}, (), None, (), 0))):
        fast = fast_constructor(cls)(*args)
        slow = cls(*args)
        assert type(fast) is cls and fast == slow and repr(fast) == repr(slow)
        with pytest.raises(dataclasses.FrozenInstanceError):
            fast.__setattr__(dataclasses.fields(cls)[0].name, None)
    assert fast_constructor(Outcome)(RejectAction(404, "x")) == Outcome(RejectAction(404, "x"))
