-- helpers.lua: json, base64, crypto, log and time for tenant scripts.
--
-- json and base64 are pure Lua, so they run under the deadline like tenant code. The hash
-- functions and the clock call Python (hashlib, time.time): each Python callable is held
-- only as an upvalue of a Lua closure that checks its arguments first, so a script never
-- holds a Python object and can never pass one anything but a bounded string.

local K = ...
local S = K.S

local type, tostring, tonumber, error, select, next = type, tostring, tonumber, error, select,
  next
local rawget, rawlen, pcall, setmetatable = rawget, rawlen, pcall, setmetatable
local math_type, huge = math.type, math.huge
local concat, sort = table.concat, table.sort
local find, sub, byte, char, format, gsub = S.find, S.sub, S.byte, S.char, S.format, S.gsub
local utf8_char = utf8.char

local py_now, py_sha256, py_hmac = K.py_now, K.py_sha256, K.py_hmac
K.py_now, K.py_sha256, K.py_hmac = nil, nil, nil

local limits = K.limits -- luascripts.engine.types.Limits, by field name

local helpers = {}
K.helpers = helpers
K.middleware = {} -- the standard middleware's constructors (published by middleware.lua)
-- function -> its label in the dry run, for functions made by trusted code (the standard
-- middleware: "middleware.jwt"), which have no line of the script to show.
K.function_labels = setmetatable({}, { __mode = "k" })

---------------------------------------------------------------------------- json
local json = {}
local null = setmetatable({}, {
  __tostring = function() return "null" end,
  __newindex = function() error("json.null is read-only", 2) end,
  __metatable = "json.null",
})
json.null = null

local ESCAPES = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
  ["\r"] = "\\r", ["\t"] = "\\t",
}
local function escape_char(c)
  return ESCAPES[c] or format("\\u%04x", byte(c))
end

local function encode_string(s)
  return '"' .. gsub(s, '[%c"\\]', escape_char) .. '"'
end

local encode_value

local function is_array(t)
  local n = rawlen(t)
  local count = 0
  for k in next, t do
    if math_type(k) ~= "integer" or k < 1 or k > n then return false end
    count = count + 1
  end
  return count == n and n > 0
end

encode_value = function(v, depth, out)
  local t = type(v)
  if v == nil or v == null then
    out[#out + 1] = "null"
  elseif t == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif t == "number" then
    if v ~= v or v == huge or v == -huge then
      error("json.encode: cannot encode NaN or infinity", 0)
    end
    out[#out + 1] = math_type(v) == "integer" and format("%d", v) or format("%.17g", v)
  elseif t == "string" then
    out[#out + 1] = encode_string(v)
  elseif t == "table" then
    if depth > 64 then error("json.encode: nested more than 64 levels (a cycle?)", 0) end
    if is_array(v) then
      out[#out + 1] = "["
      for i = 1, rawlen(v) do
        if i > 1 then out[#out + 1] = "," end
        encode_value(rawget(v, i), depth + 1, out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in next, v do
        local kt = type(k)
        if kt ~= "string" and kt ~= "number" then
          error("json.encode: object keys must be strings or numbers", 0)
        end
        keys[#keys + 1] = tostring(k)
      end
      sort(keys)
      out[#out + 1] = "{"
      for i, k in next, keys do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = encode_string(k)
        out[#out + 1] = ":"
        local val = rawget(v, k)
        if val == nil then val = rawget(v, tonumber(k)) end
        encode_value(val, depth + 1, out)
      end
      out[#out + 1] = "}"
    end
  else
    error("json.encode: cannot encode a " .. t .. " value", 0)
  end
end

function json.encode(v)
  local out = {}
  local ok, err = pcall(encode_value, v, 0, out)
  if not ok then
    if err == K.TIMEOUT then error(err, 0) end
    error(err, 2)
  end
  local s = concat(out)
  if #s > limits.max_string_bytes then error("json.encode: result is over the string limit", 2) end
  return s
end

-- Decoder: recursive descent over positions; every loop step is a VM instruction, so the
-- deadline applies to it.
local decode_value

local function skip(s, i)
  local _, e = find(s, "^[ \t\r\n]*", i)
  return e + 1
end

local function decode_error(s, i, what)
  error(format("json.decode: %s at position %d", what, i), 0)
end

local function decode_string(s, i)
  local parts, j = {}, i + 1
  while true do
    local a, b = find(s, '^[^"\\%c]+', j)
    if a then
      parts[#parts + 1] = sub(s, a, b)
      j = b + 1
    end
    local c = sub(s, j, j)
    if c == '"' then return concat(parts), j + 1 end
    if c ~= "\\" then decode_error(s, j, "unterminated string or control character") end
    local e = sub(s, j + 1, j + 1)
    local simple = ({ ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f",
      n = "\n", r = "\r", t = "\t" })[e]
    if simple then
      parts[#parts + 1] = simple
      j = j + 2
    elseif e == "u" then
      local hex = sub(s, j + 2, j + 5)
      if not find(hex, "^%x%x%x%x$") then decode_error(s, j, "bad \\u escape") end
      local cp = tonumber(hex, 16)
      j = j + 6
      if cp >= 0xD800 and cp <= 0xDBFF and sub(s, j, j + 1) == "\\u" then
        local lo = tonumber(sub(s, j + 2, j + 5), 16)
        if lo and lo >= 0xDC00 and lo <= 0xDFFF then
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
          j = j + 6
        end
      end
      parts[#parts + 1] = utf8_char(cp)
    else
      decode_error(s, j, "bad escape")
    end
  end
end

decode_value = function(s, i, depth)
  if depth > 64 then decode_error(s, i, "nested more than 64 levels") end
  i = skip(s, i)
  local c = sub(s, i, i)
  if c == "{" then
    local obj = {}
    i = skip(s, i + 1)
    if sub(s, i, i) == "}" then return obj, i + 1 end
    while true do
      if sub(s, i, i) ~= '"' then decode_error(s, i, "expected a string key") end
      local key
      key, i = decode_string(s, i)
      i = skip(s, i)
      if sub(s, i, i) ~= ":" then decode_error(s, i, "expected ':'") end
      obj[key], i = decode_value(s, i + 1, depth + 1)
      i = skip(s, i)
      local d = sub(s, i, i)
      if d == "}" then return obj, i + 1 end
      if d ~= "," then decode_error(s, i, "expected ',' or '}'") end
      i = skip(s, i + 1)
    end
  elseif c == "[" then
    local arr, n = {}, 0
    i = skip(s, i + 1)
    if sub(s, i, i) == "]" then return arr, i + 1 end
    while true do
      n = n + 1
      arr[n], i = decode_value(s, i, depth + 1)
      i = skip(s, i)
      local d = sub(s, i, i)
      if d == "]" then return arr, i + 1 end
      if d ~= "," then decode_error(s, i, "expected ',' or ']'") end
      i = i + 1
    end
  elseif c == '"' then
    return decode_string(s, i)
  elseif find(s, "^true", i) then
    return true, i + 4
  elseif find(s, "^false", i) then
    return false, i + 5
  elseif find(s, "^null", i) then
    return null, i + 4
  else
    local a, b = find(s, "^-?%d+%.?%d*[eE]?[-+]?%d*", i)
    if not a then decode_error(s, i, "unexpected character") end
    local num = tonumber(sub(s, a, b))
    if not num then decode_error(s, i, "bad number") end
    return num, b + 1
  end
end

function json.decode(s)
  if type(s) ~= "string" then error("json.decode: expected a string, got " .. type(s), 2) end
  if #s > limits.max_string_bytes then error("json.decode: input is over the string limit", 2) end
  local ok, v, i = pcall(decode_value, s, 1, 0)
  if not ok then
    if v == K.TIMEOUT then error(v, 0) end
    error(v, 2)
  end
  if skip(s, i) <= #s then error(format("json.decode: trailing data at position %d", i), 2) end
  return v
end

helpers.json = K.readonly(json, "json")

---------------------------------------------------------------------------- base64
local base64 = {}
local ALPHA = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local ENC, DEC = {}, {}
for i = 1, 64 do
  ENC[i - 1] = sub(ALPHA, i, i)
  DEC[byte(ALPHA, i)] = i - 1
end

function base64.encode(s)
  if type(s) ~= "string" then error("base64.encode: expected a string, got " .. type(s), 2) end
  if #s > limits.max_string_bytes // 2 then error("base64.encode: input is too long", 2) end
  local out, n = {}, #s
  for i = 1, n, 3 do
    local a, b, c = byte(s, i, i + 2)
    local v = (a << 16) | ((b or 0) << 8) | (c or 0)
    out[#out + 1] = ENC[(v >> 18) & 63] .. ENC[(v >> 12) & 63] ..
      (b and ENC[(v >> 6) & 63] or "=") .. (c and ENC[v & 63] or "=")
  end
  return concat(out)
end

function base64.decode(s)
  if type(s) ~= "string" then error("base64.decode: expected a string, got " .. type(s), 2) end
  if #s > limits.max_string_bytes then error("base64.decode: input is too long", 2) end
  s = gsub(s, "[%s=]+$", "")
  s = gsub(s, "%s", "")
  -- accept the URL-safe alphabet too
  s = gsub(s, "[-_]", { ["-"] = "+", ["_"] = "/" })
  if #s % 4 == 1 then return nil, "invalid base64 length" end
  local out = {}
  for i = 1, #s, 4 do
    local v, count = 0, 0
    for j = i, i + 3 do
      local c = byte(s, j)
      if c then
        local d = DEC[c]
        if not d then return nil, "invalid base64 character at position " .. j end
        v = (v << 6) | d
        count = count + 1
      end
    end
    v = v << (6 * (4 - count))
    local bytes = count - 1
    out[#out + 1] = sub(char((v >> 16) & 255, (v >> 8) & 255, v & 255), 1, bytes)
  end
  return concat(out)
end

helpers.base64 = K.readonly(base64, "base64")

---------------------------------------------------------------------------- crypto
local crypto = {}

local function bounded(s, fn, argn)
  if type(s) == "number" then s = tostring(s) end
  if type(s) ~= "string" then
    error(format("crypto.%s: argument #%d must be a string, got %s", fn, argn, type(s)), 3)
  end
  if #s > limits.max_string_bytes then error("crypto." .. fn .. ": input is too long", 3) end
  -- Hashing runs in one host call the count hook cannot interrupt: a loop of them over
  -- megabytes must meet the deadline between two calls.
  if #s > 64 * 1024 then K.check_deadline() end
  return s
end

function crypto.sha256(s)
  return py_sha256(bounded(s, "sha256", 1))
end

function crypto.hmac_sha256(key, msg)
  return py_hmac(bounded(key, "hmac_sha256", 1), bounded(msg, "hmac_sha256", 2))
end

-- Compare two strings in time that depends on their length only, not on where they first
-- differ: for signatures and tokens, so a caller cannot find a valid one byte by byte.
function crypto.equals(a, b)
  a, b = bounded(a, "equals", 1), bounded(b, "equals", 2)
  if #a ~= #b then return false end
  local diff = 0
  for i = 1, #a do diff = diff | (byte(a, i) ~ byte(b, i)) end
  return diff == 0
end

helpers.crypto = K.readonly(crypto, "crypto")

---------------------------------------------------------------------------- time
helpers.time = K.readonly({ now = function() return py_now() end }, "time")

---------------------------------------------------------------------------- log
-- Lines go to a per-call buffer that the host reads back with the result: at most
-- max_log_lines kept, each cut to max_log_line bytes, control bytes escaped.
local lines, nlines, dropped = {}, 0, 0

function K.reset_logs()
  if nlines > 0 then lines, nlines = {}, 0 end
  dropped = 0
end

function K.take_logs()
  if nlines == 0 then return nil, dropped end
  return concat(lines, "\0", 1, nlines * 2), dropped
end

local function show(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  return "<" .. t .. ">"
end

local function escape_ctl(c)
  if c == "\n" then return "\\n" end
  if c == "\t" then return "\\t" end
  return format("\\x%02x", byte(c))
end

local function emit(level, ...)
  if nlines >= limits.max_log_lines then
    dropped = dropped + 1
    return
  end
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = show((select(i, ...))) end
  local msg = concat(parts, " ")
  local cap = limits.max_log_line_bytes
  if #msg > cap then msg = sub(msg, 1, cap) end
  msg = gsub(msg, "[%c\127]", escape_ctl)
  if #msg > cap then msg = sub(msg, 1, cap) end
  lines[nlines * 2 + 1] = level
  lines[nlines * 2 + 2] = msg
  nlines = nlines + 1
end

helpers.log = K.readonly({
  info = function(...) emit("info", ...) end,
  warn = function(...) emit("warn", ...) end,
  error = function(...) emit("error", ...) end,
}, "log")

---------------------------------------------------------------------------- trace
-- trace.set(key, value) and trace.event(name): attributes and events on the request's span
-- when the gateway exports traces (routing/tracing.py; ignored otherwise). They travel in
-- the log buffer under the levels "trace.set" / "trace.event" (outside the log-line limit),
-- at most MAX_TRACE per request; keys are up to 64 bytes of letters, digits, "_", "." and
-- "-", values and names are cut to 256 bytes, control bytes escaped.
local MAX_TRACE, MAX_TRACE_VALUE = 32, 256

local function trace_entry(level, text)
  local ctx = K.ctx
  if ctx == nil then error("trace: only while handling a request", 3) end
  local n = (ctx.ntrace or 0) + 1
  if n > MAX_TRACE then return end
  ctx.ntrace = n
  if #text > MAX_TRACE_VALUE then text = sub(text, 1, MAX_TRACE_VALUE) end
  lines[nlines * 2 + 1] = level
  lines[nlines * 2 + 2] = gsub(text, "[%c\127]", escape_ctl)
  nlines = nlines + 1
end

helpers.trace = K.readonly({
  set = function(key, value)
    if type(key) ~= "string" or #key > 64 or not find(key, "^[%w_.%-]+$") then
      error("trace.set: the key must be 1 to 64 letters, digits, '_', '.' or '-'", 2)
    end
    local t = type(value)
    if t ~= "string" and t ~= "number" and t ~= "boolean" then
      error("trace.set: the value must be a string, number or boolean, got " .. t, 2)
    end
    trace_entry("trace.set", key .. "=" .. tostring(value))
  end,
  event = function(name)
    if type(name) ~= "string" or name == "" then
      error("trace.event: the name must be a non-empty string", 2)
    end
    trace_entry("trace.event", name)
  end,
}, "trace")
