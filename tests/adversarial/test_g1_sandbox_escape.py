"""Group 1: sandbox escape, with real Lua 5.4 (lupa) in the sandbox the gateway uses.

Each attempt must be refused with a clear error (at validation when the script does it while
loading, at run time otherwise) and nothing may escape: no Python object, no OS, no file, no
registry, no bytecode, no state of another tenant, no shared metatable, no host code run
through the metamethods of returned values.
"""

from __future__ import annotations

import pytest

from luascripts.engine import ScriptRuntimeError, validate

from .support import handler, load, run_once


def outcome_of(body: str, *, extra: str = "", **kw):
    script = load(handler(body, extra=extra))
    try:
        result = run_once(script, **kw)
        after = run_once(script, "/ok")  # the runtime survives whatever the attempt did
        assert after.outcome is not None and after.body == b"still ok", after.error
        return result
    finally:
        script.close()


def value_of(expression: str) -> str:
    result = outcome_of(f"return respond(200, tostring({expression}))")
    return result.body.decode("utf-8", "replace")


def failure_of(body: str, **kw) -> ScriptRuntimeError:
    result = outcome_of(body, **kw)
    assert isinstance(result.error, ScriptRuntimeError), result
    return result.error


# -- nothing dangerous is in reach ----------------------------------------------------------

@pytest.mark.parametrize("name", [
    "python", "os", "io", "package", "debug", "require", "dofile", "loadfile", "load",
    "loadstring", "collectgarbage", "print", "rawset", "module", "setfenv", "getfenv",
    "newproxy", "jit", "ffi",
])
def test_dangerous_globals_are_absent(name):
    assert value_of(name) == "nil"
    assert value_of(f"_G[{name!r}]") == "nil"


@pytest.mark.parametrize("attempt,message", [
    ("python.eval('1')", "global 'python'"),
    ("python.none.__class__.__base__.__subclasses__()", "global 'python'"),
    ("os.execute('id')", "global 'os'"),
    ("io.open('/etc/passwd'):read('a')", "global 'io'"),
    ("require('os')", "global 'require'"),
    ("package.loadlib('libc.so.6', 'system')", "global 'package'"),
    ("debug.getregistry().Py_None", "global 'debug'"),
    ("string.dump(function() end)", "field 'dump'"),
    ("('x'):dump()", "method 'dump'"),
    ("string.pack('i4', 1)", "field 'pack'"),
    ("load(string.char(27) .. 'LuaT')", "global 'load'"),
    ("dofile('/etc/passwd')", "global 'dofile'"),
])
def test_reaching_python_the_os_files_registry_or_bytecode_fails_at_run_time(attempt, message):
    error = failure_of(f"return respond(200, tostring({attempt}))")
    assert message in error.message
    assert error.diagnostics and error.diagnostics[0].line == 3  # the handler's line


@pytest.mark.parametrize("top_level,message", [
    ("os.execute('id')", "global 'os'"),
    ("io.open('/etc/passwd')", "global 'io'"),
    ("debug.sethook()", "global 'debug'"),
    ("string.dump(function() end)", "field 'dump'"),
    ("python.eval('__import__(\"os\").system(\"id\")')", "global 'python'"),
])
def test_escape_attempts_while_loading_are_refused_at_validation(top_level, message):
    source = f"-- line 1\n{top_level}\nchi.get('/', function(req) return respond(200, 'x') end)\n"
    result = validate(source, backend_names=["a"])
    assert not result.valid
    assert [(d.line, message in d.message) for d in result.errors] == [(2, True)]


@pytest.mark.parametrize("prefix", [b"\x1bLua", b"\x1bLJ"])
def test_bytecode_uploads_are_refused_before_lua_sees_them(prefix):
    result = validate(prefix + b"T\x00\x19\x93\r\n\x1a\n\x04\x08\x08", backend_names=["a"])
    assert not result.valid
    assert result.errors[0].line == 1 and "bytecode" in result.errors[0].message


def test_no_python_object_is_reachable_from_the_environment():
    """Walk everything a script can reach through _G, library tables (pairs follows the
    read-only proxies), metatables and function results of the helpers: no userdata (which
    is what a Python object looks like in Lua) anywhere."""
    body = r"""
      local seen, found, n = {}, {}, 0
      local function walk(v, path, depth)
        local t = type(v)
        if t == "userdata" then found[#found + 1] = path end
        if (t ~= "table" and t ~= "string") or seen[v] or depth > 6 then return end
        seen[v] = true
        n = n + 1
        local mt = getmetatable(v)
        if mt ~= nil then walk(mt, path .. "<mt>", depth + 1) end
        if t == "table" then
          for k, x in pairs(v) do walk(x, path .. "." .. tostring(k), depth + 1) end
        end
      end
      walk(_G, "_G", 0)
      walk(req, "req", 0)
      walk(req.headers, "req.headers", 0)
      walk(time.now(), "time.now()", 0)
      walk(proxy("a"), "proxy()", 0)
      walk(json.null, "json.null", 0)
      walk(coroutine.running(), "thread", 0)
      return respond(200, n .. ":" .. table.concat(found, ","))
    """
    result = outcome_of(body)
    visited, found = result.body.decode().split(":", 1)
    assert found == ""
    assert int(visited) > 10  # the walk did go somewhere


# -- shared metatables and library tables --------------------------------------------------

def test_the_string_metatable_is_a_placeholder():
    assert value_of('getmetatable("")') == "string metatable (protected)"
    assert value_of('getmetatable("").__index') == "nil"
    error = failure_of('getmetatable("").__index.upper = function() return "pwned" end')
    assert "attempt to index a nil value" in error.message


@pytest.mark.parametrize("assignment", [
    "string.upper = function() return 'pwned' end",
    "table.concat = nil",
    "math.random = function() return 4 end",
    "json.encode = function() return 'pwned' end",
    "coroutine.create = nil",
    "crypto.sha256 = function() return 'pwned' end",
    "log.info = nil",
])
def test_library_tables_are_read_only(assignment):
    error = failure_of(assignment)
    assert "is read-only" in error.message


@pytest.mark.parametrize("expression", [
    "setmetatable(_G, {})", "setmetatable(req, {})", "setmetatable(json.null, {})",
    "setmetatable(req.headers, {})",
])
def test_protected_metatables_cannot_be_replaced(expression):
    error = failure_of(f"{expression} return respond(200, 'x')")
    assert "cannot change a protected metatable" in error.message


@pytest.mark.parametrize("library,member,probe", [
    ("string", "upper", '("x"):upper()'),
    ("json", "encode", "json.encode({})"),
])
def test_library_tables_cannot_be_reached_through_pairs(library, member, probe):
    body = (f"local _, real = pairs({library})\n"
            f"pcall(function() real.{member} = function() return 'pwned' end end)\n"
            f"return respond(200, tostring({probe}))")
    assert outcome_of(body).body != b"pwned"


def test_action_objects_are_read_only_and_opaque():
    error = failure_of("local a = reject(403, 'no') a.status = 200 return a")
    assert "actions are read-only" in error.message
    assert value_of("getmetatable(reject(403))") == "action"


def test_globals_cannot_be_written_after_loading():
    error = failure_of("leaked = 'x' return respond(200, 'x')")
    assert "cannot set global 'leaked'" in error.message


def test_gc_metamethods_are_refused_and_late_ones_never_run():
    error = failure_of("setmetatable({}, {__gc = function() while true do end end})")
    assert "__gc metamethods are not allowed" in error.message
    # Adding __gc after setmetatable does not mark the object for finalisation (Lua 5.4):
    # churn enough garbage to force collections; a finaliser would loop with hooks off.
    result = outcome_of("""
      local mt = {}
      local t = setmetatable({}, mt)
      mt.__gc = function() while true do end end
      t = nil
      for i = 1, 200000 do local junk = {i} end
      return respond(200, "alive")
    """)
    assert result.body == b"alive" and result.seconds < 1.0


# -- the host through returned values ------------------------------------------------------

LOOP_MT = "setmetatable({}, {__index = function() while true do end end, " \
          "__pairs = function() while true do end end, __len = function() while true do end " \
          "end, __tostring = function() while true do end end, __eq = function() while true " \
          "do end end})"


@pytest.mark.parametrize("body,message", [
    (f"return {LOOP_MT}", "the handler returned a table, not an action"),
    (f"return respond(200, {LOOP_MT})", "body must be a string"),
    (f"return respond(200, 'x', {{['x-a'] = {LOOP_MT}}})", "must have a string value"),
    (f"return proxy({LOOP_MT})", "the list of backends must hold 1 to 64 names"),
    (f"return reject(403, {LOOP_MT})", "message must be a string"),
    (f"error({LOOP_MT})", "error() was called with a table value"),
    (f"return proxy('a', {{path = {LOOP_MT}}})", "path must be a string"),
])
def test_metamethods_of_returned_values_never_run_in_the_host(body, message):
    """Results are checked inside the sandbox with rawget/rawlen/type: a looping metamethod
    is never called, so the request fails at once with a clear message (no timeout)."""
    result = outcome_of(body)
    assert isinstance(result.error, ScriptRuntimeError), result
    assert message in result.error.message
    assert result.seconds < 0.045  # well inside the 50 ms budget: nothing looped


def test_metamethods_on_option_tables_are_ignored():
    # set_headers is read with next(), never pairs()/__index: only raw content counts.
    result = outcome_of("""
      local h = setmetatable({["x-real"] = "1"}, {
        __pairs = function() error("never called") end,
        __index = function() return "injected\\r\\nx-evil: 1" end})
      return proxy("a", {set_headers = h})
    """)
    assert result.outcome is not None
    assert result.outcome.action.set_headers == (("x-real", "1"),)


# -- other tenants' state ------------------------------------------------------------------

def test_tenants_share_nothing():
    a = load(handler("return respond(200, 'a')", extra=(
        "SECRET = 'tenant-a-secret'\n"
        "local hidden = 'upvalue-secret'\n"
        "chi.get('/secret', function(req) return respond(200, SECRET .. hidden) end)")),
        tenant="a")
    b = load(handler("""
        local seen = {}
        for k, v in pairs(_G) do seen[#seen + 1] = tostring(k) .. '=' .. tostring(v) end
        return respond(200, tostring(SECRET) .. '|' .. tostring(rawget(_G, 'SECRET')) .. '|' ..
                       table.concat(seen, ',') .. '|' .. ("x"):upper())
    """), tenant="b")
    try:
        assert run_once(a, "/secret").body == b"tenant-a-secret" + b"upvalue-secret"
        assert run_once(b).body == b"nil|nil||X"
        assert a._compiled.runtime.lua is not b._compiled.runtime.lua
    finally:
        a.close()
        b.close()


def test_one_requests_headers_do_not_reach_the_next():
    script = load(handler("""
        local out = {}
        for k, v in pairs(req.headers) do out[#out + 1] = k .. '=' .. v end
        table.sort(out)
        return respond(200, table.concat(out, ';'))
    """))
    try:
        first = run_once(script, headers={"x-secret": "token-of-client-1"})
        assert b"x-secret=token-of-client-1" in first.body
        second = run_once(script, headers={"x-other": "2"})
        assert second.body == b"x-other=2"
    finally:
        script.close()
