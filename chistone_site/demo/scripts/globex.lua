-- globex: a canary taking 20% of traffic, sticky per client, with a header override.
-- Backends: stable, canary.

chi.handle("*", "/*", function(req)
  if req.headers["x-canary"] == "always" then
    return proxy("canary", {set_headers = {["x-routed-by"] = "chistone-canary-override"}})
  end
  local bucket = tonumber(string.sub(crypto.sha256(req.client_ip), 1, 4), 16) % 100
  if bucket < 20 then
    return proxy("canary", {set_headers = {["x-routed-by"] = "chistone-canary"}})
  end
  return proxy("stable", {set_headers = {["x-routed-by"] = "chistone-stable"}})
end)
