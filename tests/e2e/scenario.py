"""The tenants, backends and scripts the end-to-end suite runs against."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.backends import BackendFarm, dead_url
from tests.e2e.identity_scenario import identity_tenants

ROUTES_SCRIPT = r"""
chi.use(function(req, next)
  if req.headers["x-block"] == "1" then
    return reject(403, "blocked by middleware")
  end
  return next(req)
end)

chi.get("/hello", function(req)
  return respond(200, "hello " .. req.tenant,
                 {["content-type"] = "text/plain", ["x-script"] = "yes"})
end)
chi.get("/users/{id:[0-9]+}", function(req)
  return proxy("users", {path = "/v2/users/" .. req.params.id, query = "from=script",
                         set_headers = {["x-user-id"] = req.params.id},
                         remove_headers = {"x-drop-me"}})
end)
chi.post("/users", function(req) return proxy("users") end)
chi.put("/upload", function(req) return proxy("users") end)
chi.get("/boom", function(req) error("kaboom") end)
chi.get("/legacy", function(req)
  return {selected_backend = "users2", modified_headers = {["x-legacy"] = "1"},
          modified_path = "/legacy-path"}
end)
chi.get("/legacy-reject", function(req)
  return {reject = true, reject_status = 418, reject_message = "teapot"}
end)
chi.get("/pool", function(req) return proxy({"users", "users2"}) end)
chi.get("/sticky", function(req)
  return proxy({"users", "users2"}, {hash_key = req.headers["x-user"]})
end)
chi.get("/slow", function(req) return proxy("slow", {path = "/slow"}) end)
chi.get("/drip", function(req) return proxy("dripper", {path = "/drip", timeout_ms = 1200}) end)
chi.get("/refused", function(req) return proxy("refused") end)
chi.get("/unaccepting", function(req) return proxy("unaccepting") end)
chi.mount("/raw", "users")
-- Backends that are made to fail get their own names: passive health is per backend.
chi.mount("/resetter", "resetter")
chi.mount("/early", "early")
chi.mount("/clte", "clte")
"""

SELECTOR_SCRIPT = r"""
function on_route_request(request, backends)
  if request.headers["x-api-version"] == "2" then
    return {selected_backend = "modern", modified_headers = {["x-selected-by"] = "selector"}}
  end
  if request.path == "/forbidden" then
    return {reject = true, reject_status = 403, reject_message = "not for you"}
  end
  return {selected_backend = "legacy"}
end
"""

BROKEN_SCRIPT = r"""
chi.get("/", function(req) error("kaboom in broken tenant") end)
"""


EXAMPLES = Path(__file__).resolve().parents[2] / "luascripts" / "examples"

# Waits for a slow backend inside the script: many such requests must wait together.
WAITER_SCRIPT = r"""
chi.get("/wait", function(req)
  local res, err = http.request("slow", {path = "/slow", query = "s=0.5", timeout_ms = 3000})
  return respond(200, res and res.body or err)
end)
"""

# Holds a request's body while it waits: concurrent requests fill the runtime's memory.
HOARDER_SCRIPT = r"""
chi.post("/hold", function(req)
  local body = req.body()
  http.request("slow", {path = "/slow", query = "s=1", timeout_ms = 3000})
  return respond(200, tostring(#body))
end)
"""


def example(name: str) -> str:
    return (EXAMPLES / name).read_text("utf-8")


def spec(farm: BackendFarm) -> dict:
    b = farm.add
    users, users2 = b("users"), b("users2")
    slow = b("slow")
    tenants = [
        {"slug": "routes", "domains": ["routes.test"], "script": ROUTES_SCRIPT, "backends": [
            {"name": "users", "url": users.url},
            {"name": "users2", "url": users2.url},
            {"name": "slow", "url": slow.url, "read_timeout_ms": 500},
            {"name": "refused", "url": dead_url()},
            {"name": "unaccepting", "url": farm.add_unaccepting().url,
             "connect_timeout_ms": 300},
            {"name": "dripper", "url": users.url},
            {"name": "resetter", "url": users.url},
            {"name": "early", "url": users.url},
            {"name": "clte", "url": users.url},
        ]},
        {"slug": "sel", "domains": ["selector.test"], "script": SELECTOR_SCRIPT, "backends": [
            {"name": "legacy", "url": b("sel-legacy").url},
            {"name": "modern", "url": b("sel-modern").url},
        ]},
        {"slug": "broken", "domains": ["broken.test"], "script": BROKEN_SCRIPT, "backends": [
            {"name": "x", "url": b("broken-x").url}]},
        # Resolution classes: host+prefix, wildcard+prefix, host, wildcard, prefix, prefix.
        {"slug": "hp", "domains": ["api.test"], "path_prefix": "/billing",
         "backends": [{"name": "b", "url": b("hp").url}]},
        {"slug": "hpw", "domains": ["*.api.test"], "path_prefix": "/billing",
         "backends": [{"name": "b", "url": b("hpw").url}]},
        {"slug": "h", "domains": ["api.test"], "backends": [{"name": "b", "url": b("h").url}]},
        {"slug": "hw", "domains": ["*.api.test"], "backends": [{"name": "b", "url": b("hw").url}]},
        {"slug": "p", "path_prefix": "/billing", "backends": [{"name": "b", "url": b("p").url}]},
        {"slug": "p2", "path_prefix": "/billing/v2",
         "backends": [{"name": "b", "url": b("p2").url}]},
        # Balancing and health, no scripts: the default pool.
        {"slug": "pool", "domains": ["pool.test"], "backends": [
            {"name": "heavy", "url": b("pool-heavy").url, "weight": 3},
            {"name": "light", "url": b("pool-light").url, "weight": 1},
            {"name": "off", "url": b("pool-off").url, "enabled": False},
        ]},
        {"slug": "retry", "domains": ["retry.test"], "backends": [
            {"name": "dead", "url": dead_url()},
            {"name": "alive", "url": b("retry-alive").url},
        ]},
        {"slug": "active", "domains": ["active.test"], "backends": [
            {"name": "a", "url": b("active-a").url, "health_check_path": "/health"},
            {"name": "b", "url": b("active-b").url, "health_check_path": "/health"},
        ]},
        {"slug": "down", "domains": ["down.test"], "backends": [
            {"name": "only", "url": dead_url()}]},
        {"slug": "flaky", "domains": ["flaky.test"], "backends": [
            {"name": "one", "url": b("flaky-one").url},
            {"name": "two", "url": b("flaky-two").url},
        ]},
        {"slug": "base", "domains": ["base.test"], "backends": [
            {"name": "b", "url": b("base").url + "/service/base"}]},
        # Scripts that handle the whole exchange: the examples, as shipped.
        {"slug": "webhooks", "domains": ["webhooks.test"],
         "script": example("webhook_signature.lua"),
         "backends": [{"name": "hooks", "url": b("hooks").url}]},
        {"slug": "jsonrpc", "domains": ["rpc.test"], "script": example("json_rpc.lua"),
         "backends": [{"name": "users", "url": b("rpc-users").url},
                      {"name": "billing", "url": b("rpc-billing").url}]},
        {"slug": "cors", "domains": ["cors.test"], "script": example("cors.lua"),
         "backends": [{"name": "api", "url": b("cors-api").url}]},
        {"slug": "fallback", "domains": ["fallback.test"], "script": example("fallback.lua"),
         "backends": [{"name": "primary", "url": b("fb-primary").url},
                      {"name": "backup", "url": b("fb-backup").url}]},
        {"slug": "fallback-down", "domains": ["fallback-down.test"],
         "script": example("fallback.lua"),
         "backends": [{"name": "primary", "url": dead_url()},
                      {"name": "backup", "url": b("fbd-backup").url}]},
        {"slug": "fwdauth", "domains": ["auth.test"], "script": example("forward_auth.lua"),
         "backends": [{"name": "auth", "url": b("fa-auth").url},
                      {"name": "app", "url": b("fa-app").url}]},
        {"slug": "fwdauth-down", "domains": ["auth-down.test"],
         "script": example("forward_auth.lua"),
         "backends": [{"name": "auth", "url": dead_url()},
                      {"name": "app", "url": b("fad-app").url}]},
        {"slug": "waiter", "domains": ["waiter.test"], "script": WAITER_SCRIPT,
         "backends": [{"name": "slow", "url": b("waiter-slow").url}]},
        {"slug": "hoarder", "domains": ["hoarder.test"], "script": HOARDER_SCRIPT,
         "backends": [{"name": "slow", "url": b("hoarder-slow").url}]},
    ]
    tenants += identity_tenants(farm, example, dead_url)
    return {"tenants": tenants}
