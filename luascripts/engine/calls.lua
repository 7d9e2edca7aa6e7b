-- calls.lua: http.request(backend, opts), a script's call to one of its tenant's backends.
--
-- The backend is named, never addressed: the name is checked against the tenant's backends
-- here and again by the host, which builds the URL from the registered backend alone, so a
-- script can reach no other host, port or tenant. Options are validated with the same rules
-- as proxy(); the call waits (K.wait) and the host answers with the status, headers and body
-- (bounded by max_response_body_bytes) or an error name.

local K = ...
local S = K.S

local type, tostring, next, rawget, error = type, tostring, next, rawget, error
local upper, find, format = S.upper, S.find, S.format
local limits, wait, script_error = K.limits, K.wait, K.script_error
local check_backend, check_path, check_query = K.check_backend, K.check_path, K.check_query
local check_status, header_blob, header_table = K.check_status, K.header_blob, K.header_table
local LC = K.layout.call_answer

local OPTS = { method = true, path = true, query = true, headers = true, body = true,
  timeout_ms = true }
local METHOD = "^[A-Z][A-Z0-9_-]*$"

local function request(backend, opts)
  local ctx = K.ctx
  if ctx == nil then script_error("http.request() can only be called while handling a request") end
  local name, err = check_backend(backend)
  if not name then script_error("http.request(): " .. err) end
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then script_error("http.request(): options must be a table") end
  for k in next, opts do
    if not OPTS[k] then
      script_error("http.request(): unknown option '" .. tostring(k) .. "' (known: method, " ..
        "path, query, headers, body, timeout_ms)")
    end
  end
  local method = rawget(opts, "method") or "GET"
  if type(method) ~= "string" or #method > 32 or not find(upper(method), METHOD) then
    script_error("http.request(): method must be an HTTP method name such as \"GET\"")
  end
  method = upper(method)
  local path = rawget(opts, "path") or "/"
  path, err = check_path(path)
  if not path then script_error("http.request(): " .. err) end
  local query = rawget(opts, "query") or ""
  query, err = check_query(query)
  if not query then script_error("http.request(): " .. err) end
  local headers
  headers, err = header_blob(rawget(opts, "headers"), "headers")
  if err then script_error("http.request(): " .. err) end
  local body = rawget(opts, "body") or ""
  if type(body) == "number" then body = tostring(body) end
  if type(body) ~= "string" then
    script_error("http.request(): body must be a string, got " .. type(body))
  end
  if #body > limits.max_request_body_bytes then
    script_error("http.request(): body is " .. #body .. " bytes; the limit is " ..
      limits.max_request_body_bytes .. " (max_request_body_bytes)")
  end
  local timeout = rawget(opts, "timeout_ms") or limits.call_timeout_ms
  timeout, err = check_status(timeout, 1, 600000, "http.request")
  if not timeout then script_error("http.request(): timeout_ms must be an integer from 1 to " ..
    "600000") end
  ctx.calls = (ctx.calls or 0) + 1
  if ctx.calls > limits.max_calls then
    script_error("http.request(): more than " .. limits.max_calls ..
      " calls in one request (max_calls)")
  end
  local answer = { wait("http.request()", "call", name, method, path, query, headers, body,
    timeout) }
  local cerr = answer[LC.error]
  if cerr ~= nil then return nil, cerr end
  return {
    status = answer[LC.status],
    headers = header_table(answer[LC.headers] or "", "response headers", nil),
    body = answer[LC.body] or "",
  }
end

K.helpers.http = K.readonly({ request = request }, "http")
