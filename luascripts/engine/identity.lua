-- identity.lua: jwt.verify, and the standard middleware middleware.jwt and middleware.cors.
--
-- jwt.verify is host work (routing.jwt_verify: joserfc, and the worker's JWKS cache): the
-- options are checked here, where an error can name the script's line, and the call waits
-- (K.wait, effect "jwt") so that fetching a JWKS never blocks the worker. The answer is the
-- claims as a JSON object, decoded here with the sandbox's json.decode, or a fixed reason
-- word. middleware.jwt answers 401 with WWW-Authenticate (RFC 6750) on top of the gateway's
-- own JSON error; middleware.cors answers preflights and adds its headers to whatever the
-- rest of the chain answers (proxied responses, respond(), the gateway's own errors).

local K = ...
local S = K.S

local type, tostring, next, rawget, rawlen, error = type, tostring, next, rawget, rawlen, error
local math_type = math.type
local concat, sort = table.concat, table.sort
local find, match, lower, upper, gmatch, format, sub = S.find, S.match, S.lower, S.upper,
  S.gmatch, S.format, S.sub
local wait, script_where, as_response = K.wait, K.script_where, K.as_response
local check_backend, check_path, check_header_name = K.check_backend, K.check_path,
  K.check_header_name
local LJ = K.layout.jwt_answer
local py_key_ok = K.py_key_ok -- luascripts.engine.keys.key_ok, for middleware.jwt's keys
K.py_key_ok = nil

local function fail(msg)
  error(script_where() .. msg, 0)
end

---------------------------------------------------------------------------- jwt.verify
-- routing.jwt_verify.ALGORITHMS: "none" is not one of them, whatever a script lists.
local ALGORITHMS = { "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
  "ES512", "EdDSA", "Ed25519", "HS256", "HS384", "HS512" }
local KNOWN_ALG = {}
for _, a in next, ALGORITHMS do KNOWN_ALG[a] = true end
local ALL_ALGS = concat(ALGORITHMS, "\0")
local MAX_TOKEN = 16 * 1024 -- routing.jwt_verify.MAX_TOKEN_BYTES
local MAX_KEYS, MAX_KEY_BYTES = 32, 16 * 1024

local VERIFY_OPTS = { keys = true, jwks = true, algorithms = true, issuer = true,
  audience = true, leeway_s = true }
local VERIFY_KNOWN = "keys, jwks, algorithms, issuer, audience, leeway_s"

local function list_of_strings(v, what, fn, max, max_bytes)
  if type(v) == "string" then v = { v } end
  if type(v) ~= "table" then fail(fn .. ": " .. what .. " must be a list of strings") end
  local n = rawlen(v)
  if n == 0 then fail(fn .. ": " .. what .. " must not be empty") end
  if n > max then fail(fn .. ": " .. what .. " lists more than " .. max .. " entries") end
  for k in next, v do
    if math_type(k) ~= "integer" or k < 1 or k > n then
      fail(fn .. ": " .. what .. " must be a list (got the key '" .. tostring(k) .. "')")
    end
  end
  local out = {}
  for i = 1, n do
    local s = rawget(v, i)
    if type(s) ~= "string" or s == "" then
      fail(fn .. ": " .. what .. "[" .. i .. "] must be a non-empty string, got " .. type(s))
    end
    if #s > max_bytes or find(s, "\0", 1, true) then
      fail(fn .. ": " .. what .. "[" .. i .. "] is longer than " .. max_bytes ..
        " bytes or holds a NUL byte")
    end
    out[i] = s
  end
  return out
end

-- The options of jwt.verify (and of middleware.jwt, whose own options `extra` lists), as
-- the flat values of the effect. Errors name the script's line.
local function verify_options(opts, fn, extra, extra_known)
  if type(opts) ~= "table" then fail(fn .. ": options must be a table") end
  for k in next, opts do
    if not VERIFY_OPTS[k] and not (extra and extra[k]) then
      fail(fn .. ": unknown option '" .. tostring(k) .. "' (known: " .. VERIFY_KNOWN ..
        (extra_known or "") .. ")")
    end
  end
  local n = {}
  local keys, jwks = rawget(opts, "keys"), rawget(opts, "jwks")
  if keys == nil and jwks == nil then
    fail(fn .. ": give the keys to verify with: keys = {<JWK or PEM>, ...} and/or " ..
      "jwks = {backend = \"name\", path = \"/.well-known/jwks.json\"}")
  end
  if keys ~= nil then
    n.key_list = list_of_strings(keys, "keys", fn, MAX_KEYS, MAX_KEY_BYTES)
    n.keys = concat(n.key_list, "\0")
  end
  if jwks ~= nil then
    if type(jwks) ~= "table" then
      fail(fn .. ": jwks must be a table {backend = \"name\", path = \"/...\"}")
    end
    for k in next, jwks do
      if k ~= "backend" and k ~= "path" then
        fail(fn .. ": jwks has no option '" .. tostring(k) .. "' (known: backend, path)")
      end
    end
    local name, err = check_backend(rawget(jwks, "backend"))
    if not name then fail(fn .. ": jwks.backend: " .. err) end
    local path
    path, err = check_path(rawget(jwks, "path") or "/.well-known/jwks.json")
    if not path then fail(fn .. ": jwks.path: " .. err) end
    n.backend, n.path = name, path
  end
  local algs = rawget(opts, "algorithms")
  if algs == nil then
    n.algs = ALL_ALGS
  else
    algs = list_of_strings(algs, "algorithms", fn, #ALGORITHMS, 16)
    for i, a in next, algs do
      if lower(a) == "none" then
        fail(fn .. ": algorithms: \"none\" (unsigned tokens) is never accepted")
      end
      if not KNOWN_ALG[a] then
        fail(fn .. ": algorithms[" .. i .. "]: unknown algorithm '" .. a .. "' (known: " ..
          concat(ALGORITHMS, ", ") .. ")")
      end
    end
    n.algs = concat(algs, "\0")
  end
  local issuer = rawget(opts, "issuer")
  if issuer ~= nil and (type(issuer) ~= "string" or #issuer > 1024) then
    fail(fn .. ": issuer must be a string (of at most 1024 bytes)")
  end
  n.issuer = issuer
  local audience = rawget(opts, "audience")
  if audience ~= nil then
    n.audience = concat(list_of_strings(audience, "audience", fn, 32, 1024), "\0")
  end
  local leeway = rawget(opts, "leeway_s") or 0
  if type(leeway) ~= "number" or leeway ~= leeway or leeway < 0 or leeway > 3600 then
    fail(fn .. ": leeway_s must be a number of seconds from 0 to 3600")
  end
  n.leeway = leeway
  return n
end

local json_decode = K.helpers.json.decode

-- The claims table, or nil and a reason word.
local function verify_with(n, token)
  if type(token) ~= "string" or token == "" or #token > MAX_TOKEN then
    return nil, "malformed"
  end
  local answer = { wait("jwt.verify()", "jwt", token, n.keys, n.backend, n.path, n.algs,
    n.issuer, n.audience, n.leeway) }
  local err = answer[LJ.error]
  if err ~= nil then
    if err == "memory" then
      fail("jwt.verify(): the claims do not fit in the tenant's script runtime now")
    end
    local index = match(err, "^invalid_key:(%d+)$")
    if index then
      fail("jwt.verify(): keys[" .. index .. "] is not a usable key (write a JWK or JWKS " ..
        "as JSON, or a PEM public key)")
    end
    return nil, err
  end
  return json_decode(answer[LJ.claims])
end

local function verify(token, opts)
  return verify_with(verify_options(opts, "jwt.verify()"), token)
end

K.helpers.jwt = K.readonly({ verify = verify }, "jwt")

---------------------------------------------------------------------------- middleware.jwt
local reject = K.helpers.reject
local JWT_EXTRA = { header = true, strip = true, optional = true }
local JWT_EXTRA_KNOWN = ", header, strip, optional"

local function boolean_option(opts, name, default, fn)
  local v = rawget(opts, name)
  if v == nil then return default end
  if type(v) ~= "boolean" then fail(fn .. ": " .. name .. " must be true or false") end
  return v
end

-- A 401 as the gateway renders a reject, plus the RFC 6750 challenge. `reason` is one of
-- routing.jwt_verify.REASONS (fixed words: nothing to escape, nothing secret).
local function unauthorized(req, reason)
  local message = reason and ("the bearer token is not valid: " .. reason) or
    "a bearer token is required"
  local res = as_response(K.ctx, reject(401, message), req)
  res.headers["www-authenticate"] = reason and
    ('Bearer error="invalid_token", error_description="' .. reason .. '"') or "Bearer"
  return res
end

local function jwt_middleware(opts)
  local fn = "middleware.jwt{}"
  local n = verify_options(opts, fn, JWT_EXTRA, JWT_EXTRA_KNOWN)
  -- Made at registration: a key that can never verify anything fails the script now.
  for i, text in next, n.key_list or {} do
    if not py_key_ok(text) then
      fail(fn .. ": keys[" .. i .. "] is not a usable key (write a JWK or JWKS as JSON, " ..
        "or a PEM public key)")
    end
  end
  local header, err = check_header_name(rawget(opts, "header") or "authorization")
  if not header then fail(fn .. ": header: " .. err) end
  local strip = boolean_option(opts, "strip", false, fn)
  local optional = boolean_option(opts, "optional", false, fn)
  local scheme_required = header == "authorization"
  local function jwt_auth(req, next)
    local value = req.headers[header]
    if value == nil or value == "" then
      if optional then return next(req) end
      return unauthorized(req, nil)
    end
    -- The auth scheme is case-insensitive (RFC 7235); a custom header may carry the bare
    -- token.
    local token = match(value, "^[Bb][Ee][Aa][Rr][Ee][Rr] +([^ \t]+)[ \t]*$")
    if token == nil and not scheme_required then
      token = match(value, "^[ \t]*([^ \t]+)[ \t]*$")
    end
    if token == nil then return unauthorized(req, "malformed") end
    local claims, reason = verify_with(n, token)
    if claims == nil then return unauthorized(req, reason) end
    req.claims = claims
    if strip then req.headers[header] = nil end
    return next(req)
  end
  K.function_labels[jwt_auth] = "middleware.jwt"
  return jwt_auth
end

K.middleware.jwt = jwt_middleware

---------------------------------------------------------------------------- middleware.cors
local CORS_OPTS = { origins = true, methods = true, headers = true, expose = true,
  credentials = true, max_age = true }
local CORS_KNOWN = "origins, methods, headers, expose, credentials, max_age"
local METHOD = "^[A-Z][A-Z0-9_-]*$"
local SCHEME_HOST = "^([a-z][a-z0-9+.-]*)://([^/?#]+)$"
local PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
local ALLOW_HEADERS = { "access-control-allow-origin", "access-control-allow-credentials",
  "access-control-expose-headers" }

-- origins: exact ("https://app.example.com"), wildcard subdomains ("*.example.com", https
-- unless a scheme is written: "http://*.example.com"), or "*" (any origin; refused with
-- credentials, since that would hand any site the user's cookies).
local function origin_rules(origins, credentials, fn)
  local list = list_of_strings(origins, "origins", fn, 256, 1024)
  local exact, wild, any = {}, {}, false
  for i, o in next, list do
    o = lower(o)
    if o == "*" then
      if credentials then
        fail(fn .. ": origins \"*\" cannot be combined with credentials = true (browsers " ..
          "refuse it, and reflecting any origin with credentials would let every site act " ..
          "as the user): list the origins")
      end
      any = true
    elseif find(o, "*", 1, true) then
      local scheme, rest = match(o, "^([a-z][a-z0-9+.-]*)://(.*)$")
      if not scheme then scheme, rest = "https", o end
      local suffix = match(rest, "^%*%.([a-z0-9][a-z0-9.-]*[a-z0-9](:?%d*))$")
      if not suffix or not find(suffix, ".", 1, true) and not find(suffix, ":", 1, true)
          and suffix ~= "localhost" then
        fail(fn .. ": origins[" .. i .. "]: a wildcard must be the first label of a domain " ..
          "with at least two labels, such as \"*.example.com\" or \"https://*.example.com\"")
      end
      wild[#wild + 1] = { scheme .. "://", "." .. suffix }
    else
      if not match(o, SCHEME_HOST) then
        fail(fn .. ": origins[" .. i .. "]: '" .. o .. "' is not an origin such as " ..
          "\"https://app.example.com\" (scheme://host[:port], no path)")
      end
      exact[o] = true
    end
  end
  return function(origin)
    if any then return true end
    origin = lower(origin)
    if exact[origin] then return true end
    for _, w in next, wild do
      local prefix, suffix = w[1], w[2]
      if sub(origin, 1, #prefix) == prefix and #origin > #prefix + #suffix
          and sub(origin, -#suffix) == suffix then
        local label = sub(origin, #prefix + 1, -#suffix - 1)
        if match(label, "^[a-z0-9][a-z0-9.-]*$") and not find(label, "..", 1, true) then
          return true
        end
      end
    end
    return false
  end, any
end

local function name_set(list, what, fn, methods)
  local set, out = {}, {}
  if list == nil then return set, out end
  for i, v in next, list_of_strings(list, what, fn, 64, 256) do
    if methods then
      v = upper(v)
      if not find(v, METHOD) then fail(fn .. ": " .. what .. "[" .. i .. "]: '" .. v ..
        "' is not an HTTP method name") end
    elseif v ~= "*" then
      local name, err = check_header_name(v)
      if not name then fail(fn .. ": " .. what .. "[" .. i .. "]: " .. err) end
      v = name
    end
    if not set[v] then
      set[v] = true
      out[#out + 1] = v
    end
  end
  return set, out
end

-- Add `token` to a Vary value unless it is there already.
local function vary_with(current, token)
  if current == nil or current == "" then return token end
  local want = lower(token)
  for part in gmatch(current, "[^,]+") do
    local p = lower(match(part, "^%s*(.-)%s*$"))
    if p == want or p == "*" then return current end
  end
  return current .. ", " .. token
end

local function cors_middleware(opts)
  local fn = "middleware.cors{}"
  if type(opts) ~= "table" then fail(fn .. ": options must be a table") end
  for k in next, opts do
    if not CORS_OPTS[k] then
      fail(fn .. ": unknown option '" .. tostring(k) .. "' (known: " .. CORS_KNOWN .. ")")
    end
  end
  local credentials = boolean_option(opts, "credentials", false, fn)
  if rawget(opts, "origins") == nil then
    fail(fn .. ": origins is required: a list such as {\"https://app.example.com\", " ..
      "\"*.example.com\"} (or {\"*\"} for any origin, without credentials)")
  end
  local allowed, any = origin_rules(rawget(opts, "origins"), credentials, fn)
  local method_set, methods = name_set(rawget(opts, "methods") or { "GET", "HEAD", "POST" },
    "methods", fn, true)
  local header_set = name_set(rawget(opts, "headers"), "headers", fn, false)
  local _, expose = name_set(rawget(opts, "expose"), "expose", fn, false)
  local max_age = rawget(opts, "max_age") or 0
  if math_type(max_age) == "float" and max_age == max_age // 1 then max_age = max_age // 1 end
  if math_type(max_age) ~= "integer" or max_age < 0 or max_age > 86400 then
    fail(fn .. ": max_age must be an integer number of seconds from 0 to 86400")
  end
  local allow_methods = concat(methods, ", ")
  local expose_headers = #expose > 0 and concat(expose, ", ") or nil
  local any_header = header_set["*"]
  -- With "*" and no credentials every origin gets the literal "*" (one cacheable answer);
  -- otherwise the request's own origin, once it is allowed.
  local literal_any = any and not credentials

  local function headers_allowed(requested)
    if requested == nil or any_header then return true end
    for h in gmatch(requested, "[^,]+") do
      local name = lower(match(h, "^%s*(.-)%s*$"))
      if name ~= "" and not header_set[name] then return false end
    end
    return true
  end

  local function preflight(req, origin)
    local h = { vary = PREFLIGHT_VARY }
    local method = upper(req.headers["access-control-request-method"])
    local requested = req.headers["access-control-request-headers"]
    if origin ~= nil and allowed(origin) and (method_set[method] or method == "OPTIONS")
        and headers_allowed(requested) then
      h["access-control-allow-origin"] = literal_any and "*" or origin
      h["access-control-allow-methods"] = allow_methods
      if requested ~= nil and requested ~= "" then
        h["access-control-allow-headers"] = lower(requested)
      end
      if credentials then h["access-control-allow-credentials"] = "true" end
      if max_age > 0 then h["access-control-max-age"] = tostring(max_age) end
    end
    return K.helpers.respond(204, "", h)
  end

  local function cors(req, next)
    local origin = req.headers["origin"]
    if req.method == "OPTIONS" and req.headers["access-control-request-method"] ~= nil then
      return preflight(req, origin)
    end
    if origin == nil then return next(req) end -- not a cross-origin request: untouched
    local res = next(req)
    local h = res.headers
    if not literal_any then h["vary"] = vary_with(h["vary"], "Origin") end
    if allowed(origin) then
      h["access-control-allow-origin"] = literal_any and "*" or origin
      if credentials then h["access-control-allow-credentials"] = "true" end
      if expose_headers then h["access-control-expose-headers"] = expose_headers end
    else
      -- The gateway's CORS policy is the one that holds: nothing a backend says opens it.
      for i = 1, #ALLOW_HEADERS do h[ALLOW_HEADERS[i]] = nil end
    end
    return res
  end
  K.function_labels[cors] = "middleware.cors"
  return cors
end

K.middleware.cors = cors_middleware
