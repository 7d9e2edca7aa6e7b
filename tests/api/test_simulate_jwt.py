"""The dry run of jwt.verify (routing.stubs): the script's own keys verify for real; a JWKS
comes from the `calls` stub of its backend, else the call answers "keys_unavailable"."""

from __future__ import annotations

import json
import time

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

pytestmark = pytest.mark.django_db
URL = "/api/v1/tenants/acme/simulate/"
SECRET = OctKey.import_key(b"simulate-secret-simulate-secret!")
IDP = RSAKey.generate_key(2048, parameters={"kid": "idp-1"})
SOURCE = "local HS = '" + json.dumps(SECRET.as_dict(private=True)) + """'
chi.with(middleware.jwt{keys = {HS}, algorithms = {"HS256"}}).get("/hs", function(req)
  return respond(200, "hello " .. req.claims.sub)
end)
chi.with(middleware.jwt{jwks = {backend = "users-v1", path = "/jwks"}}).get("/idp",
  function(req) return respond(200, "idp " .. req.claims.sub) end)
"""


def bearer(key, alg: str, **header) -> dict[str, str]:
    token = jwt.encode({"alg": alg, **header}, {"sub": "alice", "exp": time.time() + 60}, key)
    return {"Authorization": f"Bearer {token}"}


def simulate(api, path: str, headers: dict[str, str], **extra) -> dict:
    response = api.post(URL, {"path": path, "headers": headers, "source": SOURCE, **extra},
                        format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_inline_keys_verify_in_the_dry_run(acme, api):
    ok = simulate(api, "/hs", bearer(SECRET, "HS256"))
    assert ok["action"]["status"] == 200 and ok["action"]["body"] == "hello alice"
    assert ok["middleware"] == ["middleware.jwt"]
    other = OctKey.import_key(b"another-secret-another-secret-!!")
    refused = simulate(api, "/hs", bearer(other, "HS256"))
    assert refused["action"]["status"] == 401
    headers = dict(refused["response"]["headers"])
    assert headers["www-authenticate"] == \
        'Bearer error="invalid_token", error_description="bad_signature"'


def test_a_jwks_comes_from_the_calls_stub_of_its_backend(acme, api):
    jwks = json.dumps({"keys": [IDP.as_dict(private=False)]})
    ok = simulate(api, "/idp", bearer(IDP, "RS256", kid="idp-1"),
                  calls={"users-v1": {"status": 200, "body": jwks}})
    assert ok["action"]["body"] == "idp alice"
    assert ok["calls"][0]["backend"] == "users-v1" and ok["calls"][0]["path"] == "/jwks"
    unstubbed = simulate(api, "/idp", bearer(IDP, "RS256", kid="idp-1"))
    assert unstubbed["action"]["status"] == 401
    assert 'error_description="keys_unavailable"' in \
        dict(unstubbed["response"]["headers"])["www-authenticate"]
    assert unstubbed["calls"][0]["error"] == "no_stub"
