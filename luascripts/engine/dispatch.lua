-- dispatch.lua: middleware chains, the per-request entry points, and registration.
--
-- A request runs as a coroutine (a *driver*): the host calls xpcall(K.run, K.on_error,
-- deadline, <request>) with the chain (middleware..., terminal) already chosen by its
-- matcher. When the script waits (req.body(), a response's head, http.request) the
-- coroutine yields an effect, K.run returns "wait" with a token and the effect, and the
-- host later calls xpcall(K.resume, K.on_error, deadline, token, <answer>). Between two
-- steps other requests of the same tenant run in this Lua state, so everything a request
-- owns lives in its context `ctx`, never in module variables. Each step returns only flat
-- strings, numbers and nils, laid out as luascripts/engine/boundary.py declares
-- (K.layout.result, then "done": the action and patch, "wait": the effect, "fail": why).
-- The host never reads a tenant table.

local K = ...

local type, error, select, rawequal, tostring, tonumber, next = type, error, select,
  rawequal, tostring, tonumber, next
local rawget = rawget
local unpack = K.raw_unpack
local S = K.S
local find = S.find
local arm, disarm, reset_logs, take_logs = K.arm, K.disarm, K.reset_logs, K.take_logs
local new_request = K.new_request
local co_create, co_resume, co_status, co_close = K.co_create, K.co_resume, K.co_status,
  K.co_close
local sethook, hook, HOOK_COUNT = K.sethook, K.hook, K.HOOK_COUNT
local EFFECT, ANSWER, TIMEOUT, DRIVERS = K.EFFECT, K.ANSWER, K.TIMEOUT, K.DRIVERS
local L = K.layout
local LREQ, LRES, LFAIL, OFF = L.request, L.result, L.fail, L.offsets

---------------------------------------------------------------------------- chains
local CHAINS = {}
local ROUTER_DEFAULT, MOUNT_PROXY = K.ROUTER_DEFAULT, K.MOUNT_PROXY
local TERMINALS = {
  [0] = function() return ROUTER_DEFAULT end,
  [-1] = function() return MOUNT_PROXY end,
}

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

local as_response = K.as_response

local function invoke(ctx, chain, i, req)
  local handler = chain[i] -- (the name tracebacks show for a handler or a middleware)
  local previous = K.current
  K.current = handler
  local result
  if i == chain.n then
    result = handler(req)
  else
    if i > ctx.ran then ctx.ran = i end
    result = handler(req, function(r2)
      if r2 == nil then r2 = req end
      if type(r2) ~= "table" then error("next() expects the request table", 2) end
      return as_response(ctx, invoke(ctx, chain, i + 1, r2), r2)
    end)
  end
  K.current = previous
  return result
end

---------------------------------------------------------------------------- steps
local PENDING, ntoken = {}, 0 -- token -> ctx of a request waiting for the host
local DONE = setmetatable({}, { __metatable = false }) -- a driver finished its request

local function run_chain(ctx, chain)
  local result
  if chain then
    result = invoke(ctx, chain, 1, ctx.req)
  else -- a lua-stone selector: on_route_request(request, backends)
    K.current = K.globals.on_route_request
    result = K.current(ctx.req, ctx.backends)
    K.current = nil
  end
  return K.final(ctx, result, chain == nil, ctx.pool)
end

-- A driver runs one request's chain inside xpcall, so that an error -- a timeout raised by
-- the hook included -- unwinds within the coroutine. That restores the thread's hook (Lua
-- turns hooks off while one runs and only a protected call turns them back on) before the
-- script's to-be-closed variables run, and the message handler takes the traceback where
-- the error happened. Then it parks, yielding DONE and the results, and waits for its next
-- request: drivers are reused, since creating a coroutine per request costs more than the
-- rest of a small script's step.
local xpcall, on_error = xpcall, K.on_error
local co_yield = coroutine.yield
local function driver(ctx, chain)
  while true do
    ctx, chain = co_yield(DONE, xpcall(run_chain, on_error, ctx, chain))
  end
end

local POOL, npool, MAX_POOL = {}, 0, 32

local function acquire()
  if npool > 0 then
    local co = POOL[npool]
    POOL[npool], npool = nil, npool - 1
    return co
  end
  local co = co_create(driver)
  DRIVERS[co] = true
  sethook(co, hook, "", HOOK_COUNT) -- once: a driver that ever failed is not reused
  return co
end

local function fail(ctx, kind, message, line)
  local logs, dropped = take_logs()
  local out = { "fail", ctx.ran, nil, logs, dropped }
  out[OFF.payload + LFAIL.kind] = kind
  out[OFF.payload + LFAIL.message] = message
  out[OFF.payload + LFAIL.line] = line
  return unpack(out, 1, OFF.payload + LFAIL._n)
end

local function describe(e)
  local t = type(e)
  if t == "string" then return e end
  if t == "number" then return tostring(e) end
  return "error() was called with a " .. t .. " value, not a message string"
end

-- A failed request's driver is dropped, not reused (its hook may be the sticky one of a
-- timeout); closing it runs the to-be-closed variables left, if any (a driver that died
-- outside its xpcall), still under the request's deadline.
local function failed(ctx, payload)
  DRIVERS[ctx.co] = nil
  co_close(ctx.co)
  disarm()
  local was, line = K.reset()
  K.current, K.ctx = nil, nil
  if was or rawequal(payload, TIMEOUT) then
    return fail(ctx, "timeout", "CPU time limit exceeded", line)
  end
  local message = describe(payload)
  if message == "not enough memory" then return fail(ctx, "memory", message, nil) end
  local kind = "error"
  if ctx.body_error and find(message, "req.body(): the request body ", 1, true) then
    kind = "body:" .. ctx.body_error
  elseif ctx.response_error and find(message, "res.body(): the backend's response body ", 1,
    true) then
    kind = "upstream:" .. ctx.response_error
  end
  return fail(ctx, kind, message, nil)
end

-- "done": RESULT, then PATCH, then the action's flat record (boundary.py).
local function done(ctx, co, reqh, status, set, removed, body, flat)
  disarm()
  K.current, K.ctx = nil, nil
  if npool < MAX_POOL then
    npool = npool + 1
    POOL[npool] = co
  else
    DRIVERS[co] = nil
  end
  local logs, dropped = take_logs()
  return "done", ctx.ran, reqh, logs, dropped, status, set, removed, body,
    unpack(flat, 1, flat.n)
end

local function after(ctx, ok, first, xok, ...)
  if first == DONE then
    if xok then return done(ctx, ctx.co, ...) end
    return failed(ctx, (...)) -- the driver's xpcall caught an error
  end
  if not ok then -- the coroutine died outside its xpcall (an error in the message handler)
    return failed(ctx, K.timed_out() and TIMEOUT or first)
  end
  ctx.current = K.current
  disarm()
  K.current, K.ctx = nil, nil
  -- Suspended: `first` is EFFECT, then the effect's op and fields.
  if not rawequal(first, EFFECT) then
    DRIVERS[ctx.co] = nil
    return fail(ctx, "error", "the request's coroutine yielded outside the gateway's control",
      nil)
  end
  K.save_request_state(ctx)
  ntoken = ntoken + 1
  PENDING[ntoken] = ctx
  ctx.token = ntoken
  local logs, dropped = take_logs()
  return "wait", ctx.ran, nil, logs, dropped, ntoken, xok, ...
end

local gmatch, concat = S.gmatch, table.concat

local function backends_of(blob)
  local list, names, n = {}, {}, 0
  local parts, np = {}, 0
  for part in gmatch(blob .. "\0", "([^%z]*)%z") do
    np = np + 1
    parts[np] = part
  end
  for i = 1, np - 3, 4 do
    n = n + 1
    local weight = tonumber(parts[i + 2]) or 0
    list[n] = { name = parts[i], url = parts[i + 1], weight = weight,
      healthy = parts[i + 3] == "1" }
    names[n] = parts[i]
  end
  return list, n > 0 and concat(names, "\0") or nil
end

-- The per-request entry point (always called through xpcall by the host). Its parameters
-- after the deadline are boundary.py's REQUEST record, in its order (checked at load,
-- below), then the URL params (name, value, ...).
function K.run(dl, chain, pattern, fallback_status, method, path, query, host, scheme,
               client_ip, tenant, request_id, headers, websocket, backends, ...)
  local params = {}
  for i = 1, select("#", ...), 2 do
    local k, v = select(i, ...)
    params[k] = v
  end
  -- Every field the request's context will hold, so the table is sized once.
  local ctx = { ran = 0, fallback_status = fallback_status, req = false, co = false,
    __index = false, __metatable = false, qs = false, ctx = false }
  ctx.req = new_request(ctx, method, path, query, host, scheme, client_ip, tenant, request_id,
    pattern, headers, params, websocket == true)
  local steps = nil
  if backends ~= nil then
    ctx.backends, ctx.pool = backends_of(backends)
  else
    steps = CHAINS[chain]
  end
  local co = acquire()
  ctx.co = co
  arm(dl)
  reset_logs()
  K.ctx = ctx
  return after(ctx, co_resume(co, ctx, steps))
end

do -- K.run's parameters are the REQUEST record's fields, in its order
  local getlocal = debug.getlocal
  for name, position in next, K.layout.request do
    if name ~= "_n" and getlocal(K.run, position + 1) ~= name then
      error("dispatch.lua: K.run's parameter " .. position + 1 .. " is not '" .. name ..
        "' as luascripts/engine/boundary.py declares")
    end
  end
end

-- Resume a waiting request with the host's answer (the answer record's fields).
function K.resume(dl, token, ...)
  local ctx = PENDING[token]
  if ctx == nil then error("no request is waiting under token " .. tostring(token), 0) end
  PENDING[token] = nil
  arm(dl)
  reset_logs()
  K.ctx, K.current = ctx, ctx.current
  K.load_request_state(ctx)
  return after(ctx, co_resume(ctx.co, ANSWER, ...))
end

-- The host gave up on a waiting request (the client went away, or the host failed).
-- Closing runs the script's to-be-closed variables: under the request's deadline too.
function K.cancel(dl, token)
  local ctx = PENDING[token]
  if ctx == nil then return false end
  PENDING[token] = nil
  DRIVERS[ctx.co] = nil
  arm(dl)
  K.ctx = ctx
  co_close(ctx.co)
  K.ctx = nil
  disarm()
  K.reset()
  return true
end

function K.pending_count()
  local n = 0
  for _ in next, PENDING do n = n + 1 end
  return n
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
    disarm()
    return "syntax", err
  end
  K.begin_registration(env)
  chunk()
  K.end_registration()
  local sel = rawget(env, "on_route_request")
  disarm()
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
