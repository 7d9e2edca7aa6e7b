"""Scenario 5: the seed's old two-service design, rebuilt for the benchmark.

A gateway (raw ASGI, the aiohttp client for both hops) asks a separate HTTP decision service for
every request, then proxies to the backend the decision named. The decision service runs the
routing decision in Lua 5.4 (lupa): one middleware, then the same 50 routes as the chistone
script, matched in order. Both are ASGI applications, served by the same server as the chistone
scenario they are compared with (daphne by default):

    BENCH_ROUTES=50 daphne -p 9101 bench.anchors.two_service:decision
    BENCH_DECISION_URL=http://127.0.0.1:9101/decide \\
    BENCH_BACKENDS=backend=http://127.0.0.1:8080 daphne -p 9100 bench.anchors.two_service:gateway
"""

from __future__ import annotations

import json
import os

import lupa.lua54 as lupa

from bench.passthrough import (
    Receive,
    Scope,
    Send,
    Upstream,
    forward,
    lifespan,
    path_qs,
    read_body,
    request_headers,
    respond,
)

DECISION_LUA = """
local n = ...
local routes = {}
for i = 0, n - 1 do
  routes[#routes + 1] = {
    method = "GET",
    pattern = "^/api/v1/svc" .. i .. "/items/([^/]+)$",
    backend = "backend",
  }
end

-- The one middleware, the same shape as chi.use(function(req, next) ... end).
local function middleware(req, nxt)
  return nxt(req)
end

local function route(req)
  for _, r in ipairs(routes) do
    if r.method == req.method then
      local id = string.match(req.path, r.pattern)
      if id then
        req.params = {id = id}
        return r.backend
      end
    end
  end
  return nil
end

return function(method, path, query, headers)
  local req = {method = method, path = path, query = query, headers = headers}
  return middleware(req, route)
end
"""

JSON_HEADERS = [(b"content-type", b"application/json")]


class DecisionService:
    """POST /decide with {"method", "path", "query", "headers"} -> {"backend": name or null}."""

    def __init__(self, routes: int) -> None:
        self.lua = lupa.LuaRuntime(register_eval=False)
        self.decide = self.lua.execute(DECISION_LUA, routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send, Upstream())
            return
        if scope["type"] != "http":
            return
        try:
            req = json.loads(await read_body(receive))
            headers = self.lua.table_from(req["headers"])
            backend = self.decide(req["method"], req["path"], req["query"], headers)
        except (ValueError, KeyError, TypeError, lupa.LuaError) as exc:
            await respond(send, 400, f"bad decision request: {exc}\n".encode())
            return
        await respond(send, 200, json.dumps({"backend": backend}).encode(), JSON_HEADERS)


class Gateway:
    def __init__(self, decision_url: str, backends: dict[str, str]) -> None:
        self.decision_url = decision_url
        self.backends = {name: url.rstrip("/") for name, url in backends.items()}
        self.upstream = Upstream()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send, self.upstream)
            return
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        session = self.upstream.session()
        headers = request_headers(scope)
        question = json.dumps({
            "method": scope["method"],
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": {k.lower(): v for k, v in headers.items()},
        })
        try:
            async with session.post(self.decision_url, data=question,
                                    headers={"content-type": "application/json"}) as answer:
                decision = await answer.json() if answer.status == 200 else None
        except Exception as exc:  # any decision failure is a 502
            await respond(send, 502, f"decision service failed: {type(exc).__name__}\n".encode())
            return
        backend = self.backends.get((decision or {}).get("backend") or "")
        if backend is None:
            await respond(send, 404, b"no route\n")
            return
        await forward(session, send, method=scope["method"], url=backend + path_qs(scope),
                      headers=headers, body=body)


def _backends(spec: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in spec.split(",") if "=" in item)
    return {name.strip(): url.strip() for name, url in pairs}


decision = DecisionService(int(os.environ.get("BENCH_ROUTES", "50")))
gateway = Gateway(
    os.environ.get("BENCH_DECISION_URL", "http://127.0.0.1:8081/decide"),
    _backends(os.environ.get("BENCH_BACKENDS", "backend=http://127.0.0.1:8080")),
)
