-- actions.lua: proxy(), respond(), reject(), the lua-stone result table, and the checks
-- every value leaving the sandbox goes through.
--
-- Helpers validate their arguments when called, so a bad value is an error on the script
-- line that made it. The result is an immutable action object whose flat encoding (kept
-- in a weak side table the script cannot reach) is what finally crosses to the host, laid
-- out as luascripts/engine/boundary.py declares (K.layout.proxy, .respond, .reject, ...):
-- kinds "P" proxy, "R" respond, "J" reject, "N" the router's own 404/405, "M" a mount to a
-- backend (the host fills it in). Blobs are "\0"-joined lists; header names/values and
-- backend names never contain "\0".

local K = ...
local S = K.S
local L = K.layout
local LP, LR, LJ = L.proxy, L.respond, L.reject

local type, tostring, error, select, next = type, tostring, error, select, next
local rawget, rawlen = rawget, rawlen
local setmetatable = setmetatable
local math_type = math.type
local concat, sort = table.concat, table.sort
local find, sub, lower, format, byte, gmatch = S.find, S.sub, S.lower, S.format, S.byte,
  S.gmatch

local limits = K.limits -- luascripts.engine.types.Limits, by field name
local known_backends = nil -- set of names, or nil when unknown (validation without names)
local default_backends = "" -- blob of every backend, for legacy tables without a choice

function K.set_backends(...)
  local n = select("#", ...)
  if n == 1 and select(1, ...) == false then
    known_backends, default_backends = nil, ""
    return
  end
  known_backends = {}
  for i = 1, n do known_backends[select(i, ...)] = true end
  default_backends = concat({ ... }, "\0")
end

---------------------------------------------------------------------------- errors
local getinfo = debug.getinfo
K.current = nil -- the handler or middleware being run (set by dispatch.lua)

-- Raise `msg` located at the script line that called the helper. `return proxy(...)` is a
-- tail call, which erases the caller's frame; then the best location left is the line the
-- running handler or middleware was defined on.
local function script_error(msg)
  local info = getinfo(3, "Sl")
  if info and info.source == "=script" and info.currentline > 0 then
    error("script:" .. info.currentline .. ": " .. msg, 0)
  end
  local current = K.current
  if current then
    local def = getinfo(current, "S")
    if def.source == "=script" then
      error("script:" .. def.linedefined .. ": " .. msg .. " (in the function defined at line "
        .. def.linedefined .. ")", 0)
    end
  end
  error(msg, 0)
end

---------------------------------------------------------------------------- checks
-- Each check returns the value to keep, or nil and a message for the caller to raise.

local TOKEN = "^[!#$%%&'*+%-.^_`|~%w]+$"

local function check_header_name(name)
  if type(name) ~= "string" or not find(name, TOKEN) or #name > 256 then
    return nil, "header name " .. format("%q", tostring(name)) ..
      " is not a valid HTTP token"
  end
  return lower(name)
end

local function check_header_value(name, v)
  local t = type(v)
  if t == "number" then v = tostring(v) elseif t ~= "string" then
    return nil, "header '" .. name .. "' must have a string value, got " .. t
  end
  if #v > limits.max_header_bytes then
    return nil, "header '" .. name .. "' is longer than " .. limits.max_header_bytes .. " bytes"
  end
  if find(v, "[%z\r\n]") then
    return nil, "header '" .. name .. "' contains CR, LF or NUL"
  end
  return v
end

-- A table name -> value into "name\0value\0..." (sorted, so results are deterministic).
-- `max` overrides the count limit (the request's own headers count too; the host caps them).
local function header_blob(t, what, max)
  if t == nil then return nil end
  if type(t) ~= "table" then return nil, what .. " must be a table of name = value" end
  local names, vals, count = {}, {}, 0
  max = max or limits.max_headers
  for k, v in next, t do
    count = count + 1
    if count > max then
      return nil, what .. " has more than " .. max .. " headers"
    end
    local name, err = check_header_name(k)
    if not name then return nil, what .. ": " .. err end
    local value, verr = check_header_value(name, v)
    if not value then return nil, what .. ": " .. verr end
    if vals[name] == nil then names[#names + 1] = name end -- "X-A" and "x-a": one header
    vals[name] = value
  end
  if count == 0 then return nil end
  sort(names)
  local out = {}
  for i = 1, #names do
    out[2 * i - 1], out[2 * i] = names[i], vals[names[i]]
  end
  return concat(out, "\0")
end

local DOT_SEGMENTS = { ["."] = true, [".."] = true, ["%2e"] = true, ["%2e%2e"] = true,
  [".%2e"] = true, ["%2e."] = true }

local function check_path(p)
  if type(p) ~= "string" then return nil, "path must be a string, got " .. type(p) end
  if #p > 8192 then return nil, "path is longer than 8192 bytes" end
  if byte(p, 1) ~= 47 or byte(p, 2) == 47 then
    return nil, "path must start with exactly one '/' (got " .. format("%q", sub(p, 1, 40)) ..
      ")"
  end
  if find(p, "[%z\1-\32\127]") then
    return nil, "path must not contain spaces, CR, LF, NUL or other control characters"
  end
  if find(p, "[?#]") then
    return nil, "path must not contain '?' or '#' (set the query with the 'query' option)"
  end
  for seg in gmatch(p, "[^/]+") do
    if DOT_SEGMENTS[lower(seg)] then return nil, "path must not contain '.' or '..' segments" end
  end
  return p
end

local function check_query(q)
  if type(q) ~= "string" then return nil, "query must be a string, got " .. type(q) end
  if #q > 8192 then return nil, "query is longer than 8192 bytes" end
  if find(q, "[%z\1-\32\127#]") then
    return nil, "query must not contain spaces, control characters or '#'"
  end
  return q
end

local function check_backend(name)
  if type(name) ~= "string" then
    return nil, "backend names must be strings, got " .. type(name)
  end
  if name == "" or #name > 200 or find(name, "[%z\n]") then
    return nil, "backend name " .. format("%q", sub(name, 1, 60)) .. " is not valid"
  end
  if known_backends and not known_backends[name] then
    local list = {}
    for k in next, known_backends do list[#list + 1] = k end
    sort(list)
    return nil, "unknown backend '" .. name .. "' (this tenant has: " ..
      (#list > 0 and concat(list, ", ") or "no backends") .. ")"
  end
  return name
end

local function backends_blob(target)
  if type(target) == "string" then return check_backend(target) end
  if type(target) ~= "table" then
    return nil, "the target must be a backend name or a list of names, got " .. type(target)
  end
  local n = rawlen(target)
  if n < 1 or n > 64 then return nil, "the list of backends must hold 1 to 64 names" end
  local out = {}
  for i = 1, n do
    local name, err = check_backend(rawget(target, i))
    if not name then return nil, err end
    out[i] = name
  end
  return concat(out, "\0")
end

local function names_blob(list, what)
  if list == nil then return nil end
  if type(list) ~= "table" then return nil, what .. " must be a list of header names" end
  local n = rawlen(list)
  if n > limits.max_headers then return nil, what .. " lists too many headers" end
  local out = {}
  for i = 1, n do
    local name, err = check_header_name(rawget(list, i))
    if not name then return nil, what .. ": " .. err end
    out[i] = name
  end
  if n == 0 then return nil end
  return concat(out, "\0")
end

local function check_status(s, lo, hi, fn)
  if math_type(s) == "float" and s == s // 1 then s = s // 1 end
  if math_type(s) ~= "integer" or s < lo or s > hi then
    return nil, fn .. "(): status must be an integer from " .. lo .. " to " .. hi ..
      ", got " .. tostring(s)
  end
  return s
end

---------------------------------------------------------------------------- actions
local ACTIONS = setmetatable({}, { __mode = "k" }) -- action object -> flat result
local KIND_NAMES = { P = "proxy", R = "respond", J = "reject", N = "router", M = "mount" }
local FIELDS = {
  P = { path = LP.path, query = LP.query, hash_key = LP.hash_key, timeout_ms = LP.timeout_ms },
  R = { status = LR.status, body = LR.body },
  J = { status = LJ.status, message = LJ.message },
}
K.ACTIONS, K.KIND_NAMES, K.ACTION_FIELDS = ACTIONS, KIND_NAMES, FIELDS

local ACTION_MT = {
  __index = function(a, k)
    local flat = ACTIONS[a]
    if k == "kind" then return KIND_NAMES[flat[1]] end
    if k == "backends" and flat[1] == "P" then
      local list = {}
      for name in gmatch(flat[LP.backends], "[^%z]+") do list[#list + 1] = name end
      return list
    end
    local i = FIELDS[flat[1]] and FIELDS[flat[1]][k]
    if i then return flat[i] end
    return nil
  end,
  __newindex = function() error("actions are read-only; build a new one instead", 2) end,
  __metatable = "action",
}

-- Drop trailing nils so fewer values cross into Python (the host pads them back).
local function trim(flat)
  local n = flat.n
  while n > 1 and flat[n] == nil do n = n - 1 end
  flat.n = n
  return flat
end

local function action(flat)
  trim(flat)
  local a = setmetatable({}, ACTION_MT)
  ACTIONS[a] = flat
  return a
end

local PROXY_OPTS = { path = true, query = true, set_headers = true, remove_headers = true,
  hash_key = true, timeout_ms = true, body = true }

-- proxy("name") with no options is the common case: one shared, immutable action per name.
local SIMPLE_PROXY, nsimple = {}, 0

local function proxy(target, opts)
  if opts == nil then
    local a = SIMPLE_PROXY[target]
    if a then return a end
  end
  local blob, err = backends_blob(target)
  if not blob then script_error("proxy(): " .. err) end
  local path, query, hash_key, timeout, set, remove, body
  if opts ~= nil then
    if type(opts) ~= "table" then script_error("proxy(): options must be a table") end
    for k in next, opts do
      if not PROXY_OPTS[k] then
        script_error("proxy(): unknown option '" .. tostring(k) .. "' (known: path, query, " ..
          "set_headers, remove_headers, hash_key, timeout_ms, body)")
      end
    end
    local v = rawget(opts, "path")
    if v ~= nil then
      path, err = check_path(v)
      if not path then script_error("proxy(): " .. err) end
    end
    v = rawget(opts, "query")
    if v ~= nil then
      query, err = check_query(v)
      if not query then script_error("proxy(): " .. err) end
    end
    v = rawget(opts, "hash_key")
    if v ~= nil then
      if type(v) == "number" then v = tostring(v) end
      if type(v) ~= "string" or #v > 1024 then
        script_error("proxy(): hash_key must be a string of at most 1024 bytes")
      end
      hash_key = v
    end
    v = rawget(opts, "timeout_ms")
    if v ~= nil then
      timeout, err = check_status(v, 1, 600000, "proxy")
      if not timeout then
        script_error("proxy(): timeout_ms must be an integer from 1 to 600000")
      end
    end
    set, err = header_blob(rawget(opts, "set_headers"), "set_headers")
    if err then script_error("proxy(): " .. err) end
    remove, err = names_blob(rawget(opts, "remove_headers"), "remove_headers")
    if err then script_error("proxy(): " .. err) end
    body = K.body_value(rawget(opts, "body"))
    if body ~= nil then
      if type(body) == "number" then body = tostring(body) end
      if type(body) ~= "string" then
        script_error("proxy(): body must be a string, got " .. type(body))
      end
      if #body > limits.max_request_body_bytes then
        script_error("proxy(): body is " .. #body .. " bytes; the limit is " ..
          limits.max_request_body_bytes .. " (max_request_body_bytes)")
      end
    end
  end
  local a = action({ [LP.kind] = "P", [LP.backends] = blob, [LP.path] = path,
    [LP.query] = query, [LP.hash_key] = hash_key, [LP.timeout_ms] = timeout,
    [LP.set_headers] = set, [LP.remove_headers] = remove, [LP.body] = body, n = LP._n })
  if opts == nil and type(target) == "string" and nsimple < 256 then
    SIMPLE_PROXY[target], nsimple = a, nsimple + 1
  end
  return a
end

local function respond(status, body, headers)
  local s, err = check_status(status, 200, 599, "respond")
  if not s then script_error(err) end
  body = K.body_value(body)
  if body == nil then body = "" elseif type(body) == "number" then body = tostring(body) end
  if type(body) ~= "string" then
    script_error("respond(): body must be a string, got " .. type(body))
  end
  if #body > limits.max_body_bytes then
    script_error("respond(): body is " .. #body .. " bytes; the limit is " ..
      limits.max_body_bytes)
  end
  local blob
  blob, err = header_blob(headers, "headers")
  if err then script_error("respond(): " .. err) end
  return action({ [LR.kind] = "R", [LR.status] = s, [LR.body] = body, [LR.headers] = blob,
    n = LR._n })
end

local REASONS = { [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
  [404] = "Not Found", [405] = "Method Not Allowed", [409] = "Conflict",
  [413] = "Payload Too Large", [429] = "Too Many Requests", [500] = "Internal Server Error",
  [502] = "Bad Gateway", [503] = "Service Unavailable" }

local function check_reject(status, message)
  local s, err = check_status(status, 400, 599, "reject")
  if not s then return nil, err end
  if message == nil then message = REASONS[s] or "Rejected" end
  if type(message) == "number" then message = tostring(message) end
  if type(message) ~= "string" then return nil, "reject(): message must be a string" end
  if #message > 1024 then message = sub(message, 1, 1024) end
  return { [LJ.kind] = "J", [LJ.status] = s, [LJ.message] = message, n = LJ._n }
end

local function reject(status, message)
  local flat, err = check_reject(status, message)
  if not flat then script_error(err) end
  return action(flat)
end

K.helpers.proxy = proxy
K.helpers.respond = respond
K.helpers.reject = reject

K.ROUTER_DEFAULT = action({ [L.router.kind] = "N", n = L.router._n })
K.MOUNT_PROXY = action({ [L.mount.kind] = "M", n = L.mount._n })

-- The original lua-stone result table.
local function legacy(t, pool)
  if rawget(t, "reject") then
    local flat, err = check_reject(rawget(t, "reject_status") or 403, rawget(t, "reject_message"))
    if not flat then return nil, "result table: " .. err end
    return flat
  end
  local blob, path, set, err = pool, nil, nil, nil
  local sel = rawget(t, "selected_backend")
  if sel ~= nil then
    blob, err = check_backend(sel)
    if not blob then return nil, "result table: selected_backend: " .. err end
  end
  local p = rawget(t, "modified_path")
  if p ~= nil then
    path, err = check_path(p)
    if not path then return nil, "result table: modified_path: " .. err end
  end
  set, err = header_blob(rawget(t, "modified_headers"), "modified_headers")
  if err then return nil, "result table: " .. err end
  return trim({ [LP.kind] = "P", [LP.backends] = blob, [LP.path] = path,
    [LP.set_headers] = set, n = LP._n })
end

local LEGACY_KEYS = { "selected_backend", "modified_headers", "modified_path", "reject" }

-- The flat encoding of what a handler returned (an action object or a lua-stone result
-- table); `pool` replaces the tenant's backends as the default choice (selectors: the
-- request's backends). Response objects are handled by response.lua before this.
function K.action_flat(result, selector, pool)
  pool = pool or default_backends
  local flat = ACTIONS[result]
  if flat then return flat end
  local t = type(result)
  if t == "table" then
    local ok = selector
    for _, k in next, LEGACY_KEYS do
      if rawget(result, k) ~= nil then ok = true end
    end
    if ok then
      local out, err = legacy(result, pool)
      if not out then error(err, 0) end
      return out
    end
  end
  if result == nil and selector then return legacy({}, pool) end
  if result == nil then
    error("the handler (or a middleware) returned nothing: return proxy(...), respond(...) " ..
      "or reject(...)", 0)
  end
  error("the handler returned a " .. t .. ", not an action: return proxy(...), respond(...) " ..
    "or reject(...)", 0)
end

K.check_header_name = check_header_name
K.check_header_value = check_header_value
K.header_blob = header_blob
K.names_blob = names_blob
K.check_path = check_path
K.check_query = check_query
K.check_backend = check_backend
K.check_status = check_status
K.script_error = script_error
K.action = action
