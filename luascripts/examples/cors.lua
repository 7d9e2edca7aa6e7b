-- CORS: preflights answered by the gateway, the headers added to every answer (proxied
-- ones included) for the allowed origins.
-- Backends expected: api.
--
-- An OPTIONS request with Access-Control-Request-Method is a preflight: 204 with the
-- allowed methods and headers for an allowed origin, 403 otherwise. Any other request is
-- proxied; a middleware adds Access-Control-Allow-Origin (and Vary: Origin) to the answer
-- on its way back -- without waiting for the backend inside the script or buffering the
-- body, since it only sets headers.

local ORIGINS = { ["https://app.example.com"] = true, ["http://localhost:3000"] = true }
local METHODS = "GET, POST, PUT, PATCH, DELETE"
local HEADERS = "authorization, content-type"

local function cors(req, next)
  local origin = req.headers["origin"]
  local allowed = origin ~= nil and ORIGINS[origin] == true
  if req.method == "OPTIONS" and req.headers["access-control-request-method"] then
    if not allowed then return reject(403, "origin not allowed") end
    return respond(204, "", {
      ["access-control-allow-origin"] = origin,
      ["access-control-allow-methods"] = METHODS,
      ["access-control-allow-headers"] = HEADERS,
      ["access-control-max-age"] = "600",
      vary = "Origin",
    })
  end
  local res = next(req)
  if allowed then
    res.headers["access-control-allow-origin"] = origin
    res.headers["vary"] = "Origin"
  end
  return res
end

chi.use(cors)
chi.handle("*", "/*", function(req) return proxy("api") end)
