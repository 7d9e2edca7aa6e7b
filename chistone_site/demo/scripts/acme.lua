-- acme: version-based routing, an auth check on writes, a legacy mount, and a rate limit.
-- Backends: users-v1, users-v2, legacy.

local function require_token(req, next)
  if req.method ~= "GET" and req.headers["authorization"] ~= "Bearer demo-token" then
    return reject(401, "missing or wrong bearer token (try: Authorization: Bearer demo-token)")
  end
  return next(req)
end

chi.use(require_token)

chi.get("/", function(req)
  return respond(200, json.encode({tenant = req.tenant, try = {"/api/v1/v1/users",
    "/api/v1/v2/users", "/legacy/anything"}}), {["content-type"] = "application/json"})
end)

chi.route("/api/v1/{version:v[12]}", function(r)
  r.get("/users", function(req)
    return proxy("users-" .. req.params.version, {path = "/users"})
  end)
  r.get("/users/{id:[0-9]+}", function(req)
    return proxy("users-" .. req.params.version, {path = "/users/" .. req.params.id})
  end)
end)

chi.mount("/legacy", "legacy")

-- /me: a JWT verified by the standard middleware (HS256 with the shared secret below, the
-- JWK form of "chistone-demo-secret-change-me!!"; the README tour mints a token for it).
-- The caller's subject goes upstream in x-user; the token itself does not (strip).
local DEMO_JWT_KEY = '{"kty":"oct","k":"Y2hpc3RvbmUtZGVtby1zZWNyZXQtY2hhbmdlLW1lISE"}'
chi.with(middleware.jwt{ keys = { DEMO_JWT_KEY }, algorithms = { "HS256" },
  issuer = "chistone-demo", strip = true }).get("/me", function(req)
  req.headers["x-user"] = req.claims.sub
  return proxy("users-v2", { path = "/me" })
end)

-- A rate limit the README tour can hit: 5 requests a minute per client address, then 429
-- with Retry-After (shared by every worker through Redis when CHISTONE_REDIS_URL is set).
chi.with(middleware.rate_limit{rate = 5, per = 60, key = "ip"}).get("/status", function(req)
  return respond(200, json.encode({status = "ok"}), {["content-type"] = "application/json"})
end)
