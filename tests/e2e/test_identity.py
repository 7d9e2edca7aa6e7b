"""middleware.jwt and middleware.cors through the real server and real backends.

JWT: a token verified with a key written in the script (HS256) and with the keys of a JWKS
that a farm backend serves (the identity provider): claims forwarded, 401s with their
WWW-Authenticate challenge, the token stripped upstream, key rotation picked up by one
refresh, cached keys kept while the JWKS backend is down. CORS: the shipped example
(luascripts/examples/cors.lua) answering preflights and decorating every answer.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from tests.e2e.identity_scenario import HS_KEY, IDP_KEYS, ISSUER, JWKS_PATH, publish

pytestmark = pytest.mark.e2e


def hs_token(**claims) -> str:
    body = {"sub": "alice", "iss": ISSUER, "aud": "api", "exp": int(time.time()) + 300,
            **claims}
    return jwt.encode({"alg": "HS256"}, body, HS_KEY)


def idp_token(kid: str, alg: str = "RS256", key=None, **claims) -> str:
    body = {"sub": f"user-{kid}", "iss": ISSUER, "exp": int(time.time()) + 300, **claims}
    return jwt.encode({"alg": alg, "kid": kid}, body, key or IDP_KEYS[kid])


def seen_headers(response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.json()["headers"]}


def challenge(response) -> str:
    return response.headers["www-authenticate"]


# -- middleware.jwt -----------------------------------------------------------------------------


def test_a_valid_token_passes_with_its_claims_and_is_stripped(client):
    response = client.get("/hs/orders", headers={"Host": "jwt.test",
                                                 "Authorization": f"Bearer {hs_token()}"})
    assert response.status_code == 200, response.text
    assert response.json()["backend"] == "jwt-api"
    upstream = seen_headers(response)
    assert upstream["x-sub"] == "alice"  # set by the script from req.claims.sub
    assert "authorization" not in upstream  # strip = true


def test_without_a_token_401_with_a_bare_bearer_challenge(client):
    response = client.get("/hs/orders", headers={"Host": "jwt.test"})
    assert response.status_code == 401
    assert challenge(response) == "Bearer"
    body = response.json()
    assert body["error"] == "rejected"
    assert body["detail"] == "a bearer token is required"
    assert response.headers["content-type"] == "application/json"


def unsigned(claims: dict) -> str:
    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


@pytest.mark.parametrize(("token", "reason"), [
    (lambda: hs_token(exp=int(time.time()) - 60), "expired"),
    (lambda: hs_token(nbf=int(time.time()) + 600), "not_yet_valid"),
    (lambda: hs_token(iss="https://evil.test"), "bad_issuer"),
    (lambda: hs_token(aud="other"), "bad_audience"),
    (lambda: jwt.encode({"alg": "HS256"}, {"sub": "x", "iss": ISSUER, "aud": "api"},
                        OctKey.import_key(b"another-secret-another-secret-xx")),
     "bad_signature"),
    (lambda: unsigned({"sub": "root", "iss": ISSUER, "aud": "api"}), "algorithm_not_allowed"),
    (lambda: "not-a-jwt", "malformed"),
])
def test_an_invalid_token_is_401_with_its_reason(client, token, reason):
    response = client.get("/hs/orders", headers={"Host": "jwt.test",
                                                 "Authorization": f"Bearer {token()}"})
    assert response.status_code == 401
    assert challenge(response) == \
        f'Bearer error="invalid_token", error_description="{reason}"'
    assert "e2e-shared-secret" not in response.text


def test_hs256_signed_with_the_idps_public_key_is_refused(client):
    # Algorithm confusion through the server: an HS256 token whose "secret" is the IdP's
    # RSA public key (PEM), presented to the JWKS route that trusts RS256 and ES256 keys.
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    public = IDP_KEYS["rsa-1"].as_pem(private=False)
    signing_input = (f"{b64(json.dumps({'alg': 'HS256', 'kid': 'rsa-1'}).encode())}."
                     f"{b64(json.dumps({'sub': 'root', 'iss': ISSUER}).encode())}")
    mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{b64(mac)}"
    # Where the route lists RS256 and ES256 only, the algorithm itself is refused...
    response = client.get("/idp/x", headers={"Host": "jwt.test",
                                              "Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert 'error_description="algorithm_not_allowed"' in challenge(response)
    # ...and where every algorithm is allowed, no RSA key is ever used as an HMAC secret.
    response = client.get("/any/x", headers={"Host": "jwt.test",
                                             "Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert 'error_description="unknown_key"' in challenge(response)
    genuine = client.get("/any/x", headers={"Host": "jwt.test",
                                            "Authorization": f"Bearer {idp_token('rsa-1')}"})
    assert genuine.status_code == 200


def test_tokens_from_the_jwks_backend_verify_rsa_and_ec(client):
    for kid, alg in (("rsa-1", "RS256"), ("ec-1", "ES256")):
        response = client.get("/idp/me", headers={
            "Host": "jwt.test", "Authorization": f"Bearer {idp_token(kid, alg)}"})
        assert response.status_code == 200, response.text
        assert seen_headers(response)["x-sub"] == f"user-{kid}"
        assert "authorization" in seen_headers(response)  # strip is off on this route


def jwks_hits(farm) -> int:
    return sum(1 for s in farm.backends["jwt-idp"].seen if s.target == JWKS_PATH)


def get_idp(client, token):
    return client.get("/idp/me", headers={"Host": "jwt.test",
                                          "Authorization": f"Bearer {token}"})


def test_key_rotation_and_a_jwks_backend_that_goes_down(client, farm):
    assert get_idp(client, idp_token("rsa-1")).status_code == 200  # keys cached
    # The IdP rotates: rsa-2 is published. A token signed with it is accepted after one
    # refresh (the gateway allows one per second in this suite, CHISTONE_JWKS_MIN_REFRESH_S).
    publish(farm, "rsa-1", "rsa-2", "ec-1")
    time.sleep(1.1)
    before = jwks_hits(farm)
    response = get_idp(client, idp_token("rsa-2"))
    assert response.status_code == 200, response.text
    assert seen_headers(response)["x-sub"] == "user-rsa-2"
    assert jwks_hits(farm) == before + 1
    for _ in range(5):  # known now: no more fetches
        assert get_idp(client, idp_token("rsa-2")).status_code == 200
    assert jwks_hits(farm) == before + 1

    # The JWKS backend goes down: the cached keys keep working.
    idp = farm.backends["jwt-idp"]
    idp.fail_status = 503
    farm.stop("jwt-idp")
    try:
        time.sleep(1.1)
        down_from = jwks_hits(farm)
        started = time.monotonic()
        for kid in ("rsa-1", "rsa-2", "ec-1"):
            assert get_idp(client, idp_token(kid, "ES256" if kid == "ec-1" else "RS256")
                           ).status_code == 200
        # A key nobody has published: refused, and the refetches it triggers are rate-limited.
        stranger = RSAKey.generate_key(2048, parameters={"kid": "rsa-x"})
        for _ in range(10):
            response = get_idp(client, idp_token("rsa-x", key=stranger))
            assert response.status_code == 401
            assert 'error_description="unknown_key"' in challenge(response)
        elapsed = time.monotonic() - started
        assert jwks_hits(farm) - down_from <= 1 + int(elapsed)
    finally:
        idp.fail_status = None
        farm.restart("jwt-idp")
    # Back up, with rsa-3 published: picked up again.
    publish(farm, "rsa-1", "rsa-2", "rsa-3", "ec-1")
    time.sleep(1.1)
    assert get_idp(client, idp_token("rsa-3")).status_code == 200


def test_a_route_without_the_middleware_is_open(client):
    response = client.get("/open", headers={"Host": "jwt.test"})
    assert response.status_code == 200


# -- middleware.cors (luascripts/examples/cors.lua) -------------------------------------------


def test_cors_preflight_allowed_and_refused(client, farm):
    api = farm.backends["cors-api"]
    before = len(api.seen)
    ok = client.options("/things", headers={
        "Host": "cors.test", "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "Content-Type, Authorization"})
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "PUT" in ok.headers["access-control-allow-methods"]
    assert ok.headers["access-control-allow-headers"] == "content-type, authorization"
    assert ok.headers["access-control-allow-credentials"] == "true"
    assert ok.headers["access-control-max-age"] == "600"
    assert "Origin" in ok.headers["vary"]
    for origin, method, extra in (("https://evil.example", "PUT", None),
                                  ("https://app.example.com", "TRACE", None),
                                  ("https://app.example.com", "GET", "x-secret")):
        headers = {"Host": "cors.test", "Origin": origin,
                   "Access-Control-Request-Method": method}
        if extra:
            headers["Access-Control-Request-Headers"] = extra
        refused = client.options("/things", headers=headers)
        assert refused.status_code == 204
        assert not [h for h in refused.headers if h.startswith("access-control-")]
    assert len(api.seen) == before  # preflights never reach the backend


def test_cors_simple_request_with_credentials(client):
    response = client.get("/things?x=1", headers={"Host": "cors.test",
                                                   "Origin": "https://shop.example.org"})
    assert response.status_code == 200
    assert response.json()["backend"] == "cors-api"  # the backend's own body, streamed
    assert response.headers["access-control-allow-origin"] == "https://shop.example.org"
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-expose-headers"] == "x-request-id"
    assert response.headers["vary"] == "Origin"
    assert response.headers["content-type"] == "application/json"


def test_cors_disallowed_origin_goes_through_without_cors_headers(client):
    response = client.get("/things", headers={"Host": "cors.test",
                                              "Origin": "https://evil.example"})
    assert response.status_code == 200 and response.json()["backend"] == "cors-api"
    assert not [h for h in response.headers if h.startswith("access-control-")]
    assert response.headers["vary"] == "Origin"


def test_cors_without_origin_is_untouched(client):
    response = client.get("/things", headers={"Host": "cors.test"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_cors_headers_ride_on_a_large_streamed_answer(client):
    response = client.get("/big?n=3000000", headers={"Host": "cors.test",
                                                      "Origin": "https://app.example.com"})
    assert response.status_code == 200 and len(response.content) == 3_000_000
    assert response.headers["access-control-allow-origin"] == "https://app.example.com"


def test_cors_headers_on_the_gateways_own_error(client):
    response = client.get("/things", headers={"Host": "cors-down.test",
                                              "Origin": "https://app.example.com"})
    assert response.status_code == 502
    assert response.headers["access-control-allow-origin"] == "https://app.example.com"
    assert response.json()["error"]  # the gateway's JSON error, decorated
