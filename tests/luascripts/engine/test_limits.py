"""CPU and memory budgets, result checking, and recovery after each kind of failure."""

from __future__ import annotations

import time

import pytest

from luascripts.engine import (
    Limits,
    ScriptLoadError,
    ScriptMemoryError,
    ScriptRuntimeError,
    ScriptTimeoutError,
)

from .support import FAST, load, request

# A regression here means Lua that never returns: fail fast, from a watchdog thread (a signal
# cannot interrupt a C call into Lua).
pytestmark = pytest.mark.timeout(30, method="thread")

OK_ROUTE = "\nchi.get('/ok', function() return proxy('a') end)"


def slow_route(body: str) -> str:
    return f"chi.get('/', function(req)\n{body}\nend)" + OK_ROUTE


def assert_times_out(body: str, *, within: float = 0.5) -> ScriptTimeoutError:
    script = load(slow_route(body), limits=FAST)
    started = time.perf_counter()
    with pytest.raises(ScriptTimeoutError) as exc_info:
        script.handle(request("/"))
    assert time.perf_counter() - started < within
    # the runtime stays usable, with its full budget and no sticky hook left behind
    assert script.handle(request("/ok")).action.backends == ("a",)
    return exc_info.value


@pytest.mark.parametrize("body", [
    # metamethods run tenant code from inside the VM
    "local t = setmetatable({}, {__index = function() while true do end end}) return t.x",
    "local t = setmetatable({}, {__newindex = function() while true do end end}) t.x = 1",
    "local a = setmetatable({}, {__eq = function() while true do end end})\n"
    "local b = setmetatable({}, getmetatable(a)) return a == b",
    "local t = setmetatable({}, {__concat = function() while true do end end}) return t .. 'x'",
    "return tostring(setmetatable({}, {__tostring = function() while true do end end}))",
    "local t = setmetatable({}, {__pairs = function() while true do end end}) pairs(t)",
    # library functions calling back into tenant code
    "local t = {3, 2, 1} table.sort(t, function(a, b) while true do end end)",
    "string.gsub('abc', '%w', function() while true do end end)",
    # error handlers and swallowing
    "xpcall(function() while true do end end, function() while true do end end)",
    "while true do xpcall(function() while true do end end, function(e) return e end) end",
    "local co = coroutine.wrap(function() while true do coroutine.yield() end end)\n"
    "while true do co() end",
    "local co = coroutine.create(function() while true do end end)\n"
    "while true do pcall(coroutine.resume, co) end",
    "while true do pcall(coroutine.wrap(function() while true do end end)) end",
    "while true do pcall(error, 'x') end",
])
def test_cpu_budget_holds_everywhere(body: str) -> None:
    assert_times_out(body)


def test_timeout_cannot_be_swallowed_by_a_middleware() -> None:
    source = """
    chi.use(function(req, next)
      local ok, err = pcall(next, req)
      return respond(200, "swallowed: " .. tostring(err))
    end)
    chi.get('/', function() while true do end end)
    """
    script = load(source, limits=FAST)
    with pytest.raises(ScriptTimeoutError):
        script.handle(request("/"))


def test_timeout_names_the_line_and_budget() -> None:
    error = assert_times_out("local n = 0\nwhile true do\n  n = n + 1\nend")
    assert "30 ms CPU budget" in error.message
    assert error.diagnostics[0].line in (3, 4)


def test_each_request_gets_its_own_budget() -> None:
    source = slow_route("local t = time.now() while time.now() - t < 0.012 do end\n"
                        "return proxy('a')")
    script = load(source, limits=FAST)
    for _ in range(4):  # 12 ms each, 30 ms budget each: never accumulates
        assert script.handle(request("/")).action.backends == ("a",)


def test_loops_of_capped_string_calls_meet_the_deadline() -> None:
    # Each find is under the cap (~8M steps), but a loop of them must stop at the deadline
    # instead of after the next 1000 instructions (one find is a single instruction).
    assert_times_out("local s = ('a'):rep(3000) while true do s:find('a*b') end", within=1.0)
    assert_times_out("local s = ('x'):rep(1000000) while true do s:upper() end", within=1.0)


def test_string_caps_allow_ordinary_work() -> None:
    source = slow_route("""
      local cookie = ("k=v; "):rep(800)
      local n = 0
      for k, v in cookie:gmatch("([^=;%s]+)=([^;]*)") do n = n + 1 end
      local body = ("word  "):rep(20000)
      local squeezed = body:gsub("%s+", " ")
      local trimmed = ("  padded  "):match("^%s*(.-)%s*$")
      return respond(200, n .. "|" .. #squeezed .. "|" .. trimmed)""")
    outcome = load(source).handle(request("/"))
    assert outcome.action.body == b"800|100000|padded"


@pytest.mark.parametrize(("body", "message"), [
    ("return ('a'):rep(30000):find('a*b')", "too costly"),
    ("return ('a'):rep(100000):gsub('(a*)*b', '')", "too costly"),
    ("return ('x'):rep(5000000)", "the limit is"),
    ("return string.format('%s%s', ('x'):rep(3000000), 'y')", "result could reach"),
    ("local t = {} for i = 1, 200000 do t[i] = i end table.sort(t)", "at most 100000"),
])
def test_string_and_table_caps(body: str, message: str) -> None:
    script = load(slow_route(body))
    started = time.perf_counter()
    with pytest.raises(ScriptRuntimeError, match=message):
        script.handle(request("/"))
    assert time.perf_counter() - started < 0.5


def test_memory_cap_inside_protection_and_after() -> None:
    source = """
    local function grow()
      local t = {}
      while true do t[#t + 1] = ("x"):rep(1000) .. #t end
    end
    chi.get('/caught', function() local ok, err = pcall(grow) return respond(200, err) end)
    chi.get('/uncaught', function() grow() end)
    """ + OK_ROUTE
    # a generous CPU budget: this test is about memory, even on a loaded machine
    script = load(source, limits=Limits(memory_bytes=4 * 1024 * 1024, request_cpu_ms=5000))
    # LuaMemoryError inside the protected call: pcall sees it, the script carries on
    assert script.handle(request("/caught")).action.body == b"not enough memory"
    with pytest.raises(ScriptMemoryError, match="4 MiB memory limit"):
        script.handle(request("/uncaught"))
    for _ in range(3):
        assert script.handle(request("/ok")).action.backends == ("a",)
    assert script.memory_used < 4 * 1024 * 1024 + 512 * 1024


def test_registration_budgets() -> None:
    with pytest.raises(ScriptLoadError) as exc_info:
        load("local x = 0\nwhile true do\n  x = x + 1\nend", limits=FAST)
    error = exc_info.value.diagnostics[0]
    assert "200 ms CPU budget" in error.message and error.line in (2, 3, 4)
    with pytest.raises(ScriptLoadError, match="memory limit"):
        load("big = {} for i = 1, 1e7 do big[i] = ('y'):rep(64) .. i end",
             limits=Limits(memory_bytes=2 * 1024 * 1024))


def test_a_script_must_leave_memory_for_requests() -> None:
    with pytest.raises(ScriptLoadError, match="three quarters"):
        load("big = {} for i = 1, 25000 do big[i] = ('y'):rep(100) .. i end\n" + OK_ROUTE,
             limits=Limits(memory_bytes=4 * 1024 * 1024))


@pytest.mark.parametrize("result", [
    "setmetatable({}, {__index = function() while true do end end})",
    "setmetatable({}, {__index = function() return 'a' end})",
    "{selected_backend = 'a', modified_headers = setmetatable({}, "
    "{__index = function() while true do end end, __pairs = function() while true do end end})}",
])
def test_results_are_checked_in_the_sandbox_without_metamethods(result: str) -> None:
    """The host never reads a tenant table: rawget/next inside Lua, flat values out."""
    script = load(slow_route(f"return {result}"))
    started = time.perf_counter()
    try:
        outcome = script.handle(request("/"))
    except ScriptRuntimeError as exc:
        assert "not an action" in exc.message
    else:
        assert outcome.action.backends == ("a",)
        assert outcome.action.set_headers == ()
    assert time.perf_counter() - started < 0.5


def test_runtime_survives_every_kind_of_failure() -> None:
    source = """
    chi.get('/error', function() error("boom") end)
    chi.get('/loop', function() while true do end end)
    chi.get('/mem', function() local s = "x" while true do s = s .. s end end)
    chi.get('/bad', function() return proxy("a", {path = "nope"}) end)
    """ + OK_ROUTE
    script = load(source, limits=Limits(request_cpu_ms=200, memory_bytes=8 * 1024 * 1024))
    expected = {"/error": ScriptRuntimeError, "/loop": ScriptTimeoutError,
                "/mem": ScriptMemoryError, "/bad": ScriptRuntimeError}
    for _ in range(2):
        for path, kind in expected.items():
            with pytest.raises(kind):
                script.handle(request(path))
            assert script.handle(request("/ok")).action.backends == ("a",)


def test_runtime_errors_carry_message_traceback_and_line() -> None:
    script = load("local function inner() error('boom') end\n"
                  "chi.get('/', function() inner() end)")
    with pytest.raises(ScriptRuntimeError) as exc_info:
        script.handle(request("/"))
    error = exc_info.value
    assert error.message == "script:1: boom"
    assert error.diagnostics[0].line == 1
    assert "script:2:" in error.lua_traceback and "in upvalue 'inner'" in error.lua_traceback


def test_request_too_large_for_the_script_is_refused_before_lua() -> None:
    script = load("chi.get('/', function() return proxy('a') end)",
                  limits=Limits(memory_bytes=1024 * 1024))
    with pytest.raises(ScriptRuntimeError, match="too large"):
        script.handle(request("/", headers={"x-big": "v" * 300_000}))
    assert script.handle(request("/")).action.backends == ("a",)


def test_concurrent_requests_share_one_runtime_safely() -> None:
    from concurrent.futures import ThreadPoolExecutor

    source = ("chi.get('/{n}', function(req)\n"
              "  local s = 0 for i = 1, 2000 do s = s + i end\n"
              "  return respond(200, req.params.n .. ':' .. s)\nend)")
    script = load(source)
    with ThreadPoolExecutor(max_workers=4) as pool:
        bodies = list(pool.map(lambda n: script.handle(request(f"/{n}")).action.body,
                               range(200)))
    assert bodies == [f"{n}:2001000".encode() for n in range(200)]
