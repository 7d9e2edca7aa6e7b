-- Rate limits, exact across every worker and gateway node (with CHISTONE_REDIS_URL set).
-- Backends expected: api.
--
-- Every request: at most 100 a minute per client address (429 with Retry-After past it;
-- every answer, proxied ones too, carries RateLimit-Limit, -Remaining and -Reset).
-- POST /login: also at most 5 a minute per X-Api-Key (the client's address without one),
-- refused with 503 when the limit cannot be checked (fail = "closed") rather than let a
-- password-guessing burst through while Redis is away.
-- GET /reports/{id}: a daily quota of 1000 per user with limit.allow itself, and a count of
-- reports served per day in shared state.

chi.use(middleware.rate_limit{rate = 100, per = 60, key = "ip"})

chi.with(middleware.rate_limit{rate = 5, per = 60, key = "header:x-api-key",
  fail = "closed", name = "login"}).post("/login", function(req)
  return proxy("api")
end)

chi.get("/reports/{id}", function(req)
  local user = req.headers["x-user"] or req.client_ip
  local ok, info = limit.allow("reports:" .. user, 1000, 86400)
  if not ok then
    return reject(429, "The daily report quota is used up; it frees up within " ..
      math.ceil(info.reset_s) .. " s.")
  end
  -- (a missing store answers nil, "unavailable": the count is best effort, the report is not)
  shared.incr("reports-served:" .. math.floor(time.now() / 86400), 1, 2 * 86400)
  return proxy("api", {set_headers = {["x-quota-remaining"] = info.remaining}})
end)

chi.handle("*", "/*", function(req) return proxy("api") end)
