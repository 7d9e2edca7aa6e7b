"""Every script in luascripts/examples loads and does what its header comment says."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import Counter

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey

from luascripts.engine import BackendView, ProxyAction, RejectAction, validate
from luascripts.engine.effects import Head, VerifyJwt
from luascripts.engine.script import ScriptRun
from routing.jwt_verify import jwks_keys, verify_effect

from .support import BACKENDS, EXAMPLES, example, load, request


def test_every_example_is_valid() -> None:
    names = sorted(p.name for p in EXAMPLES.glob("*.lua"))
    assert names == ["ab_test.lua", "auth_middleware.lua", "canary.lua", "cors.lua",
                     "fallback.lua", "forward_auth.lua", "json_rpc.lua", "jwt_auth.lua",
                     "legacy_selector.lua", "rate_limit.lua", "version_routing.lua",
                     "webhook_signature.lua"]
    for name in names:
        result = validate(example(name), backend_names=BACKENDS)
        assert result.valid, (name, result.errors)


def test_version_routing() -> None:
    script = load(example("version_routing.lua"), backends=["users-v1", "users-v2"])
    assert script.handle(request("/api/v1/v1/users")).action == ProxyAction(("users-v1",))
    assert script.handle(request("/api/v1/v2/users", "POST")).action == ProxyAction(
        ("users-v2",))
    outcome = script.handle(request("/api/v1/v2/users/42"))
    assert outcome.action == ProxyAction(("users-v2",))
    assert outcome.route_pattern == "/api/v1/{version}/users/{id:[0-9]+}"
    assert dict(outcome.params) == {"version": "v2", "id": "42"}
    assert script.handle(request("/api/v1/v3/users")).action == RejectAction(
        404, "unknown API version v3")
    assert script.handle(request("/api/v1/v1/users/abc")).action.status == 404
    assert script.handle(request("/api/v1/v1/users", "DELETE")).action.allow == ("GET", "POST")


def test_canary_by_percentage() -> None:
    script = load(example("canary.lua"), backends=["stable", "canary"])
    sides = Counter(script.handle(request("/any/path")).action.backends[0] for _ in range(2000))
    assert set(sides) == {"stable", "canary"}
    assert 100 < sides["canary"] < 320  # 10 % of 2000, with a wide margin
    forced = script.handle(request("/x", headers={"x-canary": "always"}))
    assert forced.action == ProxyAction(("canary",), set_headers=(("x-release", "canary"),))
    assert script.handle(request("/x", headers={"x-canary": "never"})).action.backends == (
        "stable",)


def test_ab_test_is_sticky_per_user() -> None:
    script = load(example("ab_test.lua"), backends=["app-a", "app-b"])
    by_cookie = script.handle(request("/", headers={"cookie": "theme=dark; uid=u-42; x=1"}))
    assert by_cookie.action == ProxyAction(("app-a", "app-b"), hash_key="u-42")
    by_header = script.handle(request("/", headers={"x-user-id": "u-7"}))
    assert by_header.action.hash_key == "u-7"
    by_ip = script.handle(request("/", client_ip="198.51.100.4", headers={}))
    assert by_ip.action.hash_key == "198.51.100.4"
    # "uid" must be a whole cookie name, not the end of another one
    other = script.handle(request("/", headers={"cookie": "xuid=no", "x-user-id": "yes"}))
    assert other.action.hash_key == "yes"
    forced = script.handle(request("/", query="variant=b"))
    assert forced.action == ProxyAction(("app-b",), set_headers=(("x-variant", "app-b"),))


def test_auth_middleware_bearer() -> None:
    script = load(example("auth_middleware.lua"), backends=["stable"])
    denied = script.handle(request("/orders"))
    assert denied.action == RejectAction(401, "a valid bearer token is required")
    assert denied.logs == (("warn", "rejected a request without a valid bearer token"),)
    wrong = script.handle(request("/orders", headers={"authorization": "Bearer nope"}))
    assert wrong.action.status == 401
    ok = script.handle(request("/orders", headers={"authorization": "Bearer token-alice",
                                                   "accept": "*/*"}))
    assert ok.action == ProxyAction(("stable",))
    assert ok.request_headers == {"accept": "*/*", "x-caller": "alice"}


def sign(method: str, path: str, stamp: str, secret: bytes = b"change-me") -> str:
    payload = f"{method}\n{path}\n{stamp}".encode()
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(("shift", "secret", "status"), [
    (0, b"change-me", None),
    (-1000, b"change-me", 401),  # stale
    (0, b"wrong", 401),  # bad signature
])
def test_auth_middleware_hmac(shift: int, secret: bytes, status: int | None) -> None:
    script = load(example("auth_middleware.lua"), backends=["stable"])
    stamp = str(int(time.time()) + shift)
    headers = {"x-timestamp": stamp, "x-signature": sign("POST", "/webhooks/pay", stamp, secret)}
    outcome = script.handle(request("/webhooks/pay", "POST", headers=headers))
    if status is None:
        assert outcome.action == ProxyAction(("stable",))
        assert outcome.route_pattern == "/webhooks/*"
    else:
        assert outcome.action.status == status


def test_legacy_selector() -> None:
    script = load(example("legacy_selector.lua"), backends=["legacy", "stable"])
    assert script.is_selector
    backends = (BackendView("legacy", "http://legacy:80", 1, True),
                BackendView("stable", "http://stable:80", 5, True))
    v0 = script.handle(request("/v0/orders/7", backends=backends))
    assert v0.action == ProxyAction(("legacy",), path="/orders/7",
                                    set_headers=(("x-legacy-client", "1"),))
    assert script.handle(request("/orders", backends=backends)).action == ProxyAction(
        ("stable",))
    assert script.handle(request("/blocked/x", backends=backends)).action == RejectAction(
        403, "blocked by policy")
    down = (backends[0], BackendView("stable", "http://stable:80", 5, False))
    assert script.handle(request("/orders", backends=down)).action == RejectAction(
        503, "no healthy backend")


# -- cors.lua and jwt_auth.lua: the standard middleware ---------------------------------------


def test_cors_preflight_and_proxied_answer() -> None:
    script = load(example("cors.lua"), backends=["api"])
    ok = script.handle(request("/things", "OPTIONS", headers={
        "origin": "https://app.example.com", "access-control-request-method": "PUT",
        "access-control-request-headers": "content-type"}))
    headers = dict(ok.action.headers)
    assert ok.action.status == 204
    assert headers["access-control-allow-origin"] == "https://app.example.com"
    assert headers["access-control-allow-credentials"] == "true"
    assert headers["access-control-max-age"] == "600"
    denied = script.handle(request("/things", "OPTIONS", headers={
        "origin": "https://evil.example", "access-control-request-method": "PUT"}))
    assert denied.action.status == 204
    assert "access-control-allow-origin" not in dict(denied.action.headers)
    run = script.start(request("/things", headers={"origin": "https://shop.example.org"}))
    assert isinstance(run, ScriptRun)
    out = run.resume(Head(200, (("content-type", "application/json"),), "api"))
    assert dict(out.patch.headers)["access-control-allow-origin"] == "https://shop.example.org"
    assert dict(out.patch.headers)["access-control-expose-headers"] == "x-request-id"


def _idp_token(key, **claims) -> str:
    body = {"sub": "alice", "iss": "https://idp.example.com", "aud": "orders-api",
            "exp": time.time() + 300, **claims}
    return jwt.encode({"alg": "ES256", "kid": "idp-1"}, body, key, algorithms=["ES256"])


def test_jwt_auth_verifies_with_the_idp_keys() -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "idp-1"})
    jwks = jwks_keys({"keys": [key.as_dict(private=False)]})
    script = load(example("jwt_auth.lua"), backends=["idp", "app"])

    def through(path: str, headers: dict[str, str], method: str = "GET"):
        step = script.start(request(path, method, headers=headers))
        while isinstance(step, ScriptRun):  # the real verifier answers
            effect = step.effect
            assert isinstance(effect, VerifyJwt)
            step = step.resume(verify_effect(effect, jwks if effect.jwks_backend else None))
        return step

    ok = through("/api/orders", {"authorization": f"Bearer {_idp_token(key)}"})
    assert ok.action == ProxyAction(("app",))
    assert ok.request_headers == {"x-user": "alice"}  # the token stripped
    missing = through("/api/orders", {})
    assert missing.action.status == 401 and missing.patch.headers == (
        ("www-authenticate", "Bearer"),)
    wrong_aud = through("/api/orders",
                        {"authorization": f"Bearer {_idp_token(key, aud='other')}"})
    assert dict(wrong_aud.patch.headers)["www-authenticate"] == \
        'Bearer error="invalid_token", error_description="bad_audience"'
    assert through("/public/x", {}).action == ProxyAction(("app",))
    public = through("/public/x", {"authorization": f"Bearer {_idp_token(key)}"})
    assert public.request_headers["x-user"] == "alice"
    hook_key = OctKey.import_key(b"webhook-shared-secret-change-me")
    hook = jwt.encode({"alg": "HS256"}, {"sender": "billing"}, hook_key)
    sent = through("/webhooks/paid", {"x-hook-token": hook}, "POST")
    assert sent.request_headers["x-hook-sender"] == "billing"
    refused = through("/webhooks/paid", {"x-hook-token": _idp_token(key)}, "POST")
    assert refused.action == RejectAction(403, "webhook token refused (algorithm_not_allowed)")
def _with_store(script, req, store):
    """Run `req` to its Outcome, answering shared.* and limit.allow from `store`."""
    from luascripts.engine.effects import LimitCheck
    from luascripts.engine.script import ScriptRun
    from routing.stubs import run_sync

    step = script.start(req)
    while isinstance(step, ScriptRun):
        ask = store.limit if isinstance(step.effect, LimitCheck) else store.shared
        step = step.resume(run_sync(ask("acme", step.effect)))
    return step


def test_rate_limit() -> None:
    from luascripts.engine.effects import SharedOp
    from routing.shared_state import LocalStore
    from routing.stubs import run_sync

    script = load(example("rate_limit.lua"), backends=["api"])
    store = LocalStore()
    logins = [_with_store(script, request("/login", "POST", headers={"x-api-key": "k1"}),
                          store) for _ in range(6)]
    assert [type(o.action).__name__ for o in logins] == ["ProxyAction"] * 5 + ["RejectAction"]
    assert logins[-1].action.status == 429
    assert dict(logins[-1].patch.headers)["retry-after"] == "60"
    # another key has its own login limit; the address-wide limit counted all six
    other = _with_store(script, request("/login", "POST", headers={"x-api-key": "k2"}), store)
    assert dict(other.patch.headers)["ratelimit-remaining"] == "4"
    report = _with_store(script, request("/reports/7", headers={"x-user": "ann"}), store)
    assert report.action.set_headers == (("x-quota-remaining", "999"),)
    assert dict(report.patch.headers)["ratelimit-remaining"] == "92"
    day = int(time.time() // 86400)
    assert run_sync(store.shared("acme", SharedOp("get", f"reports-served:{day}"))).value == 1
