-- Webhooks signed over their body, checked before they reach the backend.
-- Backends expected: hooks.
--
-- POST /github: GitHub's X-Hub-Signature-256 is "sha256=" .. the hex HMAC-SHA256 of the raw
--   body with the shared secret.
-- POST /stripe: Stripe's Stripe-Signature is "t=TIMESTAMP,v1=HEX", HEX being the HMAC-SHA256
--   of "TIMESTAMP.BODY"; the timestamp must be within five minutes of now.
-- A bad or missing signature is answered 401 and never reaches the backend. The body the
-- script read is forwarded unchanged; a body over the tenant's limit (1 MiB by default)
-- is answered 413.

local GITHUB_SECRET = "change-me"
local STRIPE_SECRET = "whsec_change-me"

local function github(req, next)
  local given = req.headers["x-hub-signature-256"] or ""
  local expected = "sha256=" .. crypto.hmac_sha256(GITHUB_SECRET, req.body())
  if not crypto.equals(given, expected) then
    return reject(401, "bad or missing X-Hub-Signature-256")
  end
  return next(req)
end

local function stripe(req, next)
  local header = req.headers["stripe-signature"] or ""
  local stamp, signature = header:match("t=(%d+)"), header:match("v1=(%x+)")
  if stamp == nil or signature == nil or math.abs(time.now() - tonumber(stamp)) > 300 then
    return reject(401, "missing or stale Stripe-Signature")
  end
  local expected = crypto.hmac_sha256(STRIPE_SECRET, stamp .. "." .. req.body())
  if not crypto.equals(signature, expected) then
    return reject(401, "bad Stripe-Signature")
  end
  return next(req)
end

chi.with(github).post("/github", function(req) return proxy("hooks", {path = "/github"}) end)
chi.with(stripe).post("/stripe", function(req) return proxy("hooks", {path = "/stripe"}) end)
