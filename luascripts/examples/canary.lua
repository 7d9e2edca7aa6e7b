-- Canary release by percentage.
-- Backends expected: stable, canary.
--
-- CANARY_PERCENT of requests go to `canary`, the rest to `stable`. A request that carries
-- `x-canary: always` or `x-canary: never` overrides the dice (handy for testers), and the
-- chosen side is told to the backend in an `x-release` header.

local CANARY_PERCENT = 10

local function choose(req)
  local forced = req.headers["x-canary"]
  if forced == "always" then return "canary" end
  if forced == "never" then return "stable" end
  if math.random(100) <= CANARY_PERCENT then return "canary" end
  return "stable"
end

chi.handle("*", "/*", function(req)
  local side = choose(req)
  return proxy(side, { set_headers = { ["x-release"] = side } })
end)
