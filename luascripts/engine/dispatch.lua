-- dispatch.lua: registration entry point, actions, and the per-request call.
--
-- Per request the host makes exactly one call: xpcall(K.run, debug.traceback, ...), with the
-- chain (middleware..., terminal) already chosen by the Python matcher. run() builds `req`
-- (headers and query are decoded lazily, on first access), runs the chain, then checks the
-- result here in the sandbox -- with rawget and type checks, under the deadline -- and
-- returns only flat strings, numbers and nils. The host never reads a tenant table.
--
-- Flat result: ran, request_headers_blob|nil, logs_blob|nil, dropped_logs, kind, ...
--   kind "P" (proxy):   backends_blob, path, query, hash_key, timeout_ms, set_blob, remove_blob
--   kind "R" (respond): status, body, headers_blob
--   kind "J" (reject):  status, message
--   kind "N" (router's own 404/405), kind "M" (mount to a backend)
-- Blobs are "\0"-joined lists; header names/values and backend names never contain "\0".

local K = ...
local S = K.S

local type, tostring, tonumber, error, select, next = type, tostring, tonumber, error, select,
  next
local rawget, rawset, rawlen, rawequal = rawget, rawset, rawlen, rawequal
local setmetatable = setmetatable
local math_type = math.type
local concat, sort, unpack = table.concat, table.sort, table.unpack
local find, sub, lower, gsub, char, format, byte = S.find, S.sub, S.lower, S.gsub, S.char,
  S.format, S.byte
local gmatch = S.gmatch
local arm, disarm, reset_logs, take_logs = K.arm, K.disarm, K.reset_logs, K.take_logs

local limits = {
  max_body = 1024 * 1024, max_headers = 100, max_header = 8192, max_string = 4 * 1024 * 1024,
}
local known_backends = nil -- set of names, or nil when unknown (validation without names)
local default_backends = "" -- blob of every backend, for legacy tables without a choice

function K.configure_actions(max_body, max_headers, max_header, max_string)
  limits.max_body, limits.max_headers, limits.max_header, limits.max_string =
    max_body, max_headers, max_header, max_string
end

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

---------------------------------------------------------------------------- checks
-- Each check returns the value to keep, or nil and a message for error(..., level).

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
  if #v > limits.max_header then
    return nil, "header '" .. name .. "' is longer than " .. limits.max_header .. " bytes"
  end
  if find(v, "[%z\r\n]") then
    return nil, "header '" .. name .. "' contains CR, LF or NUL"
  end
  return v
end

-- A table name -> value into "name\0value\0..." (sorted, so results are deterministic).
local function header_blob(t, what)
  if t == nil then return nil end
  if type(t) ~= "table" then return nil, what .. " must be a table of name = value" end
  local names, vals, count = {}, {}, 0
  for k, v in next, t do
    count = count + 1
    if count > limits.max_headers then
      return nil, what .. " has more than " .. limits.max_headers .. " headers"
    end
    local name, err = check_header_name(k)
    if not name then return nil, what .. ": " .. err end
    local value, verr = check_header_value(name, v)
    if not value then return nil, what .. ": " .. verr end
    names[count] = name
    vals[name] = value
  end
  if count == 0 then return nil end
  sort(names)
  local out = {}
  for i = 1, count do
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
  for seg in S.gmatch(p, "[^/]+") do
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
  if type(name) ~= "string" or name == "" or #name > 200 or find(name, "%z") then
    return nil, "backend names must be non-empty strings, got " .. type(name)
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
  P = { path = 3, query = 4, hash_key = 5, timeout_ms = 6 },
  R = { status = 2, body = 3 },
  J = { status = 2, message = 3 },
}

local ACTION_MT = {
  __index = function(a, k)
    local flat = ACTIONS[a]
    if k == "kind" then return KIND_NAMES[flat[1]] end
    if k == "backends" and flat[1] == "P" then
      local list = {}
      for name in S.gmatch(flat[2], "[^%z]+") do list[#list + 1] = name end
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
  hash_key = true, timeout_ms = true }

local function proxy(target, opts)
  local blob, err = backends_blob(target)
  if not blob then error("proxy(): " .. err, 2) end
  local path, query, hash_key, timeout, set, remove
  if opts ~= nil then
    if type(opts) ~= "table" then error("proxy(): options must be a table", 2) end
    for k in next, opts do
      if not PROXY_OPTS[k] then
        error("proxy(): unknown option '" .. tostring(k) .. "' (known: path, query, " ..
          "set_headers, remove_headers, hash_key, timeout_ms)", 2)
      end
    end
    local v = rawget(opts, "path")
    if v ~= nil then
      path, err = check_path(v)
      if not path then error("proxy(): " .. err, 2) end
    end
    v = rawget(opts, "query")
    if v ~= nil then
      query, err = check_query(v)
      if not query then error("proxy(): " .. err, 2) end
    end
    v = rawget(opts, "hash_key")
    if v ~= nil then
      if type(v) == "number" then v = tostring(v) end
      if type(v) ~= "string" or #v > 1024 then
        error("proxy(): hash_key must be a string of at most 1024 bytes", 2)
      end
      hash_key = v
    end
    v = rawget(opts, "timeout_ms")
    if v ~= nil then
      timeout, err = check_status(v, 1, 600000, "proxy")
      if not timeout then error("proxy(): timeout_ms must be an integer from 1 to 600000", 2) end
    end
    set, err = header_blob(rawget(opts, "set_headers"), "set_headers")
    if err then error("proxy(): " .. err, 2) end
    remove, err = names_blob(rawget(opts, "remove_headers"), "remove_headers")
    if err then error("proxy(): " .. err, 2) end
  end
  return action({ "P", blob, path, query, hash_key, timeout, set, remove, n = 8 })
end

local function respond(status, body, headers)
  local s, err = check_status(status, 200, 599, "respond")
  if not s then error(err, 2) end
  if body == nil then body = "" elseif type(body) == "number" then body = tostring(body) end
  if type(body) ~= "string" then error("respond(): body must be a string, got " .. type(body), 2) end
  if #body > limits.max_body then
    error("respond(): body is " .. #body .. " bytes; the limit is " .. limits.max_body, 2)
  end
  local blob
  blob, err = header_blob(headers, "headers")
  if err then error("respond(): " .. err, 2) end
  return action({ "R", s, body, blob, n = 4 })
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
  return { "J", s, message, n = 3 }
end

local function reject(status, message)
  local flat, err = check_reject(status, message)
  if not flat then error(err, 2) end
  return action(flat)
end

K.helpers.proxy = proxy
K.helpers.respond = respond
K.helpers.reject = reject

local ROUTER_DEFAULT = action({ "N", n = 1 })
local MOUNT_PROXY = action({ "M", n = 1 })

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
  return trim({ "P", blob, path, nil, nil, nil, set, nil, n = 8 })
end

local LEGACY_KEYS = { "selected_backend", "modified_headers", "modified_path", "reject" }

local function finish(result, selector, pool)
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

---------------------------------------------------------------------------- request
-- req.headers is a proxy over the blob the host passed ("\nname\0value" per header): a
-- lookup is one plain find, so a script that reads two headers does not pay for decoding
-- twenty. Writes go to an overlay (validated at the assignment, so errors name its line);
-- pairs() sees the merged result. The overlay is what makes the request headers "changed".
local ABSENT = {}
local hblob, qstring = "", ""
local overlay = nil

local function blob_get(name)
  local at = find(hblob, "\n" .. name .. "\0", 1, true)
  if not at then return nil end
  local start = at + #name + 2
  local stop = find(hblob, "\n", start, true)
  return sub(hblob, start, stop and stop - 1 or -1)
end

local function header_key(k)
  if type(k) ~= "string" then return nil end
  if find(k, "%u") then return lower(k) end
  return k
end

-- The merged headers as a plain table.
local function materialize()
  local h = {}
  for k, v in gmatch(hblob, "\n([^\0]*)\0([^\n]*)") do h[k] = v end
  if overlay then
    for k, v in next, overlay do
      if v == ABSENT then h[k] = nil else h[k] = v end
    end
  end
  return h
end

local HEADERS_MT = {
  __index = function(_, k)
    k = header_key(k)
    if not k then return nil end
    if overlay then
      local v = overlay[k]
      if v ~= nil then
        if v == ABSENT then return nil end
        return v
      end
    end
    return blob_get(k)
  end,
  __newindex = function(_, k, v)
    local name, err = check_header_name(k)
    if not name then error("req.headers: " .. err, 2) end
    if v ~= nil then
      v, err = check_header_value(name, v)
      if not v then error("req.headers: " .. err, 2) end
    end
    overlay = overlay or {}
    overlay[name] = v == nil and ABSENT or v
  end,
  __pairs = function() return next, materialize(), nil end,
  __metatable = false,
}

local function unescape(s)
  s = gsub(s, "+", " ")
  return (gsub(s, "%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

local function parse_query(qs)
  local q = {}
  for pair in gmatch(qs, "[^&]+") do
    local eq = find(pair, "=", 1, true)
    local k, v
    if eq then k, v = sub(pair, 1, eq - 1), sub(pair, eq + 1) else k, v = pair, "" end
    k = unescape(k)
    if rawget(q, k) == nil then rawset(q, k, unescape(v)) end
  end
  return q
end

local REQ_MT = {
  __index = function(req, k)
    if k == "query" then
      local q = parse_query(qstring)
      rawset(req, "query", q)
      return q
    end
    return nil
  end,
  __metatable = false,
}

-- nil when the request headers are unchanged, else the complete new set as a blob.
local function changed_headers(req, proxy_table)
  local h = rawget(req, "headers")
  if rawequal(h, proxy_table) then
    if overlay == nil then return nil end
    h = materialize()
  elseif type(h) ~= "table" then
    error("req.headers must stay a table of name = value", 0)
  end
  local saved = limits.max_headers
  limits.max_headers = 10000 -- the request's own headers count too; the host caps input
  local blob, err = header_blob(h, "req.headers")
  limits.max_headers = saved
  if err then error(err, 0) end
  return blob or ""
end

local function new_request(method, path, qs, host, scheme, client_ip, tenant, request_id,
                           pattern, blob, params)
  hblob, qstring, overlay = blob, qs, nil
  local headers = setmetatable({}, HEADERS_MT)
  return setmetatable({
    method = method, path = path, host = host, scheme = scheme, client_ip = client_ip,
    tenant = tenant, request_id = request_id, route_pattern = pattern, params = params,
    headers = headers,
  }, REQ_MT), headers
end

---------------------------------------------------------------------------- chains
local CHAINS = {}
local TERMINALS = {
  [0] = function() return ROUTER_DEFAULT end,
  [-1] = function() return MOUNT_PROXY end,
}
local ran = 0

-- Chains arrive as: count, then per chain: length, fn ids... (terminal last).
function K.define_chains(...)
  local args = { ... }
  local i, id = 1, 0
  while i <= #args do
    local len = args[i]
    local chain = { n = len }
    for j = 1, len do
      local fid = args[i + j]
      chain[j] = fid > 0 and K.F[fid] or TERMINALS[fid]
    end
    id = id + 1
    CHAINS[id] = chain
    i = i + len + 1
  end
  return id
end

local function invoke(chain, i, req)
  local f = chain[i]
  if i == chain.n then return f(req) end
  if i > ran then ran = i end
  return f(req, function(r2)
    if r2 == nil then r2 = req end
    if type(r2) ~= "table" then error("next() expects the request table", 2) end
    return invoke(chain, i + 1, r2)
  end)
end

local function encode(req, headers, flat)
  local reqh = changed_headers(req, headers)
  local logs, dropped = take_logs()
  disarm()
  return ran, reqh, logs, dropped, unpack(flat, 1, flat.n)
end

-- The per-request entry point (always called through xpcall by the host).
function K.run(dl, chain_id, pattern, method, path, qs, host, scheme, client_ip, tenant,
               request_id, blob, ...)
  arm(dl)
  reset_logs()
  ran = 0
  local params = {}
  for i = 1, select("#", ...), 2 do
    local k, v = select(i, ...)
    params[k] = v
  end
  local req, headers = new_request(method, path, qs, host, scheme, client_ip, tenant,
    request_id, pattern, blob, params)
  local result = invoke(CHAINS[chain_id], 1, req)
  return encode(req, headers, finish(result, false, default_backends))
end

-- Selector scripts: on_route_request(request, backends) for every request.
function K.run_selector(dl, method, path, qs, host, scheme, client_ip, tenant, request_id,
                        blob, ...)
  arm(dl)
  reset_logs()
  ran = 0
  local backends, names = {}, {}
  for i = 1, select("#", ...), 4 do
    local name, url, weight, healthy = select(i, ...)
    backends[#backends + 1] = { name = name, url = url, weight = weight, healthy = healthy }
    names[#names + 1] = name
  end
  local req, headers = new_request(method, path, qs, host, scheme, client_ip, tenant,
    request_id, nil, blob, {})
  local pool = #names > 0 and concat(names, "\0") or default_backends
  local result = K.globals.on_route_request(req, backends)
  return encode(req, headers, finish(result, true, pool))
end

---------------------------------------------------------------------------- registration
local STASH = nil

function K.stash(src)
  STASH = src
end

-- Runs the script once (through xpcall); returns "syntax", message or "ok", is_selector.
function K.register(dl)
  local src = STASH
  STASH = nil
  arm(dl)
  reset_logs()
  local env = K.make_env()
  local chunk, err = K.compile(src)
  if not chunk then
    K.disarm()
    return "syntax", err
  end
  K.begin_registration(env)
  chunk()
  K.end_registration()
  local sel = rawget(env, "on_route_request")
  K.disarm()
  local routes = K.route_count()
  if routes == 0 and sel == nil then
    return "empty"
  end
  if routes == 0 and type(sel) ~= "function" then
    return "badselector", type(sel)
  end
  K.freeze()
  return "ok", routes == 0
end
