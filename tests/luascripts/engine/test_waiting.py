"""Scripts that wait for the host: req.body(), next()'s response, http.request.

The engine alone, driven by hand: `start` gives an Outcome or a ScriptRun naming what the
script waits for, `resume(answer)` goes on. The data plane's driver (routing.script_run) is
tested in tests/routing; the real server in tests/e2e.
"""

from __future__ import annotations

import time

import pytest

from luascripts.engine import Limits, ProxyAction, RejectAction, RespondAction
from luascripts.engine.effects import (
    BodyAnswer,
    Call,
    CallAnswer,
    Head,
    OpenUpstream,
    ReadBody,
    ReadResponseBody,
    Render,
    RenderAnswer,
)
from luascripts.engine.errors import (
    BodyTooLarge,
    BodyUnavailable,
    RuntimeBusy,
    ScriptRuntimeError,
    ScriptTimeoutError,
)
from luascripts.engine.script import ScriptRun
from luascripts.engine.types import ExchangeAction, Outcome, ResponsePatch

from .support import load, request


def started(script, path="/", method="GET", **kw) -> ScriptRun:
    run = script.start(request(path, method, **kw))
    assert isinstance(run, ScriptRun), run
    return run


def body_of(outcome: Outcome) -> bytes:
    assert isinstance(outcome.action, RespondAction), outcome
    return outcome.action.body


# -- the request body ------------------------------------------------------------------------


def test_req_body_waits_for_the_host_once_and_returns_the_bytes() -> None:
    script = load('chi.post("/", function(req) '
                  'local a = req.body() local b = req.body() '
                  'return respond(200, #a .. ":" .. a .. ":" .. tostring(a == b)) end)')
    run = started(script, method="POST")
    assert run.effect == ReadBody()
    done = run.resume(BodyAnswer(b"h\x00\xffi"))
    assert body_of(done) == b"4:h\x00\xffi:true"


def test_an_empty_body_is_an_empty_string() -> None:
    script = load('chi.get("/", function(req) return respond(200, "[" .. req.body() .. "]") end)')
    assert body_of(started(script).resume(BodyAnswer(b""))) == b"[]"


def test_a_body_over_the_limit_fails_the_request_unless_caught() -> None:
    script = load("""
    chi.post("/strict", function(req) return respond(200, req.body()) end)
    chi.post("/lenient", function(req)
      local ok, err = pcall(req.body)
      return respond(200, tostring(ok) .. " " .. err)
    end)
    """)
    with pytest.raises(BodyTooLarge, match="larger than the route accepts") as caught:
        started(script, "/strict", "POST").resume(BodyAnswer(error="too_large"))
    assert caught.value.reason == "too_large"
    assert caught.value.diagnostics[0].line == 2
    lenient = started(script, "/lenient", "POST").resume(BodyAnswer(error="too_large"))
    assert body_of(lenient).startswith(b"false script:4: req.body(): the request body is larger")


@pytest.mark.parametrize("why", ["timeout", "disconnected"])
def test_other_body_failures_carry_their_reason(why: str) -> None:
    script = load('chi.post("/", function(req) return respond(200, req.body()) end)')
    with pytest.raises(BodyUnavailable) as caught:
        started(script, method="POST").resume(BodyAnswer(error=why))
    assert caught.value.reason == why


def test_a_body_read_and_forwarded_is_not_part_of_the_action() -> None:
    script = load('chi.post("/", function(req) req.body() return proxy("a") end)')
    done = started(script, method="POST").resume(BodyAnswer(b"payload"))
    assert done.action == ProxyAction(("a",))


def test_proxy_can_replace_the_body() -> None:
    script = load('chi.post("/", function(req) '
                  'return proxy("a", {body = req.body():upper()}) end)')
    done = started(script, method="POST").resume(BodyAnswer(b"abc"))
    assert done.action == ProxyAction(("a",), body=b"ABC")


# -- next() and the response -----------------------------------------------------------------

FALLBACK = """
chi.use(function(req, next)
  local res = next(req)
  if res.status >= 500 then return proxy("b") end
  res.headers["x-seen"] = res.status .. " " .. res.backend
  return res
end)
chi.get("/", function(req) return proxy("a", {path = "/p"}) end)
"""


def test_looking_at_a_proxied_response_opens_the_upstream_exchange() -> None:
    run = started(load(FALLBACK))
    assert isinstance(run.effect, OpenUpstream)
    assert run.effect.action == ProxyAction(("a",), path="/p")
    assert run.effect.request_headers is None
    done = run.resume(Head(503, (("content-type", "text/plain"),), "a"))
    assert done.action == ProxyAction(("b",))  # the fallback: a second exchange
    assert done.patch is None


def test_a_response_looked_at_and_returned_names_its_exchange_and_patch() -> None:
    run = started(load(FALLBACK))
    exchange = run.effect.exchange
    done = run.resume(Head(200, (("X-Up", "1"),), "a"))
    assert done.action == ExchangeAction(exchange)
    assert done.patch == ResponsePatch(headers=(("x-seen", "200 a"),))


def test_a_middleware_that_only_writes_never_waits() -> None:
    script = load("""
    chi.use(function(req, next)
      local res = next(req)
      res.headers["access-control-allow-origin"] = "*"
      res.headers["server"] = nil
      res.status = 202
      res.set_body("replaced")
      return res
    end)
    chi.get("/", function(req) return proxy("a") end)
    """)
    done = script.start(request("/"))
    assert isinstance(done, Outcome)  # no ScriptRun: nothing waited
    assert done.action == ProxyAction(("a",))
    assert done.patch == ResponsePatch(202, (("access-control-allow-origin", "*"),
                                             ("server", None)), b"replaced")


def test_header_changes_arrive_sorted_lower_case_and_equal_patches_are_shared() -> None:
    script = load("""
    chi.use(function(req, next)
      local res = next(req)
      res.headers["X-Zed"] = "z"
      res.headers["x-alpha"] = 1
      res.headers["Server"] = nil
      res.headers["x-gone"] = "set, then removed"
      res.headers["x-gone"] = nil
      res.headers["X-Alpha"] = "a"   -- the same header: the last write wins
      return res
    end)
    chi.get("/", function(req) return proxy("a") end)
    """)
    first, second = script.start(request("/")), script.start(request("/"))
    assert first.patch == ResponsePatch(headers=(("x-alpha", "a"), ("x-zed", "z"),
                                                 ("server", None), ("x-gone", None)))
    assert first.patch.raw == {b"x-alpha": b"a", b"x-zed": b"z", b"server": None,
                               b"x-gone": None}
    assert second.patch is first.patch  # decoded once, shared (patches are immutable)


def test_a_bad_header_name_fails_at_its_line_even_after_good_names_were_remembered() -> None:
    script = load("""
    chi.use(function(req, next)
      local res = next(req)
      res.headers["x-ok"] = "1"
      if req.headers["x-bad"] then res.headers[req.headers["x-bad"]] = "2" end
      return res
    end)
    chi.get("/", function(req) return proxy("a") end)
    """)
    assert script.start(request("/")).patch == ResponsePatch(headers=(("x-ok", "1"),))
    with pytest.raises(ScriptRuntimeError, match=r"script:5: .*is not a valid HTTP token"):
        script.start(request("/", headers={"x-bad": "no spaces allowed"}))


def test_a_middleware_that_never_looks_leaves_the_action_alone() -> None:
    script = load('chi.use(function(req, next) return next(req) end)\n'
                  'chi.get("/", function(req) return proxy("a") end)')
    done = script.start(request("/"))
    assert isinstance(done, Outcome) and done.action == ProxyAction(("a",))
    assert done.patch is None


def test_reading_the_response_body_waits_again() -> None:
    script = load("""
    chi.use(function(req, next)
      local res = next(req)
      local body = res.body()
      res.set_body(body:upper() .. #body)
      return res
    end)
    chi.get("/", function(req) return proxy("a") end)
    """)
    run = started(script)
    exchange = run.effect.exchange
    run = run.resume(Head(200, (), "a"))
    assert run.effect == ReadResponseBody(exchange)
    done = run.resume(BodyAnswer(b"hello"))
    assert done.action == ExchangeAction(exchange)
    assert done.patch == ResponsePatch(body=b"HELLO5")


def test_a_response_body_over_the_limit_is_a_script_error() -> None:
    script = load('chi.use(function(req, next) local res = next(req) res.body() return res end)\n'
                  'chi.get("/", function(req) return proxy("a") end)')
    run = started(script).resume(Head(200, (), "a"))
    with pytest.raises(ScriptRuntimeError, match="max_response_body_bytes"):
        run.resume(BodyAnswer(error="too_large"))


def test_respond_responses_are_known_without_waiting() -> None:
    script = load("""
    chi.use(function(req, next)
      local res = next(req)
      return respond(200, res.kind .. " " .. res.status .. " " .. res.headers["X-A"] ..
        " " .. res.body() .. " " .. tostring(res.backend))
    end)
    chi.get("/", function(req) return respond(201, "made", {["x-a"] = "1"}) end)
    """)
    assert body_of(script.handle(request("/"))) == b"respond 201 1 made nil"


def test_a_reject_is_rendered_by_the_host_when_looked_at() -> None:
    script = load("""
    chi.use(function(req, next)
      local res = next(req)
      res.headers["x-cors"] = "yes"
      return respond(200, res.kind .. " " .. res.status .. " " ..
        res.headers["content-type"] .. " " .. res.body())
    end)
    chi.get("/", function(req) return reject(401, "nope") end)
    """)
    run = started(script)
    assert run.effect == Render(401, "nope")
    done = run.resume(RenderAnswer(401, (("content-type", "application/json"),), b'{"e":1}'))
    assert body_of(done) == b'reject 401 application/json {"e":1}'


def test_the_routers_own_404_and_405_pass_through_middleware() -> None:
    script = load("""
    chi.use(function(req, next)
      local res = next(req)
      res.headers["x-wrapped"] = tostring(res.status)
      return res
    end)
    chi.get("/only-get", function(req) return respond(200, "ok") end)
    """)
    missing = script.handle(request("/nope"))
    assert missing.action.status == 404
    assert missing.patch == ResponsePatch(headers=(("x-wrapped", "404"),))
    wrong = script.handle(request("/only-get", "POST"))
    assert wrong.action == RejectAction(405, "Method POST is not allowed for this path.",
                                        ("GET",))
    assert wrong.patch == ResponsePatch(headers=(("x-wrapped", "405"),))
    run = started(load("""
    chi.use(function(req, next) local res = next(req) res.body() return res end)
    chi.get("/only-get", function(req) return respond(200, "ok") end)
    """), "/only-get", "POST")
    assert run.effect == Render(405, None, ("GET",))


def test_response_fields_are_validated_at_the_line_that_sets_them() -> None:
    script = load("""
    chi.use(function(req, next)
      local res = next(req)
      local ok1, e1 = pcall(function() res.status = 99 end)
      local ok2, e2 = pcall(function() res.headers["bad name"] = "x" end)
      local ok3, e3 = pcall(function() res.whatever = 1 end)
      local ok4, e4 = pcall(function() res.headers = {} end)
      return respond(200, table.concat({e1, e2, e3, e4}, "|"))
    end)
    chi.get("/", function(req) return respond(200, "x") end)
    """)
    errors = body_of(script.handle(request("/"))).decode().split("|")
    assert "res.status must be an integer from 200 to 599" in errors[0]
    assert "res.headers: header name" in errors[1]
    assert "res.whatever cannot be set" in errors[2]
    assert "res.headers cannot be replaced" in errors[3]


def test_next_without_looking_keeps_the_old_action_fields() -> None:
    # Scripts written when next() returned the action itself keep working: a.kind, a.status,
    # a.message, a.path, a.backends, and a respond's a.body used as its body string.
    script = load("""
    chi.use(function(req, next)
      local a = next(req)
      if a.kind == "proxy" then
        return respond(200, a.path .. " " .. a.backends[1] .. " " .. tostring(a.status == nil))
      end
      return respond(a.status, a.body .. "|mw" .. #a.body, {["x-kind"] = a.kind})
    end)
    chi.get("/p", function(req) return proxy("a", {path = "/x"}) end)
    chi.get("/r", function(req) return respond(200, "handler") end)
    """)
    assert body_of(script.handle(request("/r"))) == b"handler|mw7"
    run = started(script, "/p")  # a.status of a proxy is its upstream's status now
    assert isinstance(run.effect, OpenUpstream)
    assert body_of(run.resume(Head(200, (), "a"))) == b"/x a false"


# -- calls ------------------------------------------------------------------------------------

CALLER = """
chi.get("/", function(req)
  local res, err = http.request("a", {method = "post", path = "/verify", query = "x=1",
    headers = {Authorization = "Bearer t"}, body = "ping", timeout_ms = 250})
  if not res then return respond(502, err) end
  return respond(200, res.status .. " " .. res.headers["X-User"] .. " " .. res.body)
end)
"""


def test_http_request_calls_a_named_backend() -> None:
    run = started(load(CALLER))
    assert run.effect == Call("a", "POST", "/verify", "x=1", (("authorization", "Bearer t"),),
                              b"ping", 250)
    done = run.resume(CallAnswer(200, (("x-user", "alice"),), b"ok"))
    assert body_of(done) == b"200 alice ok"


@pytest.mark.parametrize("error", ["timeout", "refused", "broken", "too_large"])
def test_http_request_failures_are_nil_and_a_reason(error: str) -> None:
    done = started(load(CALLER)).resume(CallAnswer(error=error))
    assert done.action == RespondAction(502, error.encode())


def test_http_request_defaults() -> None:
    run = started(load('chi.get("/", function(req) http.request("a") return respond(200) end)'))
    assert run.effect == Call("a", "GET", "/", "", (), b"", 1000)


@pytest.mark.parametrize("call,message", [
    ('http.request("nope")', "unknown backend 'nope'"),
    ('http.request("a", {path = "//evil"})', "path must start with exactly one '/'"),
    ('http.request("a", {path = "/a/../b"})', "'.' or '..' segments"),
    ('http.request("a", {headers = {["x"] = "a\\nb"}})', "CR, LF or NUL"),
    ('http.request("a", {port = 1})', "unknown option 'port'"),
    ('http.request("a", {timeout_ms = 0})', "timeout_ms must be an integer"),
])
def test_http_request_refuses_what_could_leave_the_tenant(call: str, message: str) -> None:
    script = load(f'chi.get("/", function(req)\n  {call}\n  return respond(200) end)')
    with pytest.raises(ScriptRuntimeError, match=message) as caught:
        script.start(request("/"))
    assert caught.value.diagnostics[0].line == 2


def test_http_request_is_capped_per_request() -> None:
    script = load('chi.get("/", function(req) for i = 1, 11 do http.request("a") end '
                  'return respond(200) end)', limits=Limits(max_calls=10))
    run = started(script)
    for _ in range(9):  # calls 1 to 9 answered; the tenth waits
        run = run.resume(CallAnswer(200))
    assert isinstance(run.effect, Call)
    with pytest.raises(ScriptRuntimeError, match=r"more than 10 calls in one request") as caught:
        run.resume(CallAnswer(200))  # the eleventh is refused before it waits
    assert caught.value.diagnostics[0].line == 1


def test_http_request_while_loading_is_refused() -> None:
    from luascripts.engine import validate

    result = validate('http.request("a")\nchi.get("/", function() return proxy("a") end)',
                      backend_names=["a"])
    assert not result.valid
    assert "can only be called while handling a request" in result.errors[0].message


# -- where a script can wait ------------------------------------------------------------------


@pytest.mark.parametrize("wrapper", [
    "local ok, v = pcall(function() return req.body() end) return v",
    "local ok, v = xpcall(function() return req.body() end, debug_handler) return v",
    "return coroutine.wrap(function() return req.body() end)()",
    "local co = coroutine.create(function() coroutine.yield('mine') return req.body() end) "
    "local _, first = coroutine.resume(co) local _, second = coroutine.resume(co) "
    "return first .. second",
    "local t = setmetatable({}, {__index = function(_, k) return req.body() end}) return t.x",
    "return coroutine.wrap(function() return coroutine.wrap(function() "
    "return req.body() end)() end)()",
])
def test_waiting_works_in_pcall_coroutines_and_metamethods(wrapper: str) -> None:
    script = load(f'local function debug_handler(e) return e end\n'
                  f'chi.post("/", function(req) local function get() {wrapper} end '
                  f'return respond(200, get()) end)')
    run = started(script, method="POST")
    assert run.effect == ReadBody()
    assert body_of(run.resume(BodyAnswer(b"B"))) in (b"B", b"mineB")


@pytest.mark.parametrize("where", [
    "table.sort({3, 2, 1}, function(a, b) req.body() return a < b end)",
    "string.gsub('ab', '.', function(c) req.body() end)",
    "tostring(setmetatable({}, {__tostring = function() return req.body() end}))",
])
def test_waiting_where_lua_cannot_yield_is_an_error_at_the_line(where: str) -> None:
    script = load(f'chi.post("/", function(req)\n  {where}\n  return respond(200) end)')
    with pytest.raises(ScriptRuntimeError, match="cannot wait for the gateway here") as caught:
        script.start(request("/", "POST"))
    assert caught.value.diagnostics[0].line == 2


def test_scripts_cannot_drive_the_requests_own_coroutine() -> None:
    script = load("""
    local stolen
    chi.post("/steal", function(req)
      stolen = coroutine.running()
      local ok, err = pcall(coroutine.yield, "x")
      return respond(200, tostring(coroutine.isyieldable()) .. " " .. err .. " " ..
        req.body())
    end)
    chi.get("/use", function(req)
      local ok1, e1 = pcall(coroutine.resume, stolen, "forged")
      local ok2, e2 = pcall(coroutine.close, stolen)
      return respond(200, tostring(e1) .. " | " .. tostring(e2))
    end)
    """)
    waiting = started(script, "/steal", "POST")  # suspended in req.body()
    used = body_of(script.handle(request("/use"))).decode()
    assert used.count("cannot resume or close a request's own coroutine") == 2
    assert body_of(waiting.resume(BodyAnswer(b"mine"))) == \
        b"false attempt to yield from outside a coroutine mine"


def test_a_coroutine_waiting_for_the_gateway_cannot_be_answered_by_the_script() -> None:
    script = load("""
    local parked
    chi.post("/park", function(req)
      parked = coroutine.create(function() return req.body() end)
      coroutine.resume(parked)  -- forwards the wait to the gateway
      return respond(200, "parked")
    end)
    chi.get("/poke", function(req)
      local ok, err = coroutine.resume(parked, "forged body")
      return respond(200, tostring(ok) .. " " .. tostring(err))
    end)
    """)
    run = started(script, "/park", "POST")
    run.cancel()  # the client went away while the body was awaited
    poked = body_of(script.handle(request("/poke"))).decode()
    assert poked.startswith("false") and "only the gateway can answer it" in poked


# -- many requests, one runtime ---------------------------------------------------------------


def test_waiting_requests_interleave_without_mixing_state() -> None:
    script = load("""
    chi.post("/", function(req)
      req.headers["x-mine"] = req.headers["x-id"]
      local body = req.body()
      log.info("body " .. body)
      return respond(200, req.headers["x-mine"] .. ":" .. body)
    end)
    """)
    runs = [started(script, method="POST", headers={"x-id": str(i)}) for i in range(5)]
    assert script.waiting == 5
    outcomes = [run.resume(BodyAnswer(f"b{i}".encode())) for i, run in reversed(
        list(enumerate(runs)))]
    assert [body_of(o) for o in outcomes] == [f"{i}:b{i}".encode() for i in range(4, -1, -1)]
    assert [o.logs for o in outcomes][0] == (("info", "body b4"),)
    assert script.waiting == 0


def test_waiting_is_not_script_time() -> None:
    script = load('chi.post("/", function(req) return respond(200, req.body()) end)',
                  limits=Limits(request_cpu_ms=20))
    run = started(script, method="POST")
    time.sleep(0.1)  # five times the budget spent waiting for the body
    assert body_of(run.resume(BodyAnswer(b"fine"))) == b"fine"


def test_script_time_adds_up_across_steps() -> None:
    script = load("""
    local function spin(ms) local t = time.now() while time.now() - t < ms / 1000 do end end
    chi.post("/", function(req) spin(15) req.body() spin(15) return respond(200) end)
    """, limits=Limits(request_cpu_ms=25))
    run = started(script, method="POST")
    with pytest.raises(ScriptTimeoutError):
        run.resume(BodyAnswer(b""))


def test_cancel_frees_the_request_and_runs_its_closers_within_budget() -> None:
    script = load("""
    chi.post("/", function(req)
      local guard <close> = setmetatable({}, {__close = function() while true do end end})
      return respond(200, req.body())
    end)
    chi.get("/ok", function(req) return respond(200, "ok") end)
    """, limits=Limits(request_cpu_ms=30))
    run = started(script, method="POST")
    started_at = time.perf_counter()
    run.cancel()
    assert time.perf_counter() - started_at < 1
    assert script.waiting == 0
    assert body_of(script.handle(request("/ok"))) == b"ok"


def test_bodies_held_by_waiting_requests_are_bounded_by_the_runtime() -> None:
    limits = Limits(memory_bytes=4 * 1024 * 1024, max_request_body_bytes=1024 * 1024)
    script = load("""
    local held = {}
    chi.post("/", function(req)
      local body = req.body()
      local res, err = http.request("a")  -- keeps the body alive while it waits
      return respond(200, #body)
    end)
    """, limits=limits)
    body = b"x" * (900 * 1024)
    waiting, busy = [], 0
    for _ in range(8):
        run = started(script, method="POST")
        try:
            waiting.append(run.resume(BodyAnswer(body)))
        except RuntimeBusy:
            busy += 1
    assert 1 <= len(waiting) < 8 and busy == 8 - len(waiting)
    assert all(isinstance(run.effect, Call) for run in waiting)
    for run in waiting:
        assert body_of(run.resume(CallAnswer(200))) == str(len(body)).encode()
    # once they are done, the memory is there again
    assert isinstance(started(script, method="POST").resume(BodyAnswer(body)), ScriptRun)


def test_selector_scripts_can_read_the_body() -> None:
    script = load("""
    function on_route_request(request, backends)
      if request.body() == "b" then return {selected_backend = "b"} end
      return {selected_backend = "a"}
    end
    """)
    run = started(script, method="POST")
    assert run.resume(BodyAnswer(b"b")).action.backends == ("b",)


def test_handle_refuses_a_script_that_waits() -> None:
    script = load('chi.get("/", function(req) return respond(200, req.body()) end)')
    with pytest.raises(ScriptRuntimeError, match="waits for the gateway"):
        script.handle(request("/"))
    assert script.waiting == 0
