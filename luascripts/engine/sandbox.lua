-- sandbox.lua: trusted bootstrap, run once per runtime with the real _G.
--
-- Builds what tenant code may see and the CPU deadline that bounds it:
--   * a count hook that stops tenant code once the deadline has passed, made sticky so
--     error-swallowing pcalls, message handlers and coroutines cannot outlive it;
--   * pcall/xpcall/coroutine wrappers that re-raise the timeout and hook every coroutine;
--   * a setmetatable that refuses __gc (finalizers run with hooks disabled);
--   * read-only library tables and a protected string metatable;
--   * the allow-list environment and its freezing after registration.
-- Everything tenant-facing is built from locals captured here, so nothing a tenant does
-- to a library table can change how the sandbox itself behaves.

local K = ...

local type, next, select, error, tostring = type, next, select, error, tostring
local rawget, rawequal, rawlen = rawget, rawequal, rawlen
local setmetatable, getmetatable = setmetatable, getmetatable
local pcall, xpcall, load = pcall, xpcall, load
local huge = math.huge
local sethook, getinfo = debug.sethook, debug.getinfo
local debug_setmetatable = debug.setmetatable
local co_create, co_resume, co_status, co_close = coroutine.create, coroutine.resume,
  coroutine.status, coroutine.close
K.co_create, K.co_resume, K.co_status, K.co_close = co_create, co_resume, co_status, co_close

-- Python's time.perf_counter, handed over by the host; kept only as this upvalue.
local clock = K.clock
K.clock = nil

local HOOK_COUNT = 1000 -- VM instructions between two deadline checks (a few microseconds)
K.HOOK_COUNT = HOOK_COUNT

local TIMEOUT = setmetatable({}, {
  __metatable = false,
  __tostring = function() return "CPU time limit exceeded" end,
})
K.TIMEOUT = TIMEOUT

local deadline = huge
local armed = false      -- true only while tenant code may be running
local timed_out = false
K.timeout_line = nil     -- where the script was when the deadline hit

local hook
hook = function()
  if not armed then return end
  if not timed_out then
    if clock() <= deadline then return end
    timed_out = true
    local info = getinfo(2, "Sl")
    if info and info.source == "=script" and info.currentline > 0 then
      K.timeout_line = info.currentline
    end
  end
  -- Sticky: fire again on the very next instruction of this thread until the call unwinds.
  sethook(hook, "", 1)
  error(TIMEOUT, 0)
end
K.hook = hook

-- For C functions the hook cannot interrupt: caps.lua calls this before any call whose
-- input is large, so a loop of expensive calls meets the deadline between two of them.
function K.check_deadline()
  if armed and (timed_out or clock() > deadline) then
    timed_out = true
    sethook(hook, "", 1)
    error(TIMEOUT, 0)
  end
end

function K.arm(d)
  deadline = d
  timed_out = false
  K.timeout_line = nil
  armed = true
end

function K.disarm()
  armed = false
  deadline = huge
end

function K.timed_out()
  return timed_out
end

-- Called by the host (after it re-armed the hook with a C call) once a protected call failed.
function K.reset()
  local was = timed_out
  armed = false
  deadline = huge
  timed_out = false
  return was, K.timeout_line
end

-- Whether the deadline has passed, checked against the clock (not only flagged by the hook).
-- Every place that catches an error asks this. The count hook alone is not enough there:
-- a hook is a call, and near the C-stack limit (`local function f() pcall(f) f() end`)
-- calling it fails with "C stack overflow" before it runs -- an error the tenant's pcall
-- would swallow, over and over, while the deadline passes unnoticed.
local function expired()
  if timed_out then return true end
  if armed and clock() > deadline then
    timed_out = true
    sethook(hook, "", 1)
    return true
  end
  return false
end

local function rethrow(ok, ...)
  if not ok and (rawequal((...), TIMEOUT) or expired()) then error(TIMEOUT, 0) end
  return ok, ...
end

-- Protected calls nest at most MAX_PCALL_DEPTH deep per request. On the main thread Lua's
-- C-stack limit (200) bounds them, but inside a coroutine -- where requests run -- Lua
-- resets its C-call count whenever it recovers from an error, so `local function f()
-- pcall(f) f() end` nests thousands deep, and unwinding a timeout from there costs seconds
-- (each recovery shrinks the call list: quadratic in the depth).
local MAX_PCALL_DEPTH = 190
local registration_depth = { pdepth = 0 }

local function enter_protected()
  local c = K.ctx or registration_depth
  local d = (c.pdepth or 0) + 1
  if d > MAX_PCALL_DEPTH then
    error("pcall/xpcall nested more than " .. MAX_PCALL_DEPTH .. " levels deep", 3)
  end
  c.pdepth = d
  return c
end

local function leave_protected(c, ...)
  c.pdepth = c.pdepth - 1
  return ...
end

local function safe_pcall(f, ...)
  local c = enter_protected()
  return rethrow(leave_protected(c, pcall(f, ...)))
end

local function safe_xpcall(f, handler, ...)
  if type(handler) ~= "function" then
    error("bad argument #2 to 'xpcall' (function expected)", 2)
  end
  local c = enter_protected()
  return rethrow(leave_protected(c, xpcall(f, function(e)
    if rawequal(e, TIMEOUT) or expired() then return TIMEOUT end
    return handler(e)
  end, ...)))
end

-- Waiting. A request runs as a *driver* coroutine (dispatch.lua); a trusted wrapper that
-- needs the host (req.body(), a response's status, http.request) calls K.wait(op, ...), which
-- yields EFFECT and the request to the driver. Tenant coroutines sit in between when a script
-- waits inside its own coroutine: safe_resume forwards such a yield outward and resumes the
-- inner coroutine with the answer, so waiting works at any depth. Answers come back behind
-- ANSWER, so a tenant resuming a coroutine that waits for the gateway cannot forge one.
-- Hooks are per thread: every coroutine gets the hook explicitly, again on each resume (a
-- timed-out one may still carry the sticky count of 1).
local EFFECT = setmetatable({}, { __metatable = false })
local ANSWER = setmetatable({}, { __metatable = false })
K.EFFECT, K.ANSWER = EFFECT, ANSWER
local DRIVERS = setmetatable({}, { __mode = "k" }) -- the requests' own coroutines
K.DRIVERS = DRIVERS
local co_yield, co_running, co_isyieldable = coroutine.yield, coroutine.running,
  coroutine.isyieldable
local pack, unpack = table.pack, table.unpack

-- The script line to blame for an error raised by a trusted wrapper (skipping our frames).
local function script_where()
  for level = 3, 40 do
    local info = getinfo(level, "Sl")
    if not info then break end
    if info.source == "=script" and info.currentline > 0 then
      return "script:" .. info.currentline .. ": "
    end
  end
  return ""
end
K.script_where = script_where

local function after_wait(ok, ...)
  if not rawequal(ok, ANSWER) then
    error(script_where() .. "a coroutine that was waiting for the gateway was resumed by the " ..
      "script; only the gateway can answer it", 0)
  end
  return ...
end

-- Called by trusted wrappers only. Returns the host's answer (after the ANSWER marker).
function K.wait(what, op, ...)
  if K.ctx == nil then
    error(script_where() .. what .. " can only be used while handling a request", 0)
  end
  if not co_isyieldable() then
    error(script_where() .. what .. " cannot wait for the gateway here: not inside " ..
      "table.sort comparators, string.gsub callbacks, __tostring or other library callbacks", 0)
  end
  return after_wait(co_yield(EFFECT, op, ...))
end

local function co_create_hooked(f)
  if type(f) ~= "function" then
    error("bad argument #1 to 'create' (function expected)", 2)
  end
  local co = co_create(f)
  sethook(co, hook, "", HOOK_COUNT)
  return co
end

-- An inner coroutine yielded EFFECT: pass the request outward, resume it with the answer,
-- until it yields something of its own or ends.
local function forward(co, ...)
  local res = pack(...)
  while res[1] and rawequal(res[2], EFFECT) and co_status(co) == "suspended" do
    if not co_isyieldable() then
      error(script_where() .. "a coroutine that waits for the gateway was resumed where " ..
        "waiting is impossible (inside a library callback)", 0)
    end
    local answer = pack(co_yield(unpack(res, 2, res.n)))
    if timed_out then error(TIMEOUT, 0) end
    sethook(co, hook, "", HOOK_COUNT)
    res = pack(co_resume(co, unpack(answer, 1, answer.n)))
  end
  return unpack(res, 1, res.n)
end

local function resumed(co, ok, first, ...)
  if ok and rawequal(first, EFFECT) then return forward(co, ok, first, ...) end
  return ok, first, ...
end

local function check_resumable(co)
  if DRIVERS[co] then error("cannot resume or close a request's own coroutine", 3) end
end

local function safe_resume(co, ...)
  if timed_out then error(TIMEOUT, 0) end
  check_resumable(co)
  if type(co) == "thread" and co_status(co) == "suspended" then
    sethook(co, hook, "", HOOK_COUNT)
  end
  return rethrow(resumed(co, co_resume(co, ...)))
end

local function wrap_results(ok, ...)
  if ok then return ... end
  local e = ...
  if rawequal(e, TIMEOUT) or expired() then error(TIMEOUT, 0) end
  error(e, 0)
end

local function safe_wrap(f)
  local co = co_create_hooked(f)
  return function(...)
    if timed_out then error(TIMEOUT, 0) end
    sethook(co, hook, "", HOOK_COUNT)
    return wrap_results(resumed(co, co_resume(co, ...)))
  end
end

local function safe_close(co)
  check_resumable(co)
  return rethrow(co_close(co))
end

-- Inside a request's own coroutine the script behaves as if it ran on the main thread.
local function safe_yield(...)
  if DRIVERS[co_running()] then error("attempt to yield from outside a coroutine", 2) end
  return co_yield(...)
end

local function safe_isyieldable()
  if DRIVERS[co_running()] then return false end
  return co_isyieldable()
end

local function safe_running()
  local co, main = co_running()
  if DRIVERS[co] then return co, true end
  return co, main
end

local function safe_setmetatable(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    -- Finalizers run inside the garbage collector with hooks disabled: no deadline applies.
    error("__gc metamethods are not allowed in scripts", 2)
  end
  return setmetatable(t, mt)
end

-- A view of `t` that can be read and iterated but not written. The real table never
-- reaches tenant code: __pairs returns a stateless iterator closed over `t` (not the
-- `next, t, nil` triple, whose state would be the real table), the proxy itself is empty
-- (next/rawget see nothing) and the metatable holding __index is protected.
local function readonly(t, name)
  local function iterate(_, k)
    return next(t, k)
  end
  return setmetatable({}, {
    __index = t,
    __newindex = function(_, k)
      error("'" .. name .. "' is read-only (tried to set '" .. tostring(k) .. "')", 2)
    end,
    __pairs = function(self) return iterate, self, nil end,
    __len = function() return rawlen(t) end,
    __metatable = "read-only " .. name,
  })
end
K.readonly = readonly

local function copy(t)
  local c = {}
  for k, v in next, t do c[k] = v end
  return c
end

-- Strings: the metatable of every string points at the (capped, dump-less) string table;
-- protect it so getmetatable("") yields a placeholder and nobody can reach or edit __index.
local string_mt = getmetatable("")
string_mt.__metatable = "string metatable (protected)"
string.dump = nil

local coroutine_lib = {
  create = co_create_hooked,
  resume = safe_resume,
  wrap = safe_wrap,
  close = safe_close,
  yield = safe_yield,
  status = coroutine.status,
  running = safe_running,
  isyieldable = safe_isyieldable,
}

-- The allow-list. K.helpers (json, base64, crypto, log, time, proxy...) is added by the
-- other modules before make_env is called.
local function base_globals()
  return {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    pcall = safe_pcall, xpcall = safe_xpcall, select = select, tonumber = tonumber,
    tostring = tostring, type = type, rawequal = rawequal, rawget = rawget, rawlen = rawlen,
    setmetatable = safe_setmetatable, getmetatable = getmetatable,
    unpack = table.unpack, _VERSION = _VERSION,
    -- copies made here, after caps.lua has patched the real tables
    string = readonly(string, "string"),
    table = readonly(copy(table), "table"),
    math = readonly(copy(math), "math"),
    utf8 = readonly(copy(utf8), "utf8"),
    coroutine = readonly(coroutine_lib, "coroutine"),
  }
end

-- The tenant's environment while it registers: globals may be written.
function K.make_env()
  local base = base_globals()
  for k, v in next, K.helpers do base[k] = v end
  local env = {}
  base._G = env
  setmetatable(env, { __index = base, __metatable = false })
  K.base = base
  K.env = env
  return env
end

-- After registration: every global the script defined stays readable, no write succeeds.
-- Tenant functions keep the same _ENV table, so freezing it applies to all of them.
function K.freeze()
  local env, store = K.env, copy(K.base)
  for k, v in next, env do store[k] = v end
  for k in next, store do
    if rawget(env, k) ~= nil then env[k] = nil end
  end
  debug_setmetatable(env, {
    __index = store,
    __newindex = function(_, k)
      error("cannot set global '" .. tostring(k) ..
        "' while handling a request: globals are read-only after the script has loaded " ..
        "(use a local variable)", 2)
    end,
    __metatable = false,
  })
  K.globals = store
end

-- Compile tenant text: text mode only, in the sandbox env, under a fixed chunk name so
-- messages read "script:LINE: ...".
--
-- Any failure is returned as (nil, "script:LINE: message"), never raised: a source nested
-- beyond the C-stack limit makes the parser *raise* "C stack overflow" (with no location,
-- and a traceback through the sandbox if it escaped). Such a message is located at the
-- line where the brackets are nested deepest, the likeliest place of the overflow.
local s_find, s_gmatch, s_gsub = string.find, string.gmatch, string.gsub

local function deepest_line(src)
  local depth, best, best_line, line = 0, -1, 1, 0
  for text in s_gmatch(src, "[^\n]*") do
    line = line + 1
    local opened = select(2, s_gsub(text, "[%(%[{]", ""))
    local closed = select(2, s_gsub(text, "[%)%]}]", ""))
    if depth + opened > best then best, best_line = depth + opened, line end
    depth = depth + opened - closed
  end
  return best_line
end

function K.compile(src)
  local ok, chunk, err = pcall(load, src, "=script", "t", K.env)
  if ok and chunk then return chunk end
  if not ok then err = chunk end
  if timed_out or rawequal(err, TIMEOUT) then error(TIMEOUT, 0) end
  if type(err) ~= "string" then err = "the script could not be compiled" end
  if s_find(err, "^script:%d+:") then return nil, err end
  err = s_gsub(err, "\n.*", "") -- never a traceback, only the first line
  if err == "not enough memory" then return nil, err end
  if s_find(err, "stack overflow", 1, true) then
    err = "the script is nested too deeply (" .. err .. ")"
  end
  return nil, "script:" .. deepest_line(src) .. ": " .. err
end

-- The message handler of the host's protected calls. It runs inside the protected call,
-- under the hook. An error object that is not a string is described, never converted:
-- its __tostring is tenant code that could loop or fail.
local traceback = debug.traceback
function K.on_error(e)
  if rawequal(e, TIMEOUT) or expired() then return TIMEOUT end
  local t = type(e)
  if t == "number" then
    e = tostring(e)
  elseif t ~= "string" then
    e = "error() was called with a " .. t .. " value, not a message string"
  end
  return traceback(e, 2)
end

-- What the host needs to drive a protected call without running Lua outside it.
K.xpcall = xpcall
K.sethook = sethook
K.traceback = traceback
K.collect = collectgarbage
