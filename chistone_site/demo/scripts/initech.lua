-- initech: a legacy lua-stone selector script (no routes, one decision function).
-- Backends: legacy, modern.

function on_route_request(request, backends)
  if request.headers["x-api-version"] == "2" then
    return {selected_backend = "modern", modified_headers = {["x-selected-by"] = "selector"}}
  end
  if request.path == "/forbidden" then
    return {reject = true, reject_status = 403, reject_message = "not for you"}
  end
  return {selected_backend = "legacy"}
end
