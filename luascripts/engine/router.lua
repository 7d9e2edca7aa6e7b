-- router.lua: the chi-like registration API (chi, chi.router(), r.get, r.use, ...).
--
-- Registration only records: every call appends a record (with the script line it came
-- from) that the host turns into route trees once the script has run. Checks that depend
-- on call order -- use() after routes, registering after load -- are made here, at the
-- call, so the error points at the offending line. Pattern syntax and mounts on a path a
-- router already serves are checked by the host (patterns.py, routes.py), which knows
-- chi's tree and reports every such problem at once, each with the line of its record.

local K = ...

local type, tostring, error, select, next = type, tostring, error, select, next
local rawequal, setmetatable = rawequal, setmetatable
local getinfo = debug.getinfo
local S = K.S
local upper = S.upper
local concat = table.concat

local MAX_RECORDS = 5000
local METHOD_NAMES = { "get", "post", "put", "patch", "delete", "head", "options", "trace",
  "connect", "query" }
local KNOWN_METHODS = { GET = true, POST = true, PUT = true, PATCH = true, DELETE = true,
  HEAD = true, OPTIONS = true, TRACE = true, CONNECT = true, QUERY = true, ["*"] = true }

local open = false          -- registration window
local records, nrec = {}, 0 -- flat: 7 fields per record
local F, FID, nfn = {}, {}, 0 -- functions by id and ids by function
local ROUTERS = setmetatable({}, { __mode = "k" }) -- router table -> state
local muxes, nmux = {}, 0

K.F = F

-- The line of the innermost tenant frame (skipping our own and C frames).
local function script_line()
  for level = 3, 40 do
    local info = getinfo(level, "Sl")
    if not info then break end
    if info.source == "=script" and info.currentline > 0 then return info.currentline end
  end
  return 0
end

-- Errors raised at the tenant's call site; `level` 3 = the caller of the API function.
local function fail(msg)
  local line = script_line()
  if line > 0 then error("script:" .. line .. ": " .. msg, 0) end
  error(msg, 0)
end

local function fn_id(f)
  local id = FID[f]
  if not id then
    nfn = nfn + 1
    id = nfn
    F[id], FID[f] = f, id
  end
  return id
end

-- Records are laid out as luascripts/engine/boundary.py declares (K.layout.route_record,
-- ...): STRIDE values each, fields placed by name, the script line last.
local L = K.layout
local STRIDE = L.offsets.registration_stride
local LAYOUT = { route = L.route_record, mount = L.mount_record, not_found = L.handler_record,
  method_not_allowed = L.handler_record, mux = L.mux_record, label = L.label_record }

local function put(out, base, kind, fields, line)
  local layout = LAYOUT[kind]
  for i = 1, STRIDE do out[base + i] = "" end
  out[base + layout.kind] = kind
  for name, value in next, fields do out[base + layout[name]] = value end
  out[base + STRIDE] = line
end

local function record(kind, fields)
  if nrec >= MAX_RECORDS * STRIDE then
    fail("too many routes: a script may register at most " .. MAX_RECORDS)
  end
  put(records, nrec, kind, fields, script_line())
  nrec = nrec + STRIDE
end

local function ids(list)
  local out = {}
  for i = 1, #list do out[i] = tostring(list[i]) end
  return concat(out, ",")
end

local function check_open(what)
  if not open then
    fail(what .. "() can only be called while the script loads, not from a handler")
  end
end

local function check_fn(v, what)
  if type(v) ~= "function" then
    fail(what .. " must be a function, got " .. type(v))
  end
end

local function check_pattern(v, what)
  if type(v) ~= "string" then fail(what .. " must be a string, got " .. type(v)) end
  if #v > 2048 then fail(what .. " is longer than 2048 bytes") end
end

local new_router

local function new_mux()
  nmux = nmux + 1
  local mux = { id = nmux, mws = {}, sealed = false }
  muxes[nmux] = mux
  return mux
end

-- Methods accept both r.get(p, h) and r:get(p, h).
local function method(r, impl)
  return function(...)
    if rawequal((...), r) then return impl(select(2, ...)) end
    return impl(...)
  end
end

-- `inline` is nil for a mux's own router, or the list of middleware of a with()/group().
new_router = function(mux, inline)
  local r = {}
  local state = { mux = mux, inline = inline, sealed = false }
  ROUTERS[r] = state

  local function seal()
    if inline then state.sealed = true else mux.sealed = true end
  end

  local function add(m, pattern, handler)
    check_open("route")
    check_pattern(pattern, "the route pattern")
    check_fn(handler, "the handler")
    seal()
    record("route", { mux = mux.id, method = m, pattern = pattern, handler = fn_id(handler),
      middleware = ids(inline or {}) })
  end

  for _, name in next, METHOD_NAMES do
    local m = upper(name)
    r[name] = method(r, function(pattern, handler) add(m, pattern, handler) end)
  end

  local function handle(m, pattern, handler)
    if type(m) ~= "string" then fail("the method must be a string such as \"GET\" or \"*\"") end
    local mu = upper(m)
    if not KNOWN_METHODS[mu] then
      fail("unknown HTTP method '" .. m .. "' (use GET, POST, PUT, PATCH, DELETE, HEAD, " ..
        "OPTIONS, TRACE, CONNECT, QUERY or \"*\")")
    end
    add(mu, pattern, handler)
  end
  r.handle = method(r, handle)
  r.method = r.handle

  r.use = method(r, function(...)
    check_open("use")
    local n = select("#", ...)
    if n == 0 then fail("use() needs at least one middleware function") end
    if (inline and state.sealed) or (not inline and mux.sealed) then
      fail("use() must come before any route, mount, group or with() on this router " ..
        "(all middlewares must be defined before routes, as in chi)")
    end
    for i = 1, n do
      local mw = select(i, ...)
      check_fn(mw, "middleware")
      local list = inline or mux.mws
      list[#list + 1] = fn_id(mw)
    end
  end)

  local function with(...)
    check_open("with")
    local mws = {}
    for i = 1, #(inline or {}) do mws[i] = inline[i] end
    for i = 1, select("#", ...) do
      local mw = select(i, ...)
      check_fn(mw, "middleware")
      mws[#mws + 1] = fn_id(mw)
    end
    if not inline then mux.sealed = true end
    return new_router(mux, mws)
  end
  r.with = method(r, with)

  r.group = method(r, function(fn)
    check_open("group")
    check_fn(fn, "group()'s argument")
    local g = with()
    fn(g)
    return g
  end)

  local function mount(prefix, target)
    check_open("mount")
    check_pattern(prefix, "the mount prefix")
    local kind, value
    if type(target) == "string" then
      if target == "" or #target > 200 then fail("the backend name must be 1 to 200 bytes") end
      kind, value = "backend", target
    elseif type(target) == "table" and ROUTERS[target] then
      local ts = ROUTERS[target]
      if ts.inline then
        fail("mount() needs a router made with chi.router(), not one from with() or group()")
      end
      kind, value = "router", tostring(ts.mux.id)
    else
      fail("mount() target must be a backend name or a router made with chi.router()")
    end
    seal()
    record("mount", { mux = mux.id, prefix = prefix, target_kind = kind, target = value,
      middleware = ids(inline or {}) })
  end
  r.mount = method(r, mount)

  r.route = method(r, function(prefix, fn)
    check_open("route")
    check_pattern(prefix, "the route prefix")
    check_fn(fn, "route()'s second argument")
    local sub_router = new_router(new_mux(), nil)
    fn(sub_router)
    mount(prefix, sub_router)
    return sub_router
  end)

  local function special(kind)
    return method(r, function(handler)
      check_open(kind)
      check_fn(handler, "the handler")
      record(kind, { mux = mux.id, handler = fn_id(handler), middleware = ids(inline or {}) })
    end)
  end
  r.not_found = special("not_found")
  r.method_not_allowed = special("method_not_allowed")

  return r
end

function K.begin_registration(env)
  records, nrec, muxes, nmux = {}, 0, {}, 0
  local root = new_router(new_mux(), nil)
  root.router = function()
    check_open("chi.router")
    return new_router(new_mux(), nil)
  end
  env.chi = root
  env.chi_route = function(m, pattern, handler) return root.handle(m, pattern, handler) end
  env.chi_middleware = function(...) return root.use(...) end
  open = true
end

function K.end_registration()
  open = false
end

-- Labels for middleware, for the dry run: "name (line N)" when the function is a global of
-- the script (Lua knows no other name for a function value once registration has run),
-- else "line N", the line it was defined on. The admin, which has the source, names a
-- local function from that line (luascripts.middleware_names).
-- The standard middleware label their functions themselves (K.function_labels, helpers.lua):
-- "middleware.jwt", "middleware.rate_limit (line N)", N the script line that built it.

local function labels(globals)
  local names = {}
  for k, v in next, globals do
    if type(k) == "string" and type(v) == "function" then
      -- Two globals for one function: keep the alphabetically first, so labels are stable.
      if names[v] == nil or k < names[v] then names[v] = k end
    end
  end
  local out = {}
  for id = 1, nfn do
    local f = F[id]
    local line = "line " .. tostring(getinfo(f, "S").linedefined)
    out[id] = K.function_labels[f] or names[f] and (names[f] .. " (" .. line .. ")") or line
  end
  return out
end

-- Everything the host needs, as one flat list of plain strings and numbers.
function K.export(globals)
  local out, n = {}, 0
  for i = 1, nrec do out[i] = records[i] end
  n = nrec
  for id = 1, nmux do
    put(out, n, "mux", { mux = id, middleware = ids(muxes[id].mws),
      used = muxes[id].sealed and 1 or 0 }, 0)
    n = n + STRIDE
  end
  local names = labels(globals or {})
  for id = 1, nfn do
    put(out, n, "label", { ["function"] = id, label = names[id] }, 0)
    n = n + STRIDE
  end
  return table.unpack(out, 1, n)
end

function K.route_count()
  return nrec // STRIDE
end
