-- response.lua: what `next(req)` returns, chi-style, and the final encoding of a request.
--
-- In a middleware `local res = next(req)` is a response object for whatever the rest of the
-- chain returned. Its status, headers and body are fetched from the host only when the
-- script reads them (K.wait: the script waits, the worker goes on serving): a proxied
-- response opens the upstream exchange, a reject or the router's 404/405 renders the
-- gateway's answer. Writes never wait: `res.status = 201`, `res.headers.x = "y"` and
-- `res.set_body(s)` are recorded as a patch that the host applies to the final answer, so a
-- middleware that only adds headers to proxied answers costs no upstream round trip inside
-- Lua and no buffering.
--
-- Response state lives in the proxy's own (hidden) metatable: kind ("P" proxy, "M" a
-- backend mount, "R" respond, "J" reject, "N" the router's own answer), the action's flat
-- record, the request it answers, and once known the head (status, headers blob, backend),
-- the exchange id, and the patch (status, header overlay, body).

local K = ...
local S = K.S

local type, tostring, error, rawequal, select = type, tostring, error, rawequal, select
local setmetatable = setmetatable
local raw_getmetatable = debug.getmetatable
local concat = table.concat
local gmatch, format = S.gmatch, S.format
local math_type = math.type

local L = K.layout
local LP, LR, LJ, LU = L.proxy, L.respond, L.reject, L.exchange
local LH, LBA, LRA = L.head, L.body_answer, L.render_answer
local ACTIONS, KIND_NAMES = K.ACTIONS, K.KIND_NAMES
local wait, limits = K.wait, K.limits
local header_table, header_state, header_changes = K.header_table, K.header_state,
  K.header_changes
local changed_headers = K.changed_headers
local unpack = K.raw_unpack

local PUBLIC_KIND = { P = "proxy", M = "proxy", R = "respond", J = "reject", N = "reject" }

-- "name\0value\0..." (pairs) -> "\nname\0value..." (lookup blob)
local function lookup_blob(pairs_blob)
  if pairs_blob == nil or pairs_blob == "" then return "" end
  local out, n, name = {}, 0, nil
  for part in gmatch(pairs_blob .. "\0", "([^%z]*)%z") do
    if name == nil then
      name = part
    else
      n = n + 1
      out[n] = "\n" .. name .. "\0" .. part
      name = nil
    end
  end
  return concat(out)
end

local RES_MT_INDEX, RES_MT_NEWINDEX, body_handle -- forward

local function response_state(v)
  if type(v) ~= "table" then return nil end
  local st = raw_getmetatable(v)
  if type(st) == "table" and st.__index == RES_MT_INDEX then return st end
  return nil
end
K.response_state = response_state

-- The head of a proxied response: open the upstream exchange (once).
local function open(st)
  if st.head then return end
  local ctx = st.ctx
  if K.ctx ~= ctx then
    error(K.script_where() .. "this response belongs to another request", 0)
  end
  ctx.exchanges = (ctx.exchanges or 0) + 1
  st.id = ctx.exchanges
  local flat = st.flat
  local answer = { wait("reading the response", "upstream", st.id,
    changed_headers(st.req), unpack(flat, 1, flat.n)) }
  st.head = true
  st.status0 = answer[LH.status]
  st.hblob = answer[LH.headers] or ""
  st.backend = answer[LH.backend]
end

-- The head (and body) of a reject or of the router's own 404/405: as the gateway renders it.
local function render(st)
  if st.head then return end
  local flat = st.flat
  local status = st.kind == "J" and flat[LJ.status] or st.ctx.fallback_status
  local answer = { wait("reading the response", "render", status,
    st.kind == "J" and flat[LJ.message] or nil) }
  st.head = true
  st.status0 = answer[LRA.status]
  st.hblob = answer[LRA.headers] or ""
  st.body0 = answer[LRA.body]
end

local function ensure_head(st)
  local kind = st.kind
  if kind == "P" or kind == "M" then open(st) elseif kind ~= "R" then render(st) end
end

local function status_of(st)
  if st.status ~= nil then return st.status end
  local kind = st.kind
  if kind == "R" then return st.flat[LR.status] end
  if kind == "J" then return st.flat[LJ.status] end
  if kind == "N" then return st.ctx.fallback_status end
  open(st)
  return st.status0
end

local function read_body(st)
  if st.body ~= nil then return st.body end
  local kind = st.kind
  if kind == "R" then return st.flat[LR.body] end
  if kind == "J" or kind == "N" then
    render(st)
    return st.body0
  end
  open(st)
  local answer = { wait("res.body()", "response_body", st.id) }
  local body, err = answer[LBA.body], answer[LBA.error]
  if err ~= nil then
    -- Remembered so that, if the script does not catch this error, the host answers for
    -- the cause (502, 504) rather than with a script failure.
    st.ctx.response_error = err
    local why = err == "too_large" and ("is larger than " .. limits.max_response_body_bytes ..
      " bytes (max_response_body_bytes)") or ("could not be read (" .. err .. ")")
    error(K.script_where() .. "res.body(): the backend's response body " .. why, 0)
  end
  st.body = body or ""
  return st.body
end

local function set_body(st, s)
  s = K.body_value(s)
  if type(s) == "number" then s = tostring(s) end
  if type(s) ~= "string" then
    K.script_error("res.set_body(): the body must be a string, got " .. type(s))
  end
  if #s > limits.max_body_bytes then
    K.script_error("res.set_body(): body is " .. #s .. " bytes; the limit is " ..
      limits.max_body_bytes)
  end
  st.body, st.body_set = s, true
end

-- `res.body` of a respond(): callable (res.body(), the contract) and, for scripts written
-- when next() returned the action itself and `a.body` was its body string, usable as that
-- string too (concatenation, tostring, #, string methods, respond()/set_body arguments).
local HANDLE_CALL
local function handle_value(v)
  if type(v) == "table" then
    local mt = raw_getmetatable(v)
    if type(mt) == "table" and mt.__call == HANDLE_CALL then return read_body(mt.st) end
  end
  return v
end
K.body_value = handle_value

HANDLE_CALL = function(h, self)
  local mt = raw_getmetatable(h)
  if self ~= nil and not rawequal(self, mt.res) then
    K.script_error("res.body() takes no arguments")
  end
  return read_body(mt.st)
end

local capped_string = string -- the real string table, as caps.lua patched it
local HANDLE_INDEX = function(h, k)
  local f = type(k) == "string" and capped_string[k]
  if type(f) ~= "function" then return nil end
  return function(self, ...) return f(handle_value(self), ...) end
end

function body_handle(st, res)
  return setmetatable({}, {
    __call = HANDLE_CALL, __index = HANDLE_INDEX, __metatable = "body",
    __concat = function(a, b) return handle_value(a) .. handle_value(b) end,
    __tostring = function(h) return handle_value(h) end,
    __len = function(h) return #handle_value(h) end,
    st = st, res = res,
  })
end

-- A response's header table reads the head first (one function for all: no closure per
-- response); its state knows the response's.
local function head_first(hst)
  local st = hst.response
  ensure_head(st)
  hst.blob = st.hblob
  hst.before_read = nil
end

local function headers_of(res, st)
  local h = st.headers
  if h == nil then
    local kind = st.kind
    if kind == "R" then
      h = header_table(lookup_blob(st.flat[LR.headers]), "res.headers", nil)
    else
      h = header_table("", "res.headers", head_first, st)
    end
    st.headers = h
  end
  return h
end

RES_MT_INDEX = function(res, k)
  local st = raw_getmetatable(res)
  if k == "status" then return status_of(st) end
  if k == "headers" then return headers_of(res, st) end
  if k == "kind" then return PUBLIC_KIND[st.kind] end
  if k == "body" then
    local f = st.body_fn
    if f == nil then
      if st.kind == "R" then
        f = body_handle(st, res)
      else
        f = function(self)
          if self ~= nil and not rawequal(self, res) then
            K.script_error("res.body() takes no arguments")
          end
          return read_body(st)
        end
      end
      st.body_fn = f
    end
    return f
  end
  if k == "set_body" then
    local f = st.set_body_fn
    if f == nil then
      f = function(a, b)
        if rawequal(a, res) then a = b end
        set_body(st, a)
      end
      st.set_body_fn = f
    end
    return f
  end
  if k == "backend" then
    local kind = st.kind
    if kind == "P" then
      local names = st.flat[LP.backends]
      if not S.find(names, "\0", 1, true) then return names end
      open(st)
      return st.backend
    elseif kind == "M" then
      open(st)
      return st.backend
    end
    return nil
  end
  -- What an action object showed before responses existed (read without waiting).
  local fields = K.ACTION_FIELDS[st.kind]
  local i = fields and fields[k]
  if i then return st.flat[i] end
  if k == "backends" and st.kind == "P" then
    local list = {}
    for name in gmatch(st.flat[LP.backends], "[^%z]+") do list[#list + 1] = name end
    return list
  end
  return nil
end

RES_MT_NEWINDEX = function(res, k, v)
  local st = raw_getmetatable(res)
  if k == "status" then
    if math_type(v) == "float" and v == v // 1 then v = v // 1 end
    if math_type(v) ~= "integer" or v < 200 or v > 599 then
      error("res.status must be an integer from 200 to 599, got " .. tostring(v), 2)
    end
    st.status = v
    return
  end
  if k == "headers" then
    error("res.headers cannot be replaced; set or remove single headers " ..
      "(res.headers[name] = value or nil)", 2)
  end
  error("res." .. tostring(k) .. " cannot be set (only res.status, res.headers[name] and " ..
    "res.set_body(s) change a response)", 2)
end

local function new_response(ctx, flat, req)
  return setmetatable({}, {
    __index = RES_MT_INDEX, __newindex = RES_MT_NEWINDEX, __metatable = "response",
    kind = flat[1], flat = flat, req = req, ctx = ctx,
  })
end

-- What next(req) returns for the rest of the chain's result.
function K.as_response(ctx, result, req)
  local flat = ACTIONS[result] -- the usual case: a handler returned an action
  if flat == nil then
    if result == nil or response_state(result) then return result end
    flat = K.action_flat(result, false, nil) -- lua-stone tables
  end
  return new_response(ctx, flat, req)
end

-- What a finished request hands back: (request headers blob or nil, the patch's status,
-- headers, removed names and body, the action's flat record). dispatch.lua returns these
-- as the "done" result (boundary.py: RESULT, then PATCH, then the action).
local ACTIONS_ = ACTIONS
function K.final(ctx, result, selector, pool)
  local flat = ACTIONS_[result]
  if flat ~= nil then -- the usual case: the chain returned an action, nobody looked
    return changed_headers(ctx.req), nil, nil, nil, nil, flat
  end
  local st = response_state(result)
  if st == nil then
    return changed_headers(ctx.req), nil, nil, nil, nil, K.action_flat(result, selector, pool)
  end
  local kind, reqh = st.kind, nil
  if (kind == "P" or kind == "M") and st.head then
    flat = { [LU.kind] = "U", [LU.id] = st.id, n = LU._n }
  else
    flat = st.flat
    if kind == "P" or kind == "M" then reqh = changed_headers(st.req) end
  end
  local set, removed
  local hst = header_state(st.headers)
  if hst then set, removed = header_changes(hst) end
  return reqh, st.status, set, removed, st.body_set and st.body or nil, flat
end

-- For tests of the encoding from the host.
K.lookup_blob = lookup_blob
