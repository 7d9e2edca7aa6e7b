-- dispatch.lua: middleware chains, the per-request entry points, and registration.
--
-- Per request the host makes exactly one call, xpcall(K.run, K.on_error, ...), with the
-- chain (middleware..., terminal) already chosen by the Python matcher. run() builds `req`,
-- runs the chain, checks the result here in the sandbox -- with rawget and type checks,
-- under the deadline -- and returns only flat strings, numbers and nils:
--   ran, request_headers_blob|nil, logs_blob|nil, dropped_logs, kind, fields...
-- (see actions.lua for the kinds). The host never reads a tenant table.

local K = ...

local type, error, select, rawget = type, error, select, rawget
local concat, unpack = table.concat, K.raw_unpack
local arm, disarm, reset_logs, take_logs = K.arm, K.disarm, K.reset_logs, K.take_logs
local finish, new_request, changed_headers = K.finish, K.new_request, K.changed_headers

---------------------------------------------------------------------------- chains
local CHAINS = {}
local ROUTER_DEFAULT, MOUNT_PROXY = K.ROUTER_DEFAULT, K.MOUNT_PROXY
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
  local step = chain[i]
  local previous = K.current
  K.current = step
  local result
  if i == chain.n then
    result = step(req)
  else
    if i > ran then ran = i end
    result = step(req, function(r2)
      if r2 == nil then r2 = req end
      if type(r2) ~= "table" then error("next() expects the request table", 2) end
      return invoke(chain, i + 1, r2)
    end)
  end
  K.current = previous
  return result
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
  ran, K.current = 0, nil
  local params = {}
  for i = 1, select("#", ...), 2 do
    local k, v = select(i, ...)
    params[k] = v
  end
  local req, headers = new_request(method, path, qs, host, scheme, client_ip, tenant,
    request_id, pattern, blob, params)
  local result = invoke(CHAINS[chain_id], 1, req)
  return encode(req, headers, finish(result, false, nil))
end

-- Selector scripts: on_route_request(request, backends) for every request.
function K.run_selector(dl, method, path, qs, host, scheme, client_ip, tenant, request_id,
                        blob, ...)
  arm(dl)
  reset_logs()
  ran, K.current = 0, nil
  local backends, names = {}, {}
  for i = 1, select("#", ...), 4 do
    local name, url, weight, healthy = select(i, ...)
    backends[#backends + 1] = { name = name, url = url, weight = weight, healthy = healthy }
    names[#names + 1] = name
  end
  local req, headers = new_request(method, path, qs, host, scheme, client_ip, tenant,
    request_id, nil, blob, {})
  local pool = #names > 0 and concat(names, "\0") or nil
  K.current = K.globals.on_route_request
  local result = K.current(req, backends)
  K.current = nil
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
