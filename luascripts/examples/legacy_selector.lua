-- A lua-stone selector script, unchanged: no routes, one on_route_request function.
-- Backends expected: legacy, stable (any names work; see below).
--
-- Every request calls on_route_request(request, backends), where backends lists
-- {name, url, weight, healthy}. The result is the original result table:
--   selected_backend, modified_headers, modified_path, reject, reject_status, reject_message.

function on_route_request(request, backends)
  if request.path == "/blocked" or string.find(request.path, "^/blocked/") then
    return { reject = true, reject_status = 403, reject_message = "blocked by policy" }
  end
  -- Old clients still call /v0/...: send them to the legacy backend, minus the prefix.
  local rest = string.match(request.path, "^/v0(/.*)$")
  if rest then
    return {
      selected_backend = "legacy",
      modified_path = rest,
      modified_headers = { ["x-legacy-client"] = "1" },
    }
  end
  -- Otherwise the first healthy backend that is not the legacy one.
  for _, backend in ipairs(backends) do
    if backend.healthy and backend.name ~= "legacy" then
      return { selected_backend = backend.name }
    end
  end
  return { reject = true, reject_status = 503, reject_message = "no healthy backend" }
end
