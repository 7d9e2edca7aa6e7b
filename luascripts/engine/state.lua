-- state.lua: shared.* and limit.allow (state shared by every worker of every node), and
-- middleware.rate_limit built on them.
--
-- Each call is validated here (a bad argument is an error at the script's line), then waits
-- (K.wait): the host answers from the tenant's shared store (routing.shared_state: Redis
-- when CHISTONE_REDIS_URL is set, else the worker's memory; a private in-memory store in
-- dry runs, script tests and shadows). Keys are names inside the tenant's own namespace:
-- the host adds the tenant, so no bytes a script puts in a key reach another tenant's state.
-- Failures come back as `nil, reason` ("quota", "unavailable"), never as errors: a script
-- decides what a missing store means for its traffic.

local K = ...
local S = K.S

local type, tostring, next, rawget, error = type, tostring, next, rawget, error
local math_type, ceil, huge = math.type, math.ceil, math.huge
local getinfo = debug.getinfo
local format = S.format
local limits, wait, script_where = K.limits, K.wait, K.script_where

-- An error at the script line that called (the checks run a few frames below it); after a
-- tail call, the line of the running handler or middleware (K.script_error).
local function script_error(msg)
  local where = script_where()
  if where ~= "" then error(where .. msg, 0) end
  K.script_error(msg)
end
local LSA, LLA = K.layout.shared_answer, K.layout.limit_answer

local MAX_KEY_BYTES = 512
local MAX_VALUE_BYTES = 64 * 1024
local MAX_TTL_S = 366 * 86400
local MAX_DELTA = 2 ^ 53
local MAX_RATE = 100000
local MAX_WINDOW_S = 86400

local function check_key(fn, key)
  if math_type(key) == "integer" then key = tostring(key) end
  if type(key) ~= "string" then
    script_error(fn .. ": the key must be a string, got " .. type(key))
  end
  if #key == 0 or #key > MAX_KEY_BYTES then
    script_error(fn .. ": the key must be 1 to " .. MAX_KEY_BYTES .. " bytes, got " .. #key)
  end
  return key
end

local function finite(n)
  return n == n and n ~= huge and n ~= -huge
end

local function check_ttl(fn, ttl)
  if ttl == nil then return nil end
  if type(ttl) ~= "number" or not finite(ttl) or ttl <= 0 or ttl > MAX_TTL_S then
    script_error(fn .. ": ttl_s must be a number of seconds above 0 and at most " ..
      MAX_TTL_S .. " (or nil: no expiry), got " .. tostring(ttl))
  end
  return ttl
end

-- One call to the shared store: counted against max_state_calls, then the host's answer.
local function ask(fn, ...)
  local ctx = K.ctx
  if ctx == nil then script_error(fn .. " can only be called while handling a request") end
  local n = (ctx.state_calls or 0) + 1
  ctx.state_calls = n
  if n > limits.max_state_calls then
    script_error(fn .. ": more than " .. limits.max_state_calls ..
      " shared-state calls in one request (max_state_calls)")
  end
  return { wait(fn, ...) }
end

local function shared_answer(answer)
  local err = answer[LSA.error]
  if err ~= nil then return nil, err end
  return answer[LSA.value]
end

local function get(key)
  key = check_key("shared.get()", key)
  return shared_answer(ask("shared.get()", "shared", "get", key))
end

local function set(key, value, ttl_s)
  key = check_key("shared.set()", key)
  local t = type(value)
  if t == "number" then
    if not finite(value) then
      script_error("shared.set(): a number value must be finite, got " .. tostring(value))
    end
  elseif t ~= "string" then
    script_error("shared.set(): the value must be a string or a number, got " .. t ..
      " (shared.delete(key) removes a key)")
  elseif #value > MAX_VALUE_BYTES then
    script_error("shared.set(): the value is " .. #value .. " bytes; the limit is " ..
      MAX_VALUE_BYTES)
  end
  ttl_s = check_ttl("shared.set()", ttl_s)
  return shared_answer(ask("shared.set()", "shared", "set", key, value, ttl_s))
end

local function incr(key, delta, ttl_s)
  key = check_key("shared.incr()", key)
  if delta == nil then delta = 1 end
  if math_type(delta) == "float" and delta == delta // 1 and finite(delta) then
    delta = delta // 1
  end
  if math_type(delta) ~= "integer" or delta > MAX_DELTA or delta < -MAX_DELTA then
    script_error("shared.incr(): delta must be an integer (at most 2^53 either way), got " ..
      tostring(delta))
  end
  ttl_s = check_ttl("shared.incr()", ttl_s)
  return shared_answer(ask("shared.incr()", "shared", "incr", key, nil, ttl_s, delta))
end

local function delete(key)
  key = check_key("shared.delete()", key)
  return shared_answer(ask("shared.delete()", "shared", "delete", key))
end

K.helpers.shared = K.readonly({ get = get, set = set, incr = incr, delete = delete }, "shared")

---------------------------------------------------------------------------- limit.allow
local function check_count(fn, what, n, max)
  if math_type(n) == "float" and n == n // 1 then n = n // 1 end
  if math_type(n) ~= "integer" or n < 1 or n > max then
    script_error(fn .. ": " .. what .. " must be an integer from 1 to " .. max .. ", got " ..
      tostring(n))
  end
  return n
end

local function fail_mode(fn, opts)
  if opts == nil then return false end
  if type(opts) ~= "table" then script_error(fn .. ": options must be a table") end
  for k in next, opts do
    if k ~= "fail" then
      script_error(fn .. ": unknown option '" .. tostring(k) .. "' (known: fail)")
    end
  end
  local fail = rawget(opts, "fail")
  if fail == nil or fail == "open" then return false end
  if fail == "closed" then return true end
  script_error(fn .. ": fail must be \"open\" (the default) or \"closed\", got " ..
    tostring(fail))
end

local function allow(key, rate, window_s, opts)
  local fn = "limit.allow()"
  key = check_key(fn, key)
  rate = check_count(fn, "rate", rate, MAX_RATE)
  window_s = check_count(fn, "window_s", window_s, MAX_WINDOW_S)
  local closed = fail_mode(fn, opts)
  local a = ask(fn, "limit", key, rate, window_s, closed)
  local info = { limit = a[LLA.limit], remaining = a[LLA.remaining], reset_s = a[LLA.reset_s],
    degraded = a[LLA.degraded] == true }
  return a[LLA.allowed] == true, info
end

K.helpers.limit = K.readonly({ allow = allow }, "limit")

---------------------------------------------------------------------------- rate_limit
local KEY_KINDS = "\"ip\", \"header:NAME\" or a function(req)"
local RATE_LIMIT_OPTS = { rate = true, per = true, key = true, fail = true, name = true }

-- The limit's key for one request: the client's address, a header's value (the address when
-- the header is missing, so clients cannot skip the limit by leaving it out), or the
-- script's own function of the request.
local function key_function(key)
  if key == nil or key == "ip" then
    return "ip", function(req) return req.client_ip end
  end
  if type(key) == "function" then
    return "fn", function(req)
      local k = key(req)
      if math_type(k) == "integer" then k = tostring(k) end
      if type(k) ~= "string" or #k == 0 then
        script_error("middleware.rate_limit: the key function must return a non-empty " ..
          "string, got " .. type(k))
      end
      return k
    end
  end
  if type(key) == "string" and S.sub(key, 1, 7) == "header:" and #key > 7 then
    local name = S.lower(S.sub(key, 8))
    local ok, err = K.check_header_name(name)
    if not ok then script_error("middleware.rate_limit: key " .. err) end
    return "h:" .. name, function(req)
      local v = req.headers[name]
      if v == nil or v == "" then return "ip:" .. req.client_ip end
      return "v:" .. v
    end
  end
  script_error("middleware.rate_limit: key must be " .. KEY_KINDS .. ", got " .. tostring(key))
end

local reject, as_response = K.helpers.reject, K.as_response
local UNCHECKED = "The rate limit cannot be checked now; try again shortly."

-- The three headers, written into the response's header overlay directly: the names are
-- constants and the values integers, so res.headers' per-write checks are not needed (this
-- runs on every rate-limited answer).
local header_state, tostring_ = K.header_state, tostring
local L1, L2, L3 = "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"
local function set_headers(res, limit, remaining, reset)
  local hst = header_state(res.headers)
  local overlay = hst.overlay
  if overlay == nil then
    overlay = {}
    hst.overlay, hst.noverlay = overlay, 0
  end
  local n = hst.noverlay
  if overlay[L1] == nil then n = n + 1 end
  if overlay[L2] == nil then n = n + 1 end
  if overlay[L3] == nil then n = n + 1 end
  hst.noverlay = n
  overlay[L1], overlay[L2], overlay[L3] = tostring_(limit), tostring_(remaining),
    tostring_(reset)
end

local function rate_limit(opts)
  local fn = "middleware.rate_limit"
  if type(opts) ~= "table" then
    script_error(fn .. " takes a table: middleware.rate_limit{rate = 100, per = 60, " ..
      "key = \"ip\"}")
  end
  for k in next, opts do
    if not RATE_LIMIT_OPTS[k] then
      script_error(fn .. ": unknown option '" .. tostring(k) ..
        "' (known: rate, per, key, fail, name)")
    end
  end
  local rate = check_count(fn, "rate", rawget(opts, "rate"), MAX_RATE)
  local per = check_count(fn, "per", rawget(opts, "per") or 60, MAX_WINDOW_S)
  local kind, key_of = key_function(rawget(opts, "key"))
  local closed = fail_mode(fn, { fail = rawget(opts, "fail") })
  local name = rawget(opts, "name")
  if name ~= nil and (type(name) ~= "string" or #name == 0 or #name > 64) then
    script_error(fn .. ": name must be a string of 1 to 64 bytes")
  end
  -- Middleware with the same rate, period and key kind share their counters unless named
  -- apart; the kind keeps "ip" and "header:x" keys from ever meeting.
  local prefix = format("rl:%s:%d/%d:%s:", name or "", rate, per, kind)
  local message = format("Too many requests: the limit is %d per %d s.", rate, per)
  local caller = getinfo(2, "Sl")
  local mw = function(req, next)
    local k = prefix .. key_of(req)
    if #k > MAX_KEY_BYTES then k = prefix .. "#" .. K.helpers.crypto.sha256(k) end
    -- (limit.allow's checks were made once, above; the call itself per request)
    local a = ask(fn, "limit", k, rate, per, closed)
    local remaining, reset = a[LLA.remaining], ceil(a[LLA.reset_s])
    -- Several rate limits on one request (chi.use and r.with, say): the answer shows the
    -- one with the least left, whichever middleware writes the headers last.
    local ctx = K.ctx
    local shown = ctx.ratelimit
    if shown == nil or remaining < shown[2] then
      shown = { rate, remaining, reset }
      ctx.ratelimit = shown
    end
    if a[LLA.allowed] ~= true then
      -- Over the limit: 429. Refused because the limit could not be checked (fail =
      -- "closed" while the store is unavailable): 503, the client exceeded nothing.
      local res = as_response(ctx, a[LLA.degraded] and reject(503, UNCHECKED) or
        reject(429, message), req)
      set_headers(res, rate, 0, reset)
      res.headers["retry-after"] = reset > 0 and reset or 1
      return res
    end
    local res = next(req)
    shown = ctx.ratelimit
    if K.response_state(res) then set_headers(res, shown[1], shown[2], shown[3]) end
    return res
  end
  if caller and caller.source == "=script" then
    K.function_labels[mw] = "middleware.rate_limit (line " .. caller.currentline .. ")"
  end
  return mw
end

K.middleware.rate_limit = rate_limit
