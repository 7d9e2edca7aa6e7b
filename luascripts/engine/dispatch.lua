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

-- The coroutine's body: the chain inside xpcall, so that an error -- a timeout raised by the
-- hook included -- unwinds within the coroutine. That restores the thread's hook (Lua turns
-- hooks off while one runs and only a protected call turns them back on) before the
-- script's to-be-closed variables run, and the message handler takes the traceback where
-- the error happened.
local xpcall, on_error = xpcall, K.on_error
local function body(ctx, chain)
  return xpcall(run_chain, on_error, ctx, chain)
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

local function failed(ctx, co, payload)
  DRIVERS[co] = nil
  co_close(co) -- to-be-closed variables left (if any) run under the request's deadline
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

local function after(ctx, ok, first, second, ...)
  ctx.current = K.current
  local co = ctx.co
  if not ok then -- the coroutine died outside its xpcall (an error in the message handler)
    return failed(ctx, co, K.timed_out() and TIMEOUT or first)
  end
  if co_status(co) == "dead" then
    if not first then return failed(ctx, co, second) end -- body's xpcall caught an error
    disarm()
    K.current, K.ctx = nil, nil
    DRIVERS[co] = nil
    local logs, dropped = take_logs()
    local out = second -- K.final's flat payload
    out[LRES.state], out[LRES.ran], out[LRES.request_headers] = "done", ctx.ran, out.reqh
    out[LRES.logs], out[LRES.dropped_logs] = logs, dropped
    return unpack(out, 1, out.n)
  end
  disarm()
  K.current, K.ctx = nil, nil
  -- Suspended: `first` is EFFECT, then the effect's op and fields.
  if not rawequal(first, EFFECT) then
    DRIVERS[co] = nil
    return fail(ctx, "error", "the request's coroutine yielded outside the gateway's control",
      nil)
  end
  ntoken = ntoken + 1
  PENDING[ntoken] = ctx
  ctx.token = ntoken
  local logs, dropped = take_logs()
  return "wait", ctx.ran, nil, logs, dropped, ntoken, second, ...
end

local function step(ctx, dl, ...)
  arm(dl)
  reset_logs()
  K.ctx, K.current = ctx, ctx.current
  local co = ctx.co
  sethook(co, hook, "", HOOK_COUNT)
  return after(ctx, co_resume(co, ...))
end

local function backends_of(blob)
  local list, names, n = {}, {}, 0
  local parts, np = {}, 0
  for part in S.gmatch(blob .. "\0", "([^%z]*)%z") do
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
  return list, n > 0 and table.concat(names, "\0") or nil
end

-- The per-request entry point (always called through xpcall by the host). Arguments are
-- the REQUEST record, then the URL params (name, value, ...).
function K.run(dl, ...)
  local r = { ... }
  local params = {}
  for i = LREQ._n + 1, select("#", ...), 2 do params[r[i]] = r[i + 1] end
  local ctx = { ran = 0, exchanges = 0, calls = 0, pdepth = 0,
    fallback_status = r[LREQ.fallback_status] }
  ctx.req = new_request(ctx, r[LREQ.method], r[LREQ.path], r[LREQ.query], r[LREQ.host],
    r[LREQ.scheme], r[LREQ.client_ip], r[LREQ.tenant], r[LREQ.request_id], r[LREQ.pattern],
    r[LREQ.headers], params, r[LREQ.websocket] == true)
  local chain = nil
  local backends = r[LREQ.backends]
  if backends ~= nil then
    ctx.backends, ctx.pool = backends_of(backends)
  else
    chain = CHAINS[r[LREQ.chain]]
  end
  local co = co_create(body)
  DRIVERS[co] = true
  ctx.co = co
  return step(ctx, dl, ctx, chain)
end

-- Resume a waiting request with the host's answer (the answer record's fields).
function K.resume(dl, token, ...)
  local ctx = PENDING[token]
  if ctx == nil then error("no request is waiting under token " .. tostring(token), 0) end
  PENDING[token] = nil
  return step(ctx, dl, ANSWER, ...)
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
