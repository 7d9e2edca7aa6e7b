"""Group 3: bad uploads through the REST API (and the admin), with a real Lua engine.

Every refused upload answers 400 (413 when too large) with its problems at their lines, and
leaves no trace: no version stored, the active version unchanged, no audit row, the tenant's
configuration version unchanged. A draft the admin keeps for the operator can never become
active.
"""

from __future__ import annotations

import json

import pytest

from luascripts.models import ScriptVersion
from tenants.models import AuditEvent

pytestmark = pytest.mark.django_db

GOOD = 'chi.get("/hello", function(req) return respond(200, "hi") end)\n'
H = 'function(req) return respond(200, "x") end'
SCRIPTS = "/api/v1/tenants/acme/scripts/"

# name -> (source, [(line, message fragment), ...])
BAD = {
    "syntax-error": ('chi.get("/x", function(req)\n  return respond(200, "x"\nend)\n',
                     [(3, "')' expected (to close '(' at line 2)")]),
    "unexpected-symbol": ("local x = = 1\n", [(1, "unexpected symbol near '='")]),
    # (JSON carries no NUL-free real chunk; a NUL is refused by the API itself, see below)
    "binary-chunk": ("\x1bLuaT\x19\x93\r\n\x1a\n\x04\x08", [(1, "bytecode is not accepted")]),
    "luajit-chunk": ("\x1bLJ\x02\x0a", [(1, "bytecode is not accepted")]),
    "error-while-registering": ('chi.get("/a", ' + H + ')\n\nerror("boom at load")\n',
                                [(3, "boom at load")]),
    "loop-while-registering": ('chi.get("/a", ' + H + ')\nwhile true do end\n',
                               [(2, "longer than its 1000 ms CPU budget")]),
    "memory-bomb-while-registering": ('local t = {}\nfor i = 1, 1e9 do t[i] = ("x"):rep(4096) '
                                      '.. i end\n', [(None, "32 MiB memory limit")]),
    "os-while-registering": ('os.execute("id")\n', [(1, "global 'os'")]),
    "pattern-without-slash": (f'chi.get("users", {H})\n', [(1, "must begin with '/'")]),
    "wildcard-in-the-middle": (f'chi.get("/a/*/b", {H})\n',
                               [(1, "'*' must be the last character")]),
    "unbalanced-brace": (f'chi.get("/a/{{id", {H})\n', [(1, "closing delimiter '}' is missing")]),
    "duplicate-param": (f'chi.get("/{{id}}/{{id}}", {H})\n', [(1, "duplicate param key 'id'")]),
    "adjacent-params": (f'chi.get("/{{a}}{{b}}", {H})\n', [(1, "must be separated")]),
    "invalid-regexp": (f'chi.get("/{{id:[0-9}}", {H})\n', [(1, "invalid regexp for param")]),
    "exponential-regexp": (f'chi.get("/{{id:(a+)+}}", {H})\n',
                           [(1, "can take exponential time")]),
    "lookaround-regexp": (f'chi.get("/{{id:(?=a)a}}", {H})\n', [(1, "lookarounds")]),
    "every-bad-pattern-reported": (f'chi.get("/ok", {H})\nchi.get("bad", {H})\n'
                                   f'chi.get("/b/*/c", {H})\n',
                                   [(2, "must begin with '/'"), (3, "'*' must be the last")]),
    "duplicate-mount": ('chi.mount("/api", "api")\nchi.mount("/api", "api")\n',
                        [(2, "mount() a handler on an existing path, '/api'")]),
    "mount-over-a-route": (f'chi.get("/api/*", {H})\nchi.mount("/api", "api")\n',
                           [(2, "existing path")]),
    "mount-unknown-backend": ('chi.mount("/api", "secret-backend")\n',
                              [(1, "unknown backend 'secret-backend' (this tenant has: api)")]),
    "mount-cycle": ('local r = chi.router()\nr.mount("/self", r)\nchi.mount("/x", r)\n',
                    [(2, "cannot be mounted inside itself")]),
    "use-after-routes": (f'chi.get("/a", {H})\nchi.use(function(req, next) return next(req) '
                         'end)\n', [(2, "use() must come before any route")]),
    "unknown-method": (f'chi.handle("FETCH", "/a", {H})\n', [(1, "unknown HTTP method")]),
    "too-many-routes": (f'for i = 1, 5001 do chi.get("/r" .. i, {H}) end\n',
                        [(1, "at most 5000")]),
    "nothing-registered": ("local x = 1\n", [(None, "registers no routes")]),
    "selector-not-a-function": ("on_route_request = 42\n", [(None, "must be a function")]),
}


@pytest.fixture
def ci(acme, make_key, client_for):
    client = client_for(make_key(scopes="read,write,activate", tenants=[acme]))
    response = client.post(SCRIPTS, {"source": GOOD, "activate": True}, format="json")
    assert response.status_code == 201, response.content
    return client


def state(tenant) -> dict:
    tenant.refresh_from_db()
    return {
        "versions": list(ScriptVersion.objects.filter(tenant=tenant)
                         .values_list("number", "sha256", "valid")),
        "active": tenant.active_version_id,
        "config_version": tenant.config_version,
        "audit": AuditEvent.objects.count(),
    }


def refused(response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:600])
    body = response.json()
    assert body["error"] == code and body["request_id"] == response["X-Request-ID"]
    return body


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_script_is_400_with_its_lines_and_nothing_is_stored(ci, acme, name):
    source, expected = BAD[name]
    before = state(acme)
    body = refused(ci.post(SCRIPTS, {"source": source, "message": name}, format="json"),
                   400, "invalid")
    errors = body["errors"]
    assert [e["line"] for e in errors] == [line for line, _ in expected], errors
    for error, (_, fragment) in zip(errors, expected, strict=True):
        assert fragment in error["message"], error
        assert "sandbox:" not in error["message"] and "Traceback" not in error["message"]
    if expected[0][0] is not None:
        assert f"(line {expected[0][0]})" in body["detail"]
    assert state(acme) == before


@pytest.mark.parametrize("name", ["syntax-error", "duplicate-mount", "exponential-regexp"])
def test_publish_with_activate_of_a_bad_script_keeps_the_active_version(ci, acme, name):
    before = state(acme)
    refused(ci.post(SCRIPTS, {"source": BAD[name][0], "activate": True}, format="json"),
            400, "invalid")
    assert state(acme) == before


def test_validate_reports_the_same_problems_and_stores_nothing(ci, acme):
    before = state(acme)
    source, expected = BAD["every-bad-pattern-reported"]
    response = ci.post(SCRIPTS + "validate/", {"source": source}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is False and body["routes"] == []
    assert [e["line"] for e in body["errors"]] == [2, 3]
    assert state(acme) == before


def test_a_too_deeply_nested_source_is_a_located_syntax_error(ci, acme):
    before = state(acme)
    source = "chi.get('/x', function(req) return " + "(" * 300 + "1" + ")" * 300 + " end)\n"
    body = refused(ci.post(SCRIPTS, {"source": source}, format="json"), 400, "invalid")
    assert state(acme) == before
    [error] = body["errors"]
    assert error["line"] == 1
    assert "sandbox:" not in error["message"] and "dispatch:" not in error["message"]


def test_a_source_over_the_size_limit_is_413(ci, acme):
    before = state(acme)
    source = "-- " + "x" * (256 * 1024) + "\n" + GOOD
    body = refused(ci.post(SCRIPTS, {"source": source}, format="json"), 413, "too_large")
    assert "the limit is 262144 bytes" in body["detail"]
    refused(ci.post(SCRIPTS + "validate/", {"source": source}, format="json"), 413, "too_large")
    assert state(acme) == before


def test_a_body_over_djangos_limit_is_413_before_any_parsing(ci, acme):
    before = state(acme)
    payload = json.dumps({"source": "-- " + "y" * 3_000_000})
    refused(ci.post(SCRIPTS, payload, content_type="application/json"), 413, "too_large")
    assert state(acme) == before


def test_a_body_that_is_not_utf8_is_refused(ci, acme):
    before = state(acme)
    payload = (b'{"source": "chi.get(\\"/\\", function(req) return respond(200, '
               b'\\"\xff\xfe\\") end)"}')
    refused(ci.post(SCRIPTS, payload, content_type="application/json"), 400, "parse_error")
    assert state(acme) == before


@pytest.mark.parametrize("source,field_message", [
    ("chi.get('/', function(req) return respond(200, '\ud800') end)", "Surrogate characters"),
    ("chi.get('/', function(req) return respond(200, 'a\x00b') end)", "Null characters"),
    ("\x1bLuaT\x00\x19\x93\r\n\x1a\n\x04\x08\x08", "Null characters"),  # a real chunk
])
def test_sources_that_are_not_text_are_refused(ci, acme, source, field_message):
    before = state(acme)
    payload = json.dumps({"source": source})  # \ud800 stays a JSON escape, as a client sends it
    body = refused(ci.post(SCRIPTS, payload, content_type="application/json"), 400, "invalid")
    assert field_message in json.dumps(body["fields"]["source"])
    assert state(acme) == before


@pytest.mark.parametrize("source", [None, ["chi.get()"], {"lua": "x"}, True])
def test_a_source_of_the_wrong_type_is_400(ci, acme, source):
    before = state(acme)
    body = refused(ci.post(SCRIPTS, {"source": source}, format="json"), 400, "invalid")
    assert "source" in body["fields"]
    assert state(acme) == before


def test_a_config_document_with_a_bad_script_applies_nothing(ci, acme):
    before = state(acme)
    document = ci.get("/api/v1/tenants/acme/config/").json()
    document["tenant"]["name"] = "Renamed by a bad apply"
    document["backends"].append({"name": "extra", "url": "http://127.0.0.1:9099"})
    document["script"] = {"source": BAD["duplicate-mount"][0]}
    body = refused(ci.post("/api/v1/tenants/acme/config/", {"document": document},
                           format="json"), 400, "invalid")
    assert body["errors"][0]["line"] == 2
    acme.refresh_from_db()
    assert acme.name == "Acme" and not acme.backends.filter(name="extra").exists()
    assert state(acme) == before


def test_an_admin_draft_is_kept_but_can_never_become_active(ci, acme, superuser, client):
    """The admin stores an invalid source as a draft for its author; no path activates it."""
    client.force_login(superuser)
    before = state(acme)
    client.post(f"/admin/luascripts/scriptversion/tenant/{acme.pk}/",
                {"source": BAD["syntax-error"][0], "message": "draft"})
    draft = ScriptVersion.objects.filter(tenant=acme, valid=False).get()
    assert draft.errors[0]["line"] == 3
    refused(ci.post(f"{SCRIPTS}{draft.number}/activate/", {}, format="json"), 409, "conflict")
    page = f"/admin/luascripts/scriptversion/tenant/{acme.pk}/v{draft.number}/activate/"
    response = client.post(page)
    assert response.status_code == 302 and response["Location"] == page  # back, with the error
    acme.refresh_from_db()
    assert acme.active_version_id == before["active"]
    assert acme.config_version == before["config_version"]
