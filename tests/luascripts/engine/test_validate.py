"""validate() and load_script(): what is refused, how it is reported, what success returns."""

from __future__ import annotations

import pytest

from luascripts.engine import (
    Diagnostic,
    Limits,
    RouteInfo,
    ScriptLoadError,
    ValidationResult,
    load_script,
    validate,
)

GOOD = """
local function auth(req, next) return next(req) end
chi.use(auth)
chi.get("/users/{id}", function(req) return proxy("users-v1") end)
chi.with(auth).post("/users", function(req) return proxy("users-v1") end)
chi.mount("/old", "legacy")
"""


def test_success_reports_the_route_table() -> None:
    result = validate(GOOD, backend_names=["users-v1", "legacy"])
    # Middleware labels, outermost first: a local function is known by its line ("line 2";
    # luascripts.route_table names it from the source when a version is stored).
    assert result == ValidationResult(valid=True, routes=(
        RouteInfo("GET", "/users/{id}", 1, "", labels=("line 2",)),
        RouteInfo("POST", "/users", 2, "", labels=("line 2", "line 2")),
        RouteInfo("*", "/old/*", 1, "backend:legacy", labels=("line 2",)),
    ))
    assert result.routes[2].to_dict() == {"method": "*", "pattern": "/old/*", "middleware": 1,
                                          "target": "backend:legacy", "labels": ["line 2"]}


def test_backend_names_are_only_checked_when_given() -> None:
    assert validate(GOOD).valid
    result = validate(GOOD, backend_names=["users-v1"])
    assert result.errors == (Diagnostic(6, None, result.errors[0].message),)
    assert "unknown backend 'legacy'" in result.errors[0].message


def test_syntax_errors_have_line_and_column() -> None:
    result = validate("chi.get('/', function(req)\n  return proxy('a') +\nend)\n")
    assert not result.valid
    error = result.errors[0]
    assert error.line == 3 and error.column == 1
    assert "unexpected symbol near 'end'" in error.message
    assert validate("x = 1 +").errors[0].column is None  # '<eof>' is nowhere on the line
    # an ambiguous token gets no column rather than a wrong one
    assert validate("x = = 1").errors[0] == Diagnostic(1, None, "unexpected symbol near '='")
    assert validate("local ok = pcall(").errors[0].line == 1
    unfinished = validate("chi.get('/', function(req)\n").errors[0]
    assert unfinished.line == 2 and unfinished.column is None and "<eof>" in unfinished.message


def test_runtime_errors_while_registering_have_lines() -> None:
    result = validate("\n\nlocal x = nil\nx.y = 1\n")
    assert result.errors[0].line == 4
    assert "attempt to index a nil value (local 'x')" in result.errors[0].message


def test_a_script_must_register_something() -> None:
    assert "registers no routes" in validate("local x = 1").errors[0].message
    assert "must be a function" in validate("on_route_request = 5").errors[0].message


def test_selector_scripts_validate() -> None:
    result = validate("function on_route_request(r, b) return {selected_backend = 'a'} end")
    assert result == ValidationResult(valid=True, is_selector=True)


@pytest.mark.parametrize(("source", "message"), [
    (b"\x1bLuaT\x00", "bytecode"),
    (b"\x1bLJ\x02", "bytecode"),
    (b"chi.get('/\xff', h)", "not valid UTF-8"),
    ("x" * (256 * 1024 + 1), "the limit is 262144 bytes"),
    (42, "must be Lua source text"),
])
def test_sources_refused_before_lua(source: object, message: str) -> None:
    result = validate(source)  # type: ignore[arg-type]
    assert not result.valid and message in result.errors[0].message
    with pytest.raises(ScriptLoadError, match=message):
        load_script(source, tenant="t")  # type: ignore[arg-type]


def test_source_limit_follows_limits() -> None:
    source = "chi.get('/', function() return proxy('a') end)" + " " * 200
    assert not validate(source, limits=Limits(max_source_bytes=100)).valid
    assert validate(source.encode()).valid


def test_utf8_text_in_patterns_and_messages() -> None:
    result = validate("chi.get('/café/{x}', function() return respond(200, 'ü') end)")
    assert result.routes[0].pattern == "/café/{x}"
    bad = validate("chi.get('/ü/{x', function() end)")
    assert "/ü/{x" in bad.errors[0].message


def test_load_error_lists_everything() -> None:
    with pytest.raises(ScriptLoadError) as exc_info:
        load_script("local function h() end chi.get('a', h)\nchi.get('/{x}/{x}', h)\n",
                    tenant="t")
    error = exc_info.value
    assert [d.line for d in error.diagnostics] == [1, 2]
    assert str(error).startswith("The script could not be loaded: 2 problems: line 1:")


def test_validate_never_raises_for_hostile_scripts() -> None:
    hostile = [
        "while true do end",
        "local t = {} while true do t[#t+1] = ('x'):rep(4096) end",
        "error(setmetatable({}, {__tostring = function() while true do end end}))",
        "string.rep('x', 2^62)",
        "setmetatable({}, {__gc = function() while true do end end})",
        "chi.get('/', function() end) return function() end",
    ]
    for source in hostile:
        result = validate(source, limits=Limits(register_cpu_ms=100, memory_bytes=4 << 20))
        assert isinstance(result, ValidationResult)
        assert result.valid == source.startswith("chi.get"), (source, result)
