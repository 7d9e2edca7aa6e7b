-- Version-based routing.
-- Backends expected: users-v1, users-v2.
--
--   GET/POST /api/v1/{version}/users          -> users-v1 or users-v2 by {version}
--   GET      /api/v1/{version}/users/{id}     -> same, {id} must be digits
--   anything else under /api/v1/{version}/   -> 404 from the router
-- An unknown version is answered 404 by the script itself, without reaching a backend.

local BACKEND_FOR = { v1 = "users-v1", v2 = "users-v2" }

local function users_backend(req)
  local backend = BACKEND_FOR[req.params.version]
  if backend == nil then
    return reject(404, "unknown API version " .. req.params.version)
  end
  return proxy(backend)
end

chi.route("/api/v1/{version}", function(r)
  r.get("/users", users_backend)
  r.post("/users", users_backend)
  r.get("/users/{id:[0-9]+}", users_backend)
end)
