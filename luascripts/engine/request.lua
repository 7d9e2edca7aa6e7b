-- request.lua: the `req` table a handler sees.
--
-- req.headers is a proxy over the blob the host passed ("\nname\0value" per header): a
-- lookup is one plain find, so a script that reads two headers does not pay for decoding
-- twenty. Writes go to an overlay (validated at the assignment, so errors name its line);
-- pairs() sees the merged result. The overlay is what makes the request headers "changed".
-- req.query is decoded on first access.

local K = ...
local S = K.S

local type, tonumber, error, next = type, tonumber, error, next
local rawget, rawset, rawequal = rawget, rawset, rawequal
local setmetatable = setmetatable
local find, sub, lower, gsub, char, gmatch = S.find, S.sub, S.lower, S.gsub, S.char, S.gmatch
local check_header_name, check_header_value = K.check_header_name, K.check_header_value
local header_blob = K.header_blob
local limits = K.action_limits

local ABSENT = {}
local hblob, qstring = "", ""
local overlay, noverlay = nil, 0

-- name as written by the script -> { lower-case name, "\nname\0" needle }, memoised:
-- scripts read the same few header names on every request.
local KEYS, nkeys = {}, 0

local function header_key(k)
  local key = KEYS[k]
  if key == nil then
    if type(k) ~= "string" then return nil end
    local name = lower(k)
    key = { name, "\n" .. name .. "\0" }
    if nkeys >= 512 then KEYS, nkeys = {}, 0 end
    KEYS[k], nkeys = key, nkeys + 1
  end
  return key
end

local function blob_get(key)
  local needle = key[2]
  local at = find(hblob, needle, 1, true)
  if not at then return nil end
  local start = at + #needle
  local stop = find(hblob, "\n", start, true)
  return sub(hblob, start, stop and stop - 1 or -1)
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
    local key = header_key(k)
    if not key then return nil end
    if overlay then
      local v = overlay[key[1]]
      if v ~= nil then
        if v == ABSENT then return nil end
        return v
      end
    end
    return blob_get(key)
  end,
  __newindex = function(_, k, v)
    local name, err = check_header_name(k)
    if not name then error("req.headers: " .. err, 2) end
    if v ~= nil then
      v, err = check_header_value(name, v)
      if not v then error("req.headers: " .. err, 2) end
    end
    if overlay == nil then
      overlay, noverlay = {}, 0
    end
    if overlay[name] == nil then
      noverlay = noverlay + 1
      if noverlay > limits.max_headers then
        error("req.headers: a script may change at most " .. limits.max_headers ..
          " headers per request", 2)
      end
    end
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
function K.changed_headers(req, proxy_table)
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

-- One proxy serves every request: it holds nothing itself (rawset is not available to
-- scripts), everything it shows comes from the current request's blob and overlay.
local HEADERS = setmetatable({}, HEADERS_MT)

function K.new_request(method, path, qs, host, scheme, client_ip, tenant, request_id,
                       pattern, blob, params)
  hblob, qstring, overlay = blob, qs, nil
  return setmetatable({
    method = method, path = path, host = host, scheme = scheme, client_ip = client_ip,
    tenant = tenant, request_id = request_id, route_pattern = pattern, params = params,
    headers = HEADERS,
  }, REQ_MT), HEADERS
end

