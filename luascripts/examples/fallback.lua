-- Upstream failures: a fallback backend, or a friendly answer instead of the error.
-- Backends expected: primary, backup.
--
-- /status: when the primary answers 5xx (or cannot be reached: the gateway's own 502/504),
--   the client gets a friendly JSON 503 with Retry-After instead.
-- everything else: on a 5xx from the primary, the same request goes to the backup (its
--   body is sent again; a body too large to have been kept makes that a 502).

local function fallback(req, next)
  local res = next(req)
  if res.status >= 500 then
    log.warn("primary answered " .. res.status .. "; trying the backup")
    return proxy("backup")
  end
  return res
end

local function friendly(req, next)
  local res = next(req)
  if res.status >= 500 then
    return respond(503, json.encode({ status = "degraded",
      message = "We are having trouble right now; please try again in a minute." }),
      { ["content-type"] = "application/json", ["retry-after"] = "60" })
  end
  return res
end

chi.with(friendly).get("/status", function(req) return proxy("primary") end)
chi.with(fallback).handle("*", "/*", function(req) return proxy("primary") end)
