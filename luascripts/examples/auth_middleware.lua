-- Authentication middleware answering 401.
-- Backends expected: stable.
--
-- /webhooks/*: the sender signs "METHOD\nPATH\nTIMESTAMP" with HMAC-SHA256 and a shared
--   secret; the hex signature comes in `x-signature`, the timestamp (unix seconds) in
--   `x-timestamp`, which must be within five minutes of now.
-- everything else: `authorization: Bearer <token>`, where sha256(token) must be a known
--   digest (the script never holds the tokens themselves). The caller's name is passed on
--   in `x-caller`, and the token is not forwarded.

local WEBHOOK_SECRET = "change-me"
local TOKEN_DIGESTS = {
  -- sha256("token-alice")
  ["c26a7f01074b72beff2295b5cb02eb0b0fa871f4aca30367c51ffcd0c68d4832"] = "alice",
}

local function bearer(req, next)
  local header = req.headers["authorization"] or ""
  local token = string.match(header, "^Bearer ([%w%-%._~+/]+=*)$")
  local caller = token and TOKEN_DIGESTS[crypto.sha256(token)]
  if caller == nil then
    log.warn("rejected a request without a valid bearer token")
    return reject(401, "a valid bearer token is required")
  end
  req.headers["authorization"] = nil
  req.headers["x-caller"] = caller
  return next(req)
end

local function signed(req, next)
  local stamp = tonumber(req.headers["x-timestamp"] or "")
  local signature = req.headers["x-signature"] or ""
  if stamp == nil or math.abs(time.now() - stamp) > 300 then
    return reject(401, "missing or stale x-timestamp")
  end
  local payload = req.method .. "\n" .. req.path .. "\n" .. req.headers["x-timestamp"]
  if crypto.hmac_sha256(WEBHOOK_SECRET, payload) ~= string.lower(signature) then
    return reject(401, "bad signature")
  end
  return next(req)
end

chi.with(signed).handle("*", "/webhooks/*", function(req)
  return proxy("stable")
end)

chi.group(function(r)
  r.use(bearer)
  r.handle("*", "/*", function(req) return proxy("stable") end)
end)
