-- request.lua: the `req` table a handler sees, and header tables (request and response).
--
-- A header table is a proxy over a blob the host passed ("\nname\0value" per header): a
-- lookup is one plain find, so a script that reads two headers does not pay for decoding
-- twenty. Writes go to an overlay (validated at the assignment, so errors name its line);
-- pairs() sees the merged result. The overlay is what makes the headers "changed".
--
-- req.headers is one shared proxy over the *running* request's headers (nothing to allocate
-- per request: this is the hot path). Requests of one tenant interleave in one Lua state
-- when scripts wait, so dispatch.lua saves the running request's header state into its
-- context when it waits and restores it when it resumes (K.save_request_state /
-- K.load_request_state). Response headers and http.request answers get a proxy of their own
-- (K.header_table), made only when a script uses them.
-- req.query is decoded on first access; req.body() asks the host for the body (it waits).

local K = ...
local S = K.S

local type, tonumber, error, next = type, tonumber, error, next
local rawget, rawset, rawequal = rawget, rawset, rawequal
local setmetatable = setmetatable
local raw_getmetatable = debug.getmetatable
local find, sub, lower, gsub, char, gmatch = S.find, S.sub, S.lower, S.gsub, S.char, S.gmatch
local check_header_name, check_header_value = K.check_header_name, K.check_header_value
local header_blob = K.header_blob
local limits = K.limits
local wait = K.wait
local LB = K.layout.body_answer

local ABSENT = {}
K.ABSENT = ABSENT
local index_state, newindex_state -- defined below, used by both kinds of header tables

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

local function blob_get(blob, key)
  local needle = key[2]
  local at = find(blob, needle, 1, true)
  if not at then return nil end
  local start = at + #needle
  local stop = find(blob, "\n", start, true)
  return sub(blob, start, stop and stop - 1 or -1)
end

-- The merged headers of a header table's state as a plain table.
local function materialize(st)
  local h = {}
  for k, v in gmatch(st.blob, "\n([^\0]*)\0([^\n]*)") do h[k] = v end
  local overlay = st.overlay
  if overlay then
    for k, v in next, overlay do
      if v == ABSENT then h[k] = nil else h[k] = v end
    end
  end
  return h
end

-- The state lives in the proxy's own metatable (hidden by __metatable), so a header table
-- costs two tables and no weak map. `st.before_read` (responses) runs before any read: a
-- response's headers are only known once the upstream answered.
function index_state(st, k)
  local key = header_key(k)
  if not key then return nil end
  local overlay = st.overlay
  if overlay then
    local v = overlay[key[1]]
    if v ~= nil then
      if v == ABSENT then return nil end
      return v
    end
  end
  return blob_get(st.blob, key)
end

local function index(t, k)
  local st = raw_getmetatable(t)
  if st.before_read then st.before_read(st) end
  return index_state(st, k)
end

-- name as written by the script -> its lower-case form, for names that passed
-- check_header_name (scripts write the same few names on every request).
local VALID, nvalid = {}, 0

function newindex_state(st, k, v, level)
  local name = VALID[k]
  if name == nil then
    local err
    name, err = check_header_name(k)
    if not name then error(st.what .. ": " .. err, level + 1) end
    if nvalid >= 512 then VALID, nvalid = {}, 0 end
    VALID[k], nvalid = name, nvalid + 1
  end
  if v ~= nil then
    v, err = check_header_value(name, v)
    if not v then error(st.what .. ": " .. err, level + 1) end
  end
  local overlay = st.overlay
  if overlay == nil then
    overlay = {}
    st.overlay, st.noverlay = overlay, 0
  end
  if overlay[name] == nil then
    st.noverlay = st.noverlay + 1
    if st.noverlay > limits.max_headers then
      error(st.what .. ": a script may change at most " .. limits.max_headers ..
        " headers", level + 1)
    end
  end
  overlay[name] = v == nil and ABSENT or v
end

local function newindex(t, k, v)
  newindex_state(raw_getmetatable(t), k, v, 2)
end

local function pairs_of(t)
  local st = raw_getmetatable(t)
  if st.before_read then st.before_read(st) end
  return next, materialize(st), nil
end

-- A header table over `blob`; `what` names it in errors ("req.headers", "res.headers");
-- `response`: the state of the response it belongs to, for `before_read`.
function K.header_table(blob, what, before_read, response)
  return setmetatable({}, {
    __index = index, __newindex = newindex, __pairs = pairs_of, __metatable = false,
    blob = blob, what = what, before_read = before_read, overlay = nil, noverlay = 0,
    response = response,
  })
end
local header_table = K.header_table

-- The state of a header table made by K.header_table (nil for any other value).
function K.header_state(t)
  if type(t) ~= "table" then return nil end
  local st = raw_getmetatable(t)
  if type(st) == "table" and st.__index == index then return st end
  return nil
end
local header_state = K.header_state

-- Only the changes: (set pairs blob or nil, removed names blob or nil), each sorted by
-- name (results are deterministic). The overlay holds names and values newindex_state
-- checked at the assignment: they are not checked again.
local sort, concat = table.sort, table.concat
function K.header_changes(st)
  local overlay = st.overlay
  if overlay == nil then return nil, nil end
  local name, v = next(overlay)
  if next(overlay, name) == nil then -- one change: the usual middleware
    if v == ABSENT then return nil, name end
    return name .. "\0" .. v, nil
  end
  local set, removed, ns, nr = {}, {}, 0, 0
  for k in next, overlay do
    if overlay[k] == ABSENT then nr = nr + 1; removed[nr] = k else ns = ns + 1; set[ns] = k end
  end
  local blob = nil
  if ns > 0 then
    sort(set)
    local out = {}
    for i = 1, ns do out[2 * i - 1], out[2 * i] = set[i], overlay[set[i]] end
    blob = concat(out, "\0")
  end
  sort(removed)
  return blob, nr > 0 and concat(removed, "\0") or nil
end

-- The running request's headers: the same functions over module state instead of a
-- per-table state.
local CURRENT = { blob = "", what = "req.headers", overlay = nil, noverlay = 0 }

local REQ_HEADERS = setmetatable({}, {
  __index = function(_, k) return index_state(CURRENT, k) end,
  __newindex = function(_, k, v) newindex_state(CURRENT, k, v, 2) end,
  __pairs = function() return next, materialize(CURRENT), nil end,
  __metatable = false,
})

function K.load_request_state(ctx)
  CURRENT.blob, CURRENT.overlay, CURRENT.noverlay = ctx.hblob, ctx.overlay, ctx.noverlay
end

function K.save_request_state(ctx)
  ctx.hblob, ctx.overlay, ctx.noverlay = CURRENT.blob, CURRENT.overlay, CURRENT.noverlay
end

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

local BODY_ERRORS = {
  too_large = "is larger than the route accepts (max_request_body_bytes)",
  timeout = "did not arrive in time",
  disconnected = "was cut short: the client went away",
  memory = "does not fit in the tenant's script runtime now (too many bodies held at once)",
}

-- req.body(): the whole request body, read once per request and kept by the context.
local function body_reader(ctx)
  return function()
    if ctx.body == nil then
      if K.ctx ~= ctx then
        error(K.script_where() .. "req.body() belongs to another request", 0)
      end
      local answer = { wait("req.body()", "body") }
      local body, err = answer[LB.body], answer[LB.error]
      if err ~= nil then
        -- Remembered so that, if the script does not catch this error, the host answers
        -- for the cause (413, 408, 503) rather than with a script failure.
        ctx.body_error = err
        local why = BODY_ERRORS[err] or ("could not be read (" .. err .. ")")
        error(K.script_where() .. "req.body(): the request body " .. why, 0)
      end
      ctx.body = body or ""
    end
    return ctx.body
  end
end

local function REQ_INDEX(req, k)
  if k == "query" then
    local q = parse_query(raw_getmetatable(req).qs)
    rawset(req, "query", q)
    return q
  elseif k == "body" then
    local f = body_reader(raw_getmetatable(req).ctx)
    rawset(req, "body", f)
    return f
  end
  return nil
end

-- nil when the request headers are unchanged, else the complete new set as a pairs blob.
-- Reads the running request's state: call it while that request runs.
function K.changed_headers(req)
  local h = rawget(req, "headers")
  if h == REQ_HEADERS then
    if CURRENT.overlay == nil then return nil end
    h = materialize(CURRENT)
  else
    local st = header_state(h)
    if st then
      h = materialize(st) -- a response's (or call's) header table assigned here
    elseif type(h) ~= "table" then
      error("req.headers must stay a table of name = value", 0)
    end
  end
  -- The request's own headers count too; the host caps what it hands over.
  local blob, err = header_blob(h, "req.headers", 10000)
  if err then error(err, 0) end
  return blob or ""
end

-- The request's context doubles as its metatable (one table per request): it carries what
-- the lazy fields need (the query string) and everything dispatch.lua keeps per request;
-- __metatable hides it from the script. Its headers are the running request's (see above).
function K.new_request(ctx, method, path, qs, host, scheme, client_ip, tenant, request_id,
                       pattern, blob, params, websocket)
  CURRENT.blob, CURRENT.overlay, CURRENT.noverlay = blob, nil, 0
  ctx.__index, ctx.__metatable, ctx.qs, ctx.ctx = REQ_INDEX, false, qs, ctx
  return setmetatable({
    method = method, path = path, host = host, scheme = scheme, client_ip = client_ip,
    tenant = tenant, request_id = request_id, route_pattern = pattern, params = params,
    headers = REQ_HEADERS, websocket = websocket,
  }, ctx)
end
