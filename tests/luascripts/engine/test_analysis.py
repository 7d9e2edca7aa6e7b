"""What validation reads from a script's text: literal backend names, handlers that never run."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from luascripts.engine import validate
from luascripts.engine.analysis import tokens, unknown_backends

BACKENDS = ["main", "backup", "auth"]


def messages(source: str) -> list[tuple[int | None, str]]:
    return [(d.line, d.message) for d in unknown_backends(source, BACKENDS)]


def test_a_misspelt_backend_in_proxy_is_an_error_at_its_line() -> None:
    result = validate('chi.get("/", function(req)\n  return proxy("mian")\nend)',
                      backend_names=BACKENDS)
    assert not result.valid
    assert [(d.line, d.message) for d in result.errors] == [
        (2, "proxy(): unknown backend 'mian' (this tenant has: auth, backup, main)")]


@pytest.mark.parametrize("call", [
    'proxy("nope")', "proxy('nope')", 'proxy "nope"', 'proxy([[nope]])', 'proxy([==[nope]==])',
    'proxy({"main", "nope"})', "proxy({'nope'}, {path = '/x'})", 'proxy("nope", {path = "/"})',
    'http.request("nope")', 'http.request("nope", {path = "/verify"})', 'http.request "nope"',
    'proxy(  -- a comment\n "nope")',
])
def test_literal_names_in_every_call_form_are_checked(call: str) -> None:
    found = messages(f"chi.get('/', function(req) local x = {call} return x end)")
    assert len(found) == 1 and "'nope'" in found[0][1]


@pytest.mark.parametrize("code", [
    '-- proxy("nope")', '--[[ proxy("nope") ]]', '--[==[ proxy("nope") ]==]',
    'local s = "proxy(\\"nope\\")"', "local s = [[proxy('nope')]]",
    'local x = proxy("users-" .. v)', 'local x = proxy(name)', 'local x = t.proxy("nope")',
    'local x = obj:proxy("nope")', 'local x = proxy({"main", name})', 'local x = proxy("main")',
    'local x = http.request(backend)', 'local x = myhttp.request("nope")',
])
def test_comments_strings_and_names_known_only_at_run_time_are_left_alone(code: str) -> None:
    assert messages(code) == []


def test_lines_are_counted_across_long_strings_and_comments() -> None:
    source = '--[[\n\n]]\nlocal s = [[a\nb\n]]\nlocal t = "x\\\ny"\nreturn proxy("nope")'
    assert messages(source) == [
        (9, "proxy(): unknown backend 'nope' (this tenant has: auth, backup, main)")]
    assert [t.line for t in tokens(source) if t.text == "proxy"] == [9]


def test_an_unknown_mount_and_an_unknown_proxy_are_both_reported() -> None:
    result = validate('chi.mount("/old", "legacy")\n'
                      'chi.get("/", function() return proxy("mian") end)',
                      backend_names=BACKENDS)
    assert [d.line for d in result.errors] == [1, 2]


def test_a_route_registered_twice_warns_about_the_first() -> None:
    result = validate('chi.get("/a", function() return proxy("main") end)\n'
                      'chi.post("/a", function() return proxy("main") end)\n'
                      'chi.get("/a", function() return proxy("backup") end)\n',
                      backend_names=BACKENDS)
    assert result.valid
    assert [(w.line, w.message) for w in result.warnings] == [
        (1, "GET /a never runs: line 3 registers GET /a again, and chi keeps the last handler")]


def test_param_names_do_not_tell_routes_apart_and_star_replaces_every_method() -> None:
    result = validate('chi.get("/u/{id}", function() return proxy("main") end)\n'
                      'chi.put("/u/{id}", function() return proxy("main") end)\n'
                      'chi.handle("*", "/u/{name}", function() return proxy("main") end)\n'
                      'chi.get("/u/{id:[0-9]+}", function() return proxy("main") end)\n',
                      backend_names=BACKENDS)
    assert sorted(w.line for w in result.warnings) == [1, 2]
    assert all("line 3 registers * /u/{name}" in w.message for w in result.warnings)


def test_the_same_pattern_in_two_routers_is_no_duplicate() -> None:
    result = validate('chi.get("/a", function() return proxy("main") end)\n'
                      'chi.route("/x", function(r) r.get("/a", function() '
                      'return proxy("main") end) end)', backend_names=BACKENDS)
    assert result.valid and result.warnings == ()


@pytest.mark.parametrize("source", ["é = 1", "local x² = 1", "\u0663", "proxy(\"\u00e9\")",
                                    "'unfinished", "[[unfinished", "--[[ unfinished",
                                    "\\", "\x00", "proxy(", "http.request"])
def test_any_text_tokenises_without_failing(source: str) -> None:
    list(tokens(source))  # no exception: the validator must never 500 on odd input
    unknown_backends(source, BACKENDS)


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_tokenising_never_fails_on_any_text(source: str) -> None:
    for token in tokens(source):
        assert token.line >= 1
    unknown_backends(source, BACKENDS)


def test_uses_shared_state() -> None:
    from luascripts.engine.analysis import uses_shared_state

    assert uses_shared_state('chi.get("/", function(req) local v = shared.get("k") end)')
    assert uses_shared_state('local ok = limit.allow("k", 1, 60)')
    assert uses_shared_state('chi.use(middleware.rate_limit{rate = 1})')
    assert uses_shared_state('local s = shared["get"]')
    assert not uses_shared_state('-- shared.get("k") in a comment\nlocal s = "limit.allow"')
    assert not uses_shared_state('local t = cfg.shared.get local limit = 5')
    assert not uses_shared_state('chi.use(middleware.cors{origins = {"*"}})')
