"""chi v5 routing semantics, through real Lua registration and the Python matcher."""

from __future__ import annotations

import pytest

from luascripts.engine import ProxyAction, RejectAction, RespondAction, ScriptRuntimeError

from .support import load, request

# Every handler answers with the pattern it was registered for, so tests can see who won.
PRIORITY = """
local function say(name) return function(req) return respond(200, name) end end
chi.get("/users/new", say("static"))
chi.get("/users/{id:[0-9]+}", say("regexp"))
chi.get("/users/{name}", say("param"))
chi.get("/users/*", say("catchall"))
chi.get("/users/{id:[0-9]+}/posts", say("regexp-posts"))
chi.get("/users/{name}/profile", say("param-profile"))
chi.get("/files/{name}.{ext}", say("dotted"))
chi.get("/Case", say("upper"))
chi.get("/slash/", say("with-slash"))
chi.get("/slash", say("without-slash"))
chi.get("/only-get", say("only-get"))
chi.post("/both", say("post"))
chi.put("/both", say("put"))
chi.handle("*", "/any", say("any"))
"""


@pytest.fixture(scope="module")
def priority():
    script = load(PRIORITY)
    yield script
    script.close()


def body(outcome) -> str:
    assert isinstance(outcome.action, RespondAction), outcome.action
    return outcome.action.body.decode()


@pytest.mark.parametrize(("path", "winner", "params"), [
    ("/users/new", "static", {}),
    ("/users/42", "regexp", {"id": "42"}),
    ("/users/bob", "param", {"name": "bob"}),
    ("/users/bob/extra/deep", "catchall", {"*": "bob/extra/deep"}),
    ("/users/", "catchall", {"*": ""}),  # params never match empty; the catch-all does
    ("/users/42/posts", "regexp-posts", {"id": "42"}),
    # backtracking: regexp branch has no "/profile", so the param branch is tried next
    ("/users/42/profile", "param-profile", {"name": "42"}),
    ("/users/42/unknown", "catchall", {"*": "42/unknown"}),
    ("/files/report.tar.gz", "dotted", {"name": "report", "ext": "tar.gz"}),
    ("/Case", "upper", {}),
    ("/slash/", "with-slash", {}),
    ("/slash", "without-slash", {}),
])
def test_priority_and_backtracking(priority, path: str, winner: str, params: dict) -> None:
    outcome = priority.handle(request(path))
    assert body(outcome) == winner
    assert dict(outcome.params) == params


def test_route_pattern_is_the_registered_pattern(priority) -> None:
    assert priority.handle(request("/users/7")).route_pattern == "/users/{id:[0-9]+}"
    assert priority.handle(request("/users/x/y")).route_pattern == "/users/*"


def test_case_sensitive_and_no_slash_normalisation(priority) -> None:
    outcome = priority.handle(request("/case"))
    assert outcome.action == RejectAction(404, outcome.action.message)
    assert outcome.route_pattern is None
    assert priority.handle(request("/only-get/")).action.status == 404


def test_405_lists_allowed_methods_sorted(priority) -> None:
    outcome = priority.handle(request("/both", "GET"))
    assert outcome.action.status == 405
    assert outcome.action.allow == ("POST", "PUT")
    assert outcome.route_pattern is None
    assert priority.handle(request("/only-get", "DELETE")).action.allow == ("GET",)


def test_star_method_matches_every_method(priority) -> None:
    for method in ("GET", "POST", "DELETE", "PROPFIND"):
        assert body(priority.handle(request("/any", method))) == "any"


def test_encoded_slash_is_not_a_separator() -> None:
    script = load("chi.get('/files/{name}', function(req) return respond(200, req.params.name) "
                  "end)")
    outcome = script.handle(request("/files/a%2Fb"))
    assert body(outcome) == "a%2Fb"
    assert script.handle(request("/files/a/b")).action.status == 404


def test_mount_backend_strips_the_prefix() -> None:
    script = load("chi.mount('/legacy', 'legacy')\nchi.mount('/assets/', 'stable')")
    cases = {
        "/legacy": "/", "/legacy/": "/", "/legacy/a/b%2Fc": "/a/b%2Fc",
        "/assets/": "/", "/assets/img/x.png": "/img/x.png",
    }
    for path, upstream in cases.items():
        outcome = script.handle(request(path, "PATCH"))
        assert outcome.action == ProxyAction(("legacy",) if "legacy" in path else ("stable",),
                                             path=upstream), path
    # chi's RoutePattern(): the mount pattern that matched, trailing "/" trimmed
    assert script.handle(request("/legacy")).route_pattern == "/legacy"
    assert script.handle(request("/legacy/")).route_pattern == "/legacy"
    assert script.handle(request("/legacy/x")).route_pattern == "/legacy/*"
    assert script.handle(request("/legacyx")).action.status == 404
    assert script.handle(request("/assets")).action.status == 404  # mounted at "/assets/"


def test_route_and_mount_of_sub_routers() -> None:
    source = """
    local function say(req) return respond(200, req.route_pattern .. " " .. req.path) end
    chi.route("/api/{ver}", function(r)
      r.get("/", say)
      r.get("/users/{id}", say)
      r.route("/admin", function(a) a.get("/stats", say) end)
    end)
    local sub = chi.router()
    sub.get("/ping", say)
    chi.mount("/svc", sub)
    """
    script = load(source)
    outcome = script.handle(request("/api/v2/users/9"))
    assert body(outcome) == "/api/{ver}/users/{id} /api/v2/users/9"
    assert dict(outcome.params) == {"ver": "v2", "id": "9"}
    assert body(script.handle(request("/api/v2/admin/stats"))) == \
        "/api/{ver}/admin/stats /api/v2/admin/stats"
    for path in ("/api/v1", "/api/v1/"):  # chi's RoutePattern() trims the trailing "/"
        assert body(script.handle(request(path))) == f"/api/{{ver}} {path}"
    assert body(script.handle(request("/svc/ping"))) == "/svc/ping /svc/ping"
    # a sub-router's 404 does not backtrack into the parent
    assert script.handle(request("/svc/nope")).action.status == 404
    assert script.handle(request("/api/v1/users/9", "POST")).action.allow == ("GET",)


def test_same_router_mounted_twice_keeps_each_prefix() -> None:
    source = """
    local r = chi.router()
    r.get("/x", function(req) return respond(200, req.route_pattern) end)
    chi.mount("/one", r)
    chi.mount("/two", r)
    """
    script = load(source)
    assert body(script.handle(request("/one/x"))) == "/one/x"
    assert body(script.handle(request("/two/x"))) == "/two/x"
    assert [r.pattern for r in script.routes] == ["/one/x", "/two/x"]


MIDDLEWARE = """
local function mark(name)
  return function(req, next)
    req.trail = (req.trail or "") .. name .. ">"
    return next(req)
  end
end
local function show(req) return respond(200, (req.trail or "") .. "handler") end
function outer(req, next) return mark("outer")(req, next) end
chi.use(outer)
chi.get("/plain", show)
chi.with(mark("with")).get("/with", show)
chi.group(function(g)
  g.use(mark("group"))
  g.get("/group", show)
  g.with(mark("inner")).get("/group/inner", show)
end)
chi.route("/sub", function(r)
  r.use(mark("sub"))
  r.get("/x", show)
end)
chi.with(mark("mountmw")).mount("/m", "legacy")
"""


def test_middleware_order_like_chi() -> None:
    script = load(MIDDLEWARE)
    assert body(script.handle(request("/plain"))) == "outer>handler"
    assert body(script.handle(request("/with"))) == "outer>with>handler"
    assert body(script.handle(request("/group"))) == "outer>group>handler"
    assert body(script.handle(request("/group/inner"))) == "outer>group>inner>handler"
    assert body(script.handle(request("/sub/x"))) == "outer>sub>handler"
    outcome = script.handle(request("/m/deep"))
    assert outcome.action == ProxyAction(("legacy",), path="/deep")
    assert len(outcome.middleware) == 2
    # mux middleware also runs for a 404 (as in chi, it wraps the router)
    assert script.handle(request("/missing")).middleware[0].startswith("outer (line")
    counts = {r.pattern: r.middleware for r in script.routes}
    assert counts == {"/plain": 1, "/with": 2, "/group": 2, "/group/inner": 3, "/sub/x": 2,
                      "/m/*": 2}


def test_middleware_can_short_circuit_and_labels_show_who_ran() -> None:
    source = """
    function deny(req, next)
      if req.headers["x-deny"] then return reject(403, "denied") end
      return next(req)
    end
    function tag(req, next) return next(req) end
    chi.use(deny, tag)
    chi.get("/", function(req) return proxy("a") end)
    """
    script = load(source)
    outcome = script.handle(request("/", headers={"x-deny": "1"}))
    assert outcome.action == RejectAction(403, "denied")
    assert outcome.middleware == ("deny (line 2)",)
    assert script.handle(request("/")).middleware == ("deny (line 2)", "tag (line 6)")


def test_custom_not_found_and_method_not_allowed() -> None:
    source = """
    chi.get("/only", function(req) return proxy("a") end)
    chi.not_found(function(req) return respond(404, "custom 404 for " .. req.path) end)
    chi.method_not_allowed(function(req) return reject(405, "custom 405") end)
    chi.route("/inherits", function(r) r.get("/x", function() return proxy("a") end) end)
    chi.route("/own", function(r)
      r.get("/x", function() return proxy("a") end)
      r.not_found(function(req) return reject(410, "gone") end)
    end)
    """
    script = load(source)
    assert script.handle(request("/nope")).action == RespondAction(404, b"custom 404 for /nope")
    assert script.handle(request("/only", "POST")).action == RejectAction(405, "custom 405",
                                                                            ("GET",))
    assert script.handle(request("/inherits/y")).action.body == b"custom 404 for /inherits/y"
    assert script.handle(request("/own/y")).action == RejectAction(410, "gone")
    assert script.handle(request("/own/x", "PUT")).action.message == "custom 405"


def test_original_names_and_method_call_syntax() -> None:
    source = """
    chi_middleware(function(req, next) return next(req) end)
    chi_route("GET", "/legacy-style", function(req) return proxy("a") end)
    chi:get("/colon", function(req) return proxy("b") end)
    local r = chi.router()
    r:post("/p", function(req) return proxy("a") end)
    chi:mount("/r", r)
    chi.handle("get", "/lower", function(req) return proxy("a") end)
    """
    script = load(source)
    assert script.handle(request("/legacy-style")).action.backends == ("a",)
    assert script.handle(request("/legacy-style")).middleware != ()
    assert script.handle(request("/colon")).action.backends == ("b",)
    assert script.handle(request("/r/p", "POST")).action.backends == ("a",)
    assert script.handle(request("/lower")).action.backends == ("a",)


def test_later_registration_of_same_route_wins() -> None:
    source = """
    chi.get("/x", function() return proxy("a") end)
    chi.get("/x", function() return proxy("b") end)
    """
    assert load(source).handle(request("/x")).action.backends == ("b",)


def test_routes_table_lists_full_patterns() -> None:
    script = load(MIDDLEWARE)
    rows = [(r.method, r.pattern, r.target) for r in script.routes]
    assert ("GET", "/sub/x", "") in rows
    assert ("*", "/m/*", "backend:legacy") in rows


def test_router_actions_cannot_be_replayed_elsewhere() -> None:
    source = """
    local kept
    chi.use(function(req, next)
      local a = next(req)
      if req.path == "/legacy/x" then kept = a end
      return a
    end)
    chi.mount("/legacy", "legacy")
    chi.get("/replay", function() return kept end)
    """
    script = load(source)
    assert script.handle(request("/legacy/x")).action == ProxyAction(("legacy",), path="/x")
    with pytest.raises(ScriptRuntimeError, match="action of a backend mount"):
        script.handle(request("/replay"))
