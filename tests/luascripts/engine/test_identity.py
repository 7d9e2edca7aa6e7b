"""jwt.verify, middleware.jwt and middleware.cors in the engine: option checks at the
script's line, the effect a verification waits for, and what each answer does.

The engine alone, driven by hand (the host's verifier is tested in
tests/routing/test_jwt_verify.py, the whole path in tests/e2e/test_identity.py)."""

from __future__ import annotations

import pytest

from luascripts.engine import ProxyAction, RejectAction, RespondAction
from luascripts.engine.effects import (
    Head,
    JwtAnswer,
    OpenUpstream,
    Render,
    RenderAnswer,
    VerifyJwt,
)
from luascripts.engine.errors import ScriptLoadError, ScriptRuntimeError
from luascripts.engine.script import ScriptRun
from luascripts.engine.types import ExchangeAction, Outcome

from .support import load, request

HS = '{"kty":"oct","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}'


def started(script, path="/", method="GET", **kw) -> ScriptRun:
    run = script.start(request(path, method, **kw))
    assert isinstance(run, ScriptRun), run
    return run


def load_error(source: str) -> str:
    with pytest.raises(ScriptLoadError) as caught:
        load(source)
    return str(caught.value)


# -- jwt.verify ----------------------------------------------------------------------------

VERIFY = f"""
local OPTS = {{keys = {{'{HS}'}}, algorithms = {{"HS256"}}, issuer = "https://idp.test",
  audience = {{"api", "web"}}, leeway_s = 5}}
chi.get("/v", function(req)
  local claims, reason = jwt.verify(req.headers["x-token"], OPTS)
  if not claims then return respond(401, reason) end
  return respond(200, claims.sub .. " " .. tostring(claims.admin) .. " " .. #claims.roles)
end)
"""


def test_verify_waits_for_the_host_with_the_declared_options() -> None:
    run = started(load(VERIFY), "/v", headers={"x-token": "a.b.c"})
    assert run.effect == VerifyJwt(
        token="a.b.c", keys=(HS,), jwks_backend=None, jwks_path=None,
        algorithms=("HS256",), issuer="https://idp.test", audience=("api", "web"),
        leeway_s=5.0)


def test_verify_returns_the_claims_as_a_table() -> None:
    run = started(load(VERIFY), "/v", headers={"x-token": "a.b.c"})
    done = run.resume(JwtAnswer('{"sub":"alice","admin":true,"roles":["a","b"]}'))
    assert done.action == RespondAction(200, b"alice true 2")


def test_verify_returns_nil_and_the_reason() -> None:
    run = started(load(VERIFY), "/v", headers={"x-token": "a.b.c"})
    assert run.resume(JwtAnswer(error="expired")).action == RespondAction(401, b"expired")


def test_a_missing_or_oversized_token_is_malformed_without_asking_the_host() -> None:
    script = load(VERIFY)
    assert script.handle(request("/v")).action == RespondAction(401, b"malformed")
    huge = script.handle(request("/v", headers={"x-token": "x" * 17000}))
    assert huge.action == RespondAction(401, b"malformed")


def test_a_jwks_names_a_backend_and_a_path() -> None:
    script = load('chi.get("/", function(req) '
                  'local c, r = jwt.verify("t.t.t", {jwks = {backend = "auth"}}) '
                  'return respond(200, r) end)')
    run = started(script)
    assert run.effect.jwks_backend == "auth"
    assert run.effect.jwks_path == "/.well-known/jwks.json"
    assert "none" not in run.effect.algorithms and "RS256" in run.effect.algorithms
    assert run.resume(JwtAnswer(error="keys_unavailable")).action.body == b"keys_unavailable"


def test_an_unusable_inline_key_is_a_script_error_at_the_call() -> None:
    script = load('chi.get("/", function(req)\n'
                  '  local c = jwt.verify("t.t.t", {keys = {"not a key"}})\n'
                  '  return respond(200, "x")\nend)')
    with pytest.raises(ScriptRuntimeError, match=r"keys\[1\] is not a usable key") as caught:
        started(script).resume(JwtAnswer(error="invalid_key:1"))
    assert caught.value.diagnostics[0].line == 2
    assert "not a key" not in str(caught.value)


@pytest.mark.parametrize(("opts", "message"), [
    ("nil", "options must be a table"),
    ("{}", "give the keys to verify with"),
    ('{keys = {"k"}, algorithms = {"none"}}', '"none" (unsigned tokens) is never accepted'),
    ('{keys = {"k"}, algorithms = {"NONE"}}', "never accepted"),
    ('{keys = {"k"}, algorithms = {"HS1"}}', "unknown algorithm 'HS1'"),
    ('{keys = {"k"}, algorithms = {}}', "algorithms must not be empty"),
    ('{keys = {}}', "keys must not be empty"),
    ('{keys = {1}}', "keys[1] must be a non-empty string"),
    ('{keys = {"k"}, audience = 3}', "audience must be a list of strings"),
    ('{keys = {"k"}, issuer = {}}', "issuer must be a string"),
    ('{keys = {"k"}, leeway_s = -1}', "leeway_s must be a number"),
    ('{keys = {"k"}, kid = "x"}', "unknown option 'kid'"),
    ('{jwks = "https://idp.example/jwks"}', "jwks must be a table"),
    ('{jwks = {backend = "elsewhere"}}', "unknown backend 'elsewhere'"),
    ('{jwks = {backend = "auth", url = "http://x"}}', "jwks has no option 'url'"),
    ('{jwks = {backend = "auth", path = "jwks"}}', "jwks.path: path must start with"),
])
def test_verify_options_are_checked_at_the_call(opts: str, message: str) -> None:
    script = load('chi.get("/", function(req)\n'
                  f'  return respond(200, tostring(jwt.verify("t.t.t", {opts})))\nend)')
    with pytest.raises(ScriptRuntimeError) as caught:
        script.handle(request("/"))
    assert message in str(caught.value)
    assert caught.value.diagnostics[0].line == 2


def test_verify_cannot_run_at_registration() -> None:
    assert "only be used while handling a request" in load_error(
        f"jwt.verify('a.b.c', {{keys = {{'{HS}'}}}})")


def test_jwt_is_read_only() -> None:
    assert "read-only" in load_error("jwt.verify = function() return {} end")


# -- middleware.jwt --------------------------------------------------------------------------

MW = f"""
local auth = middleware.jwt{{keys = {{'{HS}'}}, algorithms = {{"HS256"}}, strip = true}}
chi.with(auth).get("/me", function(req)
  req.headers["x-user"] = req.claims.sub
  return proxy("api")
end)
chi.group(function(r)
  r.use(middleware.jwt{{keys = {{'{HS}'}}, header = "x-token", optional = true}})
  r.get("/maybe", function(req)
    return respond(200, req.claims and req.claims.sub or "anonymous")
  end)
end)
"""


def test_a_valid_token_puts_the_claims_on_req_and_can_be_stripped() -> None:
    script = load(MW)
    run = started(script, "/me", headers={"authorization": "Bearer aaa.bbb.ccc",
                                          "accept": "*/*"})
    assert run.effect.token == "aaa.bbb.ccc"
    done = run.resume(JwtAnswer('{"sub":"alice"}'))
    assert done.action == ProxyAction(("api",))
    assert done.request_headers == {"accept": "*/*", "x-user": "alice"}  # token stripped
    assert done.middleware == ("middleware.jwt",)


def test_the_scheme_is_case_insensitive() -> None:
    run = started(load(MW), "/me", headers={"authorization": "bearer   t.t.t"})
    assert run.effect.token == "t.t.t"


def test_no_token_is_401_with_a_bare_bearer_challenge() -> None:
    out = load(MW).handle(request("/me"))
    assert out.action == RejectAction(401, "a bearer token is required")
    assert out.patch.headers == (("www-authenticate", "Bearer"),)


@pytest.mark.parametrize("value", ["Basic dXNlcjpwdw==", "Bearer", "Bearer a b", "t.t.t"])
def test_a_header_that_is_not_a_bearer_token_is_malformed(value: str) -> None:
    out = load(MW).handle(request("/me", headers={"authorization": value}))
    assert out.action.status == 401
    assert out.patch.headers == ((
        "www-authenticate", 'Bearer error="invalid_token", error_description="malformed"'),)


def test_an_invalid_token_is_401_with_the_reason_in_the_challenge() -> None:
    run = started(load(MW), "/me", headers={"authorization": "Bearer t.t.t"})
    out = run.resume(JwtAnswer(error="bad_signature"))
    assert out.action == RejectAction(401, "the bearer token is not valid: bad_signature")
    assert out.patch.headers == ((
        "www-authenticate",
        'Bearer error="invalid_token", error_description="bad_signature"'),)


def test_optional_lets_a_request_without_a_token_through_but_not_a_bad_one() -> None:
    script = load(MW)
    assert script.handle(request("/maybe")).action.body == b"anonymous"
    run = started(script, "/maybe", headers={"x-token": "t.t.t"})  # a bare token is fine here
    assert run.resume(JwtAnswer('{"sub":"bob"}')).action.body == b"bob"
    run = started(script, "/maybe", headers={"x-token": "t.t.t"})
    assert run.resume(JwtAnswer(error="expired")).action.status == 401


@pytest.mark.parametrize(("opts", "message"), [
    ("{}", "give the keys to verify with"),
    (f"{{keys = {{'{HS}'}}, strip = 1}}", "strip must be true or false"),
    (f"{{keys = {{'{HS}'}}, header = 'bad header'}}", "is not a valid HTTP token"),
    (f"{{keys = {{'{HS}'}}, algorithms = {{'none'}}}}", "never accepted"),
    (f"{{keys = {{'{HS}'}}, realm = 'x'}}", "unknown option 'realm'"),
])
def test_middleware_jwt_options_are_checked_at_construction(opts: str, message: str) -> None:
    error = load_error(f"\nchi.use(middleware.jwt{opts})")
    assert message in error and "line 2" in error


def test_an_outer_middleware_sees_the_401_as_a_response() -> None:
    script = load(f"""
    chi.use(function(req, next)
      local res = next(req)
      res.headers["x-status"] = tostring(res.status)
      return res
    end)
    chi.use(middleware.jwt{{keys = {{'{HS}'}}}})
    chi.get("/", function(req) return respond(200, "in") end)
    """)
    out = script.handle(request("/"))
    assert out.action.status == 401
    assert dict(out.patch.headers) == {"www-authenticate": "Bearer", "x-status": "401"}


# -- middleware.cors -------------------------------------------------------------------------

CORS = """
chi.use(middleware.cors{
  origins = {"https://app.example.com", "*.example.org", "http://*.local.test:3000"},
  methods = {"GET", "POST", "delete"}, headers = {"Authorization", "X-Trace"},
  expose = {"X-Request-Id"}, credentials = true, max_age = 600,
})
chi.handle("*", "/api/*", function(req) return proxy("api") end)
chi.get("/direct", function(req) return respond(200, "d", {vary = "Accept"}) end)
chi.get("/denied", function(req) return reject(403, "no") end)
"""


def preflight(script, origin, method="POST", headers=None) -> Outcome:
    h = {"origin": origin, "access-control-request-method": method}
    if headers:
        h["access-control-request-headers"] = headers
    out = script.handle(request("/api/x", "OPTIONS", headers=h))
    assert isinstance(out.action, RespondAction) and out.action.status == 204
    return out


def test_an_allowed_preflight_gets_the_allow_headers() -> None:
    out = preflight(load(CORS), "https://app.example.com", "DELETE", "authorization, x-trace")
    assert dict(out.action.headers) == {
        "access-control-allow-origin": "https://app.example.com",
        "access-control-allow-methods": "GET, POST, DELETE",
        "access-control-allow-headers": "authorization, x-trace",
        "access-control-allow-credentials": "true",
        "access-control-max-age": "600",
        "vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
    }


@pytest.mark.parametrize(("origin", "method", "headers"), [
    ("https://evil.example", "POST", None),  # origin
    ("https://app.example.com", "PUT", None),  # method
    ("https://app.example.com", "POST", "x-other"),  # header
    ("https://example.org", "POST", None),  # the wildcard needs a subdomain
    ("http://a.example.org", "POST", None),  # https only unless written
    ("https://a.example.org.evil.test", "POST", None),
    ("https://aexample.org", "POST", None),
    ("http://a.local.test", "POST", None),  # the port is part of the origin
    ("null", "POST", None),
])
def test_a_refused_preflight_is_204_without_allow_headers(origin, method, headers) -> None:
    out = preflight(load(CORS), origin, method, headers)
    assert dict(out.action.headers) == {
        "vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"}


@pytest.mark.parametrize("origin", ["https://a.example.org", "https://x.y.example.org",
                                    "http://dev.local.test:3000", "HTTPS://APP.example.com"])
def test_wildcard_and_exact_origins(origin: str) -> None:
    out = preflight(load(CORS), origin)
    assert dict(out.action.headers)["access-control-allow-origin"] == origin


def test_a_proxied_answer_gets_the_headers_and_keeps_its_vary() -> None:
    run = started(load(CORS), "/api/x", headers={"origin": "https://app.example.com"})
    assert isinstance(run.effect, OpenUpstream)  # reading the backend's Vary
    out = run.resume(Head(200, (("vary", "Accept-Encoding"),), "api"))
    assert out.action == ExchangeAction(1)
    assert dict(out.patch.headers) == {
        "vary": "Accept-Encoding, Origin",
        "access-control-allow-origin": "https://app.example.com",
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "x-request-id",
    }


def test_a_disallowed_origin_goes_through_with_no_cors_headers() -> None:
    run = started(load(CORS), "/api/x", headers={"origin": "https://evil.example"})
    out = run.resume(Head(200, (("access-control-allow-origin", "*"),), "api"))
    assert out.action == ExchangeAction(1)  # the request itself went through
    changes = dict(out.patch.headers)
    assert changes["vary"] == "Origin"
    # what the backend said is removed: the gateway's policy holds
    assert changes["access-control-allow-origin"] is None
    assert "access-control-allow-credentials" in changes and \
        changes["access-control-allow-credentials"] is None


def test_a_request_without_origin_is_untouched_and_does_not_wait() -> None:
    out = load(CORS).handle(request("/api/x"))
    assert out.action == ProxyAction(("api",)) and out.patch is None


def test_respond_and_the_gateways_own_answers_get_the_headers_too() -> None:
    script = load(CORS)
    direct = script.handle(request("/direct", headers={"origin": "https://app.example.com"}))
    assert dict(direct.patch.headers)["vary"] == "Accept, Origin"
    run = started(script, "/denied", headers={"origin": "https://app.example.com"})
    assert isinstance(run.effect, Render)
    out = run.resume(_render(403))
    assert out.action == RejectAction(403, "no")
    assert dict(out.patch.headers)["access-control-allow-origin"] == "https://app.example.com"
    run = started(script, "/missing", headers={"origin": "https://app.example.com"})
    out = run.resume(_render(404))
    assert out.action.status == 404
    assert dict(out.patch.headers)["access-control-allow-origin"] == "https://app.example.com"


def _render(status: int) -> RenderAnswer:
    return RenderAnswer(status, (("content-type", "application/json"),), b"{}")


def test_any_origin_without_credentials_is_the_literal_star_and_never_waits() -> None:
    script = load('chi.use(middleware.cors{origins = {"*"}})\n'
                  'chi.get("/", function(req) return proxy("api") end)')
    out = script.handle(request("/", headers={"origin": "https://whoever.test"}))
    assert out.action == ProxyAction(("api",))
    assert dict(out.patch.headers) == {"access-control-allow-origin": "*"}
    pre = script.handle(request("/", "OPTIONS", headers={
        "origin": "https://whoever.test", "access-control-request-method": "GET"}))
    assert dict(pre.action.headers)["access-control-allow-origin"] == "*"


def test_an_options_request_that_is_not_a_preflight_goes_to_the_route() -> None:
    script = load('chi.use(middleware.cors{origins = {"https://a.test"}})\n'
                  'chi.options("/", function(req) return respond(200, "mine") end)')
    assert script.handle(request("/", "OPTIONS")).action.body == b"mine"


@pytest.mark.parametrize(("opts", "message"), [
    ('{origins = {"*"}, credentials = true}', 'cannot be combined with credentials = true'),
    ("{}", "origins is required"),
    ('{origins = {"app.example.com"}}', "is not an origin"),
    ('{origins = {"https://app.example.com/path"}}', "is not an origin"),
    ('{origins = {"*.com"}}', "a wildcard must be the first label"),
    ('{origins = {"https://a.*.example.com"}}', "a wildcard must be the first label"),
    ('{origins = {"https://a.test"}, methods = {"GET POST"}}', "is not an HTTP method"),
    ('{origins = {"https://a.test"}, headers = {"bad header"}}', "is not a valid HTTP token"),
    ('{origins = {"https://a.test"}, max_age = -1}', "max_age must be an integer"),
    ('{origins = {"https://a.test"}, credentials = "yes"}', "credentials must be true"),
    ('{origins = {"https://a.test"}, allow = {}}', "unknown option 'allow'"),
])
def test_middleware_cors_options_are_checked_at_construction(opts: str, message: str) -> None:
    error = load_error(f"\n\nchi.use(middleware.cors{opts})")
    assert message in error and "line 3" in error


def test_middleware_is_read_only() -> None:
    assert "read-only" in load_error("middleware.jwt = nil")


def test_verify_waits_inside_pcall_and_a_coroutine_too() -> None:
    script = load(f"""
    local OPTS = {{keys = {{'{HS}'}}}}
    chi.get("/p", function(req)
      local ok, claims = pcall(jwt.verify, "t.t.t", OPTS)
      return respond(200, tostring(ok) .. " " .. claims.sub)
    end)
    chi.get("/c", function(req)
      local co = coroutine.wrap(function() return jwt.verify("t.t.t", OPTS) end)
      return respond(200, co().sub)
    end)
    chi.get("/sort", function(req)
      local t = {{2, 1}}
      table.sort(t, function(a, b) jwt.verify("t.t.t", OPTS) return a < b end)
      return respond(200, "sorted")
    end)
    """)
    for path, body in (("/p", b"true alice"), ("/c", b"alice")):
        run = started(script, path)
        assert isinstance(run.effect, VerifyJwt)
        assert run.resume(JwtAnswer('{"sub":"alice"}')).action.body == body
    with pytest.raises(ScriptRuntimeError, match="cannot wait for the gateway here"):
        script.handle(request("/sort"))


@pytest.mark.parametrize("key", ["not a key", '{"kty":"RSA"}', '{"keys": []}',
                                 "-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----"])
def test_middleware_jwt_checks_its_keys_when_the_script_registers(key: str) -> None:
    error = load_error(f"local K = '{key}'\n\nchi.use(middleware.jwt{{keys = {{'{HS}', K}}}})")
    assert "line 3" in error and "keys[2] is not a usable key" in error
    assert "AAAA" not in error and "not a key" not in error
