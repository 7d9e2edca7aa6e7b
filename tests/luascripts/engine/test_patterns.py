"""chi pattern syntax: parsing, param regexps, and the registration errors they cause."""

from __future__ import annotations

import time

import pytest

from luascripts.engine import Diagnostic, ScriptLoadError, load_script, validate
from luascripts.engine.patterns import CatchAll, Param, PatternError, Static, parse_pattern
from luascripts.engine.regexps import UNBOUNDED, RegexpError, compile_param_regexp


def test_parse_static_param_regexp_and_catchall() -> None:
    tokens = parse_pattern("/users/{id}/files/{name}.{ext:[a-z]+}/*")
    assert tokens[0] == Static("/users/")
    assert tokens[1] == Param("id", "/")
    assert tokens[3].name == "name" and tokens[3].tail == "."
    assert tokens[5].name == "ext" and tokens[5].tail == "/" and tokens[5].regexp is not None
    assert tokens[-1] == CatchAll()


def test_regexp_may_contain_braces() -> None:
    (_, param) = parse_pattern("/{year:[0-9]{4}}")
    assert param.regexp.matches("2024") and not param.regexp.matches("24")


@pytest.mark.parametrize(("pattern", "reason"), [
    ("users", "must begin with '/'"),
    ("", "must begin with '/'"),
    ("/a/*/b", "must be the last"),
    ("/a/{id", "closing delimiter"),
    ("/a/id}", "no opening"),
    ("/{id}/{id}", "duplicate param key"),
    ("/{a}{b}", "separated by static text"),
    ("/{a}*", "directly followed by '*'"),
    ("/{9x}", "param name"),
    ("/{id:[0-9}", "invalid regexp"),
    ("/{id:}", "the regexp is empty"),
    ("/{id:(?=x)x}", "lookarounds"),
    ("/{id:(a)\\1}", "backreferences"),
    ("/{id:(a+)+}", "exponential"),
])
def test_bad_patterns(pattern: str, reason: str) -> None:
    with pytest.raises(PatternError, match=reason.replace("(", r"\(").replace("*", r"\*")):
        parse_pattern(pattern)


def test_regexp_is_anchored_like_chi() -> None:
    rx = compile_param_regexp("[0-9]+")
    assert rx.matches("123") and not rx.matches("123a") and not rx.matches("a123")
    assert compile_param_regexp("^v[12]$").matches("v1")
    # chi adds '^' and '$' around the whole regexp: a top-level alternation binds them to
    # its first and last branch ("^a|b$": starts with a, or ends with b).
    either = compile_param_regexp("a|b")
    assert either.matches("ab") and either.matches("ax") and either.matches("xb")
    assert not either.matches("xa") and not either.matches("c")
    assert compile_param_regexp("(a|b)").matches("a") and not compile_param_regexp(
        "(a|b)").matches("ab")


def test_regexp_cost_bound_caps_ambiguous_repetition() -> None:
    assert compile_param_regexp("[a-z]+-[a-z]+-[0-9]+").max_len == UNBOUNDED  # separated
    assert compile_param_regexp("[a-z0-9]+(?:-[a-z0-9]+)*").max_len < UNBOUNDED
    rx = compile_param_regexp(".*.*.*x")
    assert 8 <= rx.max_len < 200
    # A value past the bound is simply not tested, so the worst case stays cheap.
    started = time.perf_counter()
    assert not rx.matches("a" * 5000)
    assert time.perf_counter() - started < 0.05
    with pytest.raises(RegexpError):
        compile_param_regexp("(a|aa)*")


@pytest.mark.parametrize(("line", "call", "reason"), [
    (3, 'chi.get("users", h)', "must begin with '/'"),
    (3, 'chi.get("/a/*/b", h)', "must be the last"),
    (3, 'chi.get("/a/{id", h)', "closing delimiter"),
    (3, 'chi.get("/{id}/{id}", h)', "duplicate param key"),
    (3, 'chi.get("/{id:[0-9}", h)', "invalid regexp"),
    (3, 'chi.mount("legacy", "legacy")', "must begin with '/'"),
    (3, 'chi.route("/x/{a", function(r) end)', "closing delimiter"),
    (3, 'chi.handle("PURGE", "/x", h)', "unknown HTTP method"),
    (3, 'chi.get("/x", "not a function")', "handler must be a function"),
    (3, 'chi.get("/a", h); chi.use(function(r, n) return n(r) end)', "before any route"),
    (3, 'chi.mount("/x", "legacy"); chi.mount("/x", "legacy")', "existing path"),
    (3, 'chi.get("/x/*", h); chi.mount("/x", "legacy")', "existing path"),
    (3, 'chi.mount("/x", "nope")', "unknown backend 'nope'"),
    (3, 'chi.mount("/x", chi.with(h))', "chi.router()"),
])
def test_registration_errors_carry_the_script_line(line: int, call: str, reason: str) -> None:
    source = f"local function h(req) return proxy('a') end\nchi.get('/ok', h)\n{call}\n"
    result = validate(source, backend_names=["a", "legacy"])
    assert not result.valid
    assert len(result.errors) == 1, result.errors
    error = result.errors[0]
    assert error.line == line
    assert reason in error.message
    with pytest.raises(ScriptLoadError) as exc_info:
        load_script(source, tenant="t", backend_names=["a", "legacy"])
    assert exc_info.value.diagnostics == result.errors
    assert f"line {line}" in str(exc_info.value)


def test_every_bad_pattern_is_reported_at_once() -> None:
    source = "\n".join([
        "local function h(req) return proxy('a') end",
        "chi.get('a', h)",
        "chi.get('/ok', h)",
        "chi.post('/{x}/{x}', h)",
    ])
    result = validate(source)
    assert [e.line for e in result.errors] == [2, 4]


def test_mount_cycles_are_refused() -> None:
    source = "local r = chi.router()\nr.mount('/again', r)\nchi.mount('/r', r)\n"
    result = validate(source)
    assert not result.valid
    assert result.errors[0] == Diagnostic(2, None, result.errors[0].message)
    assert "inside itself" in result.errors[0].message


def test_use_after_with_is_refused_like_chi() -> None:
    source = ("local function m(r, n) return n(r) end\n"
              "chi.with(m).get('/a', function() return proxy('a') end)\n"
              "chi.use(m)\n")
    result = validate(source)
    assert result.errors[0].line == 3


def test_registering_from_a_handler_is_a_runtime_error() -> None:
    script = load_script("chi.get('/', function(req) chi.get('/late', req) end)", tenant="t")
    from luascripts.engine import ScriptRuntimeError

    from .support import request
    with pytest.raises(ScriptRuntimeError, match="only be called while the script loads"):
        script.handle(request("/"))


def test_route_trees_too_deep_for_the_matcher_are_refused() -> None:
    routes = "\n".join(f"chi.get('/{'a' * i}', h)" for i in range(1, 300))
    result = validate(f"local function h() return proxy('a') end\n{routes}")
    assert not result.valid and "more than 256 levels" in result.errors[0].message
