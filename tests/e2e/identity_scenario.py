"""The tenants of the identity tests (tests/e2e/test_identity.py): JWT and CORS.

The identity provider is a farm backend ("jwt-idp") whose JWKS the tests change while the
gateway runs; its signing keys live here, in the test process only. The HS256 secret is
written in the script, as an operator would.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

from joserfc.jwk import ECKey, OctKey, RSAKey

from tests.e2e.backends import BackendFarm

HS_SECRET = b"e2e-shared-secret-of-32-bytes!!!"
HS_KEY = OctKey.import_key(HS_SECRET)
HS_JWK = json.dumps({"kty": "oct",
                     "k": base64.urlsafe_b64encode(HS_SECRET).rstrip(b"=").decode()})
ISSUER = "https://idp.test"
JWKS_PATH = "/.well-known/jwks.json"

# kid -> private key; the tests publish the public halves they choose.
IDP_KEYS = {
    "rsa-1": RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}),
    "rsa-2": RSAKey.generate_key(2048, parameters={"kid": "rsa-2"}),
    "rsa-3": RSAKey.generate_key(2048, parameters={"kid": "rsa-3"}),
    "ec-1": ECKey.generate_key("P-256", parameters={"kid": "ec-1"}),
}

JWT_SCRIPT = f"""
local HS = '{HS_JWK}'
local hs = middleware.jwt{{keys = {{HS}}, algorithms = {{"HS256"}}, issuer = "{ISSUER}",
  audience = "api", strip = true}}
local idp = middleware.jwt{{jwks = {{backend = "idp", path = "{JWKS_PATH}"}},
  algorithms = {{"RS256", "ES256"}}, issuer = "{ISSUER}"}}

local function forward(req)
  req.headers["x-sub"] = req.claims.sub
  return proxy("api")
end

-- Every algorithm allowed (the default): only the keys' types stand between an HS256 token
-- and the IdP's RSA keys.
local idp_any = middleware.jwt{{jwks = {{backend = "idp", path = "{JWKS_PATH}"}}}}

chi.with(hs).get("/hs/*", forward)
chi.with(idp_any).get("/any/*", forward)
chi.with(idp).get("/idp/*", forward)
chi.get("/open", function(req) return proxy("api") end)
"""


def publish(farm: BackendFarm, *kids: str, status: int = 200) -> None:
    """Serve the public keys of `kids` as the IdP's JWKS from now on."""
    keys = [IDP_KEYS[kid].as_dict(private=False) for kid in kids]
    farm.backends["jwt-idp"].canned[JWKS_PATH] = (
        status, [("Content-Type", "application/json"), ("Cache-Control", "max-age=300")],
        json.dumps({"keys": keys}).encode())


def identity_tenants(farm: BackendFarm, example: Callable[[str], str],
                     dead_url: Callable[[], str]) -> list[dict]:
    b = farm.add
    b("jwt-idp")
    publish(farm, "rsa-1", "ec-1")
    return [
        {"slug": "jwt", "domains": ["jwt.test"], "script": JWT_SCRIPT, "backends": [
            {"name": "api", "url": b("jwt-api").url},
            {"name": "idp", "url": farm.backends["jwt-idp"].url}]},
        # The shipped CORS example in front of a backend that is down: the gateway's own 502
        # carries the CORS headers too.
        {"slug": "cors-down", "domains": ["cors-down.test"], "script": example("cors.lua"),
         "backends": [{"name": "api", "url": dead_url()}]},
    ]
