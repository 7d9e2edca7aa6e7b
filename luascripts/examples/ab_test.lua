-- A/B test with sticky assignment.
-- Backends expected: app-a, app-b.
--
-- The user is identified by the `uid` cookie, else the `x-user-id` header, else the client
-- address. The gateway picks app-a or app-b by consistent hashing of that key (hash_key),
-- so one user always sees the same variant. `?variant=a` or `?variant=b` forces one side.

local function cookie(req, name)
  local header = req.headers["cookie"]
  if header == nil then return nil end
  -- plain find + anchored match: cheap, and no backtracking on long cookie headers
  local at = string.find("; " .. header, "; " .. name .. "=", 1, true)
  if at == nil then return nil end
  return string.match(header, "^([^;]*)", at + #name + 1)
end

local FORCED = { a = "app-a", b = "app-b" }

chi.handle("*", "/*", function(req)
  local forced = FORCED[req.query.variant or ""]
  if forced then
    return proxy(forced, { set_headers = { ["x-variant"] = forced } })
  end
  local key = cookie(req, "uid") or req.headers["x-user-id"] or req.client_ip
  return proxy({ "app-a", "app-b" }, { hash_key = key })
end)
