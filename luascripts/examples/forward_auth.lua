-- Ask an auth service before proxying (forward auth).
-- Backends expected: auth, app.
--
-- Every request's Authorization header goes to the auth backend's /verify. A 2xx lets the
-- request through to app, with the user the auth service names in x-user (and without the
-- Authorization header); a 401 or 403 is passed on to the client; an auth service that is
-- down, slow (500 ms) or answers anything else makes the request 503.

local function forward_auth(req, next)
  local res, err = http.request("auth", {
    path = "/verify",
    headers = { authorization = req.headers["authorization"] or "" },
    timeout_ms = 500,
  })
  if res == nil then
    log.error("auth service unavailable: " .. err)
    return reject(503, "authentication is unavailable")
  end
  if res.status == 401 or res.status == 403 then
    return reject(res.status, "not authorized")
  end
  if res.status < 200 or res.status > 299 then
    return reject(503, "authentication failed")
  end
  req.headers["authorization"] = nil
  req.headers["x-user"] = res.headers["x-user"]
  return next(req)
end

chi.use(forward_auth)
chi.handle("*", "/*", function(req) return proxy("app") end)
