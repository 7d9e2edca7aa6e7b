-- JWT bearer tokens with the standard middleware.
-- Backends expected: idp (serves the identity provider's JWKS), app.
--
-- /api/*: `authorization: Bearer <JWT>` signed by the identity provider (RS256 or ES256,
--   keys from its JWKS, fetched from the tenant's own backend "idp", cached and refreshed
--   by the gateway), issued by https://idp.example.com for the audience "orders-api".
--   Without a token: 401 with `WWW-Authenticate: Bearer`; with an invalid one: 401 with
--   `WWW-Authenticate: Bearer error="invalid_token", error_description="<reason>"`. The
--   caller's subject goes upstream in `x-user`, the token itself does not (strip = true).
-- /public/*: a token is optional; when one is given it must be valid, and `x-user` is set.
-- /webhooks/*: an HS256 token signed with a shared secret (a JWK of type "oct"), checked by
--   hand with jwt.verify to answer 403 with a message of the script's own.

local IDP = {
  jwks = { backend = "idp", path = "/.well-known/jwks.json" },
  algorithms = { "RS256", "ES256" },
  issuer = "https://idp.example.com",
  audience = "orders-api",
  leeway_s = 30,
}

local function with_user(req)
  if req.claims then req.headers["x-user"] = req.claims.sub end
  return proxy("app")
end

chi.group(function(r)
  r.use(middleware.jwt{ jwks = IDP.jwks, algorithms = IDP.algorithms, issuer = IDP.issuer,
    audience = IDP.audience, leeway_s = IDP.leeway_s, strip = true })
  r.handle("*", "/api/*", with_user)
end)

chi.with(middleware.jwt{ jwks = IDP.jwks, algorithms = IDP.algorithms, issuer = IDP.issuer,
  audience = IDP.audience, optional = true }).get("/public/*", with_user)

local HOOK_KEY = '{"kty":"oct","k":"d2ViaG9vay1zaGFyZWQtc2VjcmV0LWNoYW5nZS1tZQ"}'

chi.post("/webhooks/*", function(req)
  local token = req.headers["x-hook-token"]
  local claims, reason = jwt.verify(token, { keys = { HOOK_KEY }, algorithms = { "HS256" } })
  if not claims then
    log.warn("webhook token refused: " .. reason)
    return reject(403, "webhook token refused (" .. reason .. ")")
  end
  req.headers["x-hook-sender"] = claims.sender
  return proxy("app")
end)
