"""go-chi v5's mux_test.go (with pattern_test.go and path_value_test.go), through the Lua API.

Every routing test of chi's mux becomes a Lua script, loaded with `load_script`, and the
same requests through `LoadedScript.handle(ScriptRequest)`. Where chi's test asserts a
response body and status, the handlers here answer with that body through `respond()`, and
the test asserts the action, status, params and route pattern. Go idioms map to the script
API as follows:

- `context.WithValue` in a middleware -> a field set on `req` before `next(req)`;
- counters closed over by Go middleware -> upvalues of the script (one Lua state serves all
  of a script's requests, like one Go process);
- `Handle("/p", h)` / `HandleFunc` -> `chi.handle("*", "/p", h)`; `Method("GET", ...)` ->
  `chi.handle("GET", ...)`; `Handle("POST /p", h)` -> `chi.handle("POST", "/p", h)`;
- a panic at registration -> `ScriptLoadError` whose diagnostic carries the script line;
- `Mount("/p", http.HandlerFunc)` -> `mount("/p", "backend")`;
- `URLParam(r, "*")` -> `req.params["*"] or ""` (chi returns "" for a param it lacks);
- Mux.Match / Mux.Find -> whether the request reaches the handler, and its route pattern.
  Find's own string keeps a trailing slash that RoutePattern() trims ("/api/groups/v2/" vs
  "/api/groups/v2"); scripts only ever see RoutePattern().

Left out, with the reason (Go-only mechanics with no meaning for Lua scripts):
- TestSingleHandler: calls a handler directly with a hand-made routing context.
- TestMuxContextIsThreadSafe: cancels Go contexts while handlers wait on them.
- TestServerBaseContext: http.Server's BaseContext and its context keys.
- TestServeHTTPExistingContext: serving with a context.Context the caller brings (the
  routing half, /hi and a custom 404, is below).
- The middleware constructor counters (`stdmwInit`, `cmwInit1`, `ctxmwInit`...): Go calls
  `mw(next)` once when it builds a chain; a Lua middleware is a function called per request,
  so there is nothing to construct. The per-request counters are asserted.
- TestMuxEmptyRoutes's `Handle("/api*", apiRouter)`: a router used as a plain handler; the
  script API takes functions as handlers and mounts routers (both halves are below).
- TestCustomHTTPMethod's RegisterMethod("BOO"): the registration API knows no custom
  methods. What the script API can express is asserted: an unknown method is refused at
  registration (as chi refuses one that was not registered) and reaches `"*"` routes at
  request time (as if every method had been registered with chi.RegisterMethod).
  TestQueryHTTPMethod runs in full (`r.query`, `handle("QUERY", ...)`, the body read).

No test here needs a middleware to see or change the response after `next()`: chi's
mux tests only short-circuit (TestMuxMiddlewareStack's "pong") or pass values inward.
"""

from __future__ import annotations

import pytest

from luascripts.engine import (
    ProxyAction,
    RejectAction,
    RespondAction,
    ScriptLoadError,
    validate,
)
from luascripts.engine.matching import match

from .support import load, request


def answer(script, path: str, method: str = "GET"):
    outcome = script.handle(request(path, method))
    return outcome


def body(script, path: str, method: str = "GET") -> str:
    action = script.handle(request(path, method)).action
    assert isinstance(action, RespondAction), (method, path, action)
    return action.body.decode()


def status(script, path: str, method: str = "GET") -> int:
    return script.handle(request(path, method)).action.status


def refused(source: str) -> tuple[int | None, str]:
    """(line, message) of the one registration error `source` causes."""
    with pytest.raises(ScriptLoadError) as info:
        load(source)
    (diagnostic,) = info.value.diagnostics
    return diagnostic.line, diagnostic.message


def labels(outcome) -> list[str]:
    """Names of the middleware that ran (global function names; labels are "name (line N)")."""
    return [label.split(" (line ")[0] for label in outcome.middleware]


# -- TestMuxBasic -----------------------------------------------------------------------------

MUX_BASIC = """
local count = 0
local function countermw(req, next) count = count + 1; return next(req) end
local function usermw(req, next) req.user = "peter"; return next(req) end
local function exmw(req, next) req.ex = "a"; return next(req) end
local function logmw(req, next) log.info("logmw test"); return next(req) end

local function cxindex(req) return respond(200, "hi " .. req.user) end
local function ping(req) return respond(200, ".") end
local function headPing(req) return respond(200, "", {["X-Ping"] = "1"}) end
local function createPing(req) return respond(201, "") end
local function pingAll(req) return respond(200, "ping all") end
local function pingAll2(req) return respond(200, "ping all2") end
local function pingOne(req) return respond(200, "ping one id: " .. req.params.id) end
local function pingWoop(req) return respond(200, "woop." .. (req.params.iidd or "")) end
local function catchAll(req) return respond(200, "catchall") end

chi.use(countermw)
chi.use(usermw)
chi.use(exmw)
chi.use(logmw)
chi.get("/", cxindex)
chi.handle("GET", "/ping", ping)
chi.handle("GET", "/pingall", pingAll)
chi.handle("get", "/ping/all", pingAll)
chi.get("/ping/all2", pingAll2)

chi.head("/ping", headPing)
chi.post("/ping", createPing)
chi.get("/ping/{id}", pingWoop)
chi.get("/ping/{id}", pingOne) -- expected to overwrite to pingOne handler
chi.get("/ping/{iidd}/woop", pingWoop)
chi.handle("*", "/admin/*", catchAll)
"""


def test_TestMuxBasic() -> None:
    script = load(MUX_BASIC)
    index = answer(script, "/")
    assert index.action == RespondAction(200, b"hi peter")
    assert ("info", "logmw test") in index.logs
    assert body(script, "/ping") == "."
    assert body(script, "/pingall") == "ping all"
    assert body(script, "/ping/all") == "ping all"
    assert body(script, "/ping/all2") == "ping all2"
    assert body(script, "/ping/123") == "ping one id: 123"
    assert body(script, "/ping/allan") == "ping one id: allan"
    assert body(script, "/ping/1/woop") == "woop.1"
    head = answer(script, "/ping", "HEAD").action
    assert head.status == 200 and ("x-ping", "1") in head.headers
    assert answer(script, "/ping", "POST").action.status == 201
    assert body(script, "/admin/catch-thazzzzz") == "catchall"
    assert body(script, "/admin/casdfsadfs", "POST") == "catchall"
    # custom http method DIE /ping/1/woop
    assert status(script, "/ping/1/woop", "DIE") == 405


# -- TestMuxMounts ----------------------------------------------------------------------------

def test_TestMuxMounts() -> None:
    script = load("""
    local r = chi.router()
    r.get("/{hash}", function(req) return respond(200, "/" .. req.params.hash) end)
    r.route("/{hash}/share", function(r)
      r.get("/", function(req) return respond(200, "/" .. req.params.hash .. "/share") end)
      r.get("/{network}", function(req)
        return respond(200, "/" .. req.params.hash .. "/share/" .. req.params.network)
      end)
    end)
    chi.mount("/sharing", r)
    """)
    assert body(script, "/sharing/aBc") == "/aBc"
    assert body(script, "/sharing/aBc/share") == "/aBc/share"
    assert body(script, "/sharing/aBc/share/twitter") == "/aBc/share/twitter"
    outcome = answer(script, "/sharing/aBc/share/twitter")
    assert dict(outcome.params) == {"hash": "aBc", "network": "twitter"}
    assert outcome.route_pattern == "/sharing/{hash}/share/{network}"
    assert answer(script, "/sharing/aBc/share").route_pattern == "/sharing/{hash}/share"


# -- TestMuxPlain -----------------------------------------------------------------------------

def test_TestMuxPlain() -> None:
    script = load("""
    chi.get("/hi", function(req) return respond(200, "bye") end)
    chi.not_found(function(req) return respond(404, "nothing here") end)
    """)
    assert body(script, "/hi") == "bye"
    assert answer(script, "/nothing-here").action == RespondAction(404, b"nothing here")


# -- TestMuxEmptyRoutes -----------------------------------------------------------------------

def test_TestMuxEmptyRoutes() -> None:
    mux = load('chi.handle("*", "/api*", function(req) return respond(200, "api") end)')
    outcome = answer(mux, "/")
    assert isinstance(outcome.action, RejectAction) and outcome.action.status == 404
    # a router without routes answers 404 for everything (here through a mount)
    api = load("local apiRouter = chi.router()\nchi.mount('/api', apiRouter)")
    for path in ("/api", "/api/", "/api/x"):
        outcome = answer(api, path)
        assert isinstance(outcome.action, RejectAction) and outcome.action.status == 404


# -- TestMuxTrailingSlash ---------------------------------------------------------------------

def test_TestMuxTrailingSlash() -> None:
    script = load("""
    chi.not_found(function(req) return respond(404, "nothing here") end)
    local subRoutes = chi.router()
    local function indexHandler(req) return respond(200, req.params.accountID) end
    subRoutes.get("/", indexHandler)
    chi.mount("/accounts/{accountID}", subRoutes)
    chi.get("/accounts/{accountID}/", indexHandler)
    """)
    assert body(script, "/accounts/admin") == "admin"
    assert body(script, "/accounts/admin/") == "admin"
    assert answer(script, "/nothing-here").action == RespondAction(404, b"nothing here")
    assert answer(script, "/accounts/admin").route_pattern == "/accounts/{accountID}"
    assert answer(script, "/accounts/admin/").route_pattern == "/accounts/{accountID}"


# -- TestMuxNestedNotFound --------------------------------------------------------------------

def test_TestMuxNestedNotFound() -> None:
    script = load("""
    chi.use(function(req, next) req.mw = "mw"; return next(req) end)
    chi.get("/hi", function(req) return respond(200, "bye") end)
    chi.with(function(req, next) req.with = "with"; return next(req) end).not_found(
      function(req) return respond(404, "root 404 " .. req.mw .. " " .. req.with) end)

    local sr1 = chi.router()
    sr1.get("/sub", function(req) return respond(200, "sub") end)
    sr1.group(function(sr1)
      sr1.use(function(req, next) req.mw2 = "mw2"; return next(req) end)
      sr1.not_found(function(req) return respond(404, "sub 404 " .. req.mw2) end)
    end)

    local sr2 = chi.router()
    sr2.get("/sub", function(req) return respond(200, "sub2") end)

    chi.mount("/admin1", sr1)
    chi.mount("/admin2", sr2)
    """)
    assert body(script, "/hi") == "bye"
    assert answer(script, "/nothing-here").action == RespondAction(404, b"root 404 mw with")
    assert body(script, "/admin1/sub") == "sub"
    assert answer(script, "/admin1/nope").action == RespondAction(404, b"sub 404 mw2")
    assert body(script, "/admin2/sub") == "sub2"
    # not found pages should bubble up to the root
    assert answer(script, "/admin2/nope").action == RespondAction(404, b"root 404 mw with")


# -- TestMethodNotAllowed ---------------------------------------------------------------------

def test_TestMethodNotAllowed() -> None:
    script = load("""
    chi.get("/hi", function(req) return respond(200, "hi, get") end)
    chi.head("/hi", function(req) return respond(200, "hi, head") end)
    chi.get("/*", function(req) return respond(200, "catch-all") end)
    """)
    registered = answer(script, "/hi")
    assert registered.action == RespondAction(200, b"hi, get")  # no Allow list
    unregistered = answer(script, "/hi", "POST").action
    assert isinstance(unregistered, RejectAction) and unregistered.status == 405
    assert unregistered.allow == ("GET", "HEAD")


# -- TestMuxNestedMethodNotAllowed ------------------------------------------------------------

def test_TestMuxNestedMethodNotAllowed() -> None:
    script = load("""
    chi.get("/root", function(req) return respond(200, "root") end)
    chi.method_not_allowed(function(req) return respond(405, "root 405") end)

    local sr1 = chi.router()
    sr1.get("/sub1", function(req) return respond(200, "sub1") end)
    sr1.method_not_allowed(function(req) return respond(405, "sub1 405") end)

    local sr2 = chi.router()
    sr2.get("/sub2", function(req) return respond(200, "sub2") end)

    local pathVar = chi.router()
    pathVar.get("/{var}", function(req) return respond(200, "pv") end)
    pathVar.method_not_allowed(function(req) return respond(405, "pv 405") end)

    chi.mount("/prefix1", sr1)
    chi.mount("/prefix2", sr2)
    chi.mount("/pathVar", pathVar)
    """)
    assert body(script, "/root") == "root"
    assert body(script, "/root", "PUT") == "root 405"
    assert body(script, "/prefix1/sub1") == "sub1"
    assert body(script, "/prefix1/sub1", "PUT") == "sub1 405"
    assert body(script, "/prefix2/sub2") == "sub2"
    assert body(script, "/prefix2/sub2", "PUT") == "root 405"
    assert body(script, "/pathVar/myvar") == "pv"
    assert body(script, "/pathVar/myvar", "DELETE") == "pv 405"


# -- TestMuxComplicatedNotFound ---------------------------------------------------------------

DECORATE_ROUTER = """
chi.get("/auth", function(req) return respond(200, "auth get") end)
chi.route("/public", function(r)
  r.get("/", function(req) return respond(200, "public get") end)
end)
local sub0 = chi.router()
sub0.route("/resource", function(r)
  r.get("/", function(req) return respond(200, "private get") end)
end)
chi.mount("/private", sub0)
local sub1 = chi.router()
sub1.route("/resource", function(r)
  r.get("/", function(req) return respond(200, "private get") end)
end)
chi.with(function(req, next) return next(req) end).mount("/private_mw", sub1)
"""
CUSTOM_NOT_FOUND = 'chi.not_found(function(req) return respond(200, "custom not-found") end)'


@pytest.mark.parametrize("order", ["pre", "post"])
def test_TestMuxComplicatedNotFound(order) -> None:
    parts = [CUSTOM_NOT_FOUND, DECORATE_ROUTER]
    script = load("\n".join(parts if order == "pre" else parts[::-1]))
    # check that we didn't break correct routes
    assert body(script, "/auth") == "auth get"
    assert body(script, "/public") == "public get"
    assert body(script, "/public/") == "public get"
    assert body(script, "/private/resource") == "private get"
    # check custom not-found on all levels
    for path in ("/nope", "/public/nope", "/private/nope", "/private/resource/nope",
                 "/private_mw/nope", "/private_mw/resource/nope",
                 "/auth/"):  # and on trailing slash routes
        assert body(script, path) == "custom not-found", path


# -- TestMuxWith ------------------------------------------------------------------------------

def test_TestMuxWith() -> None:
    script = load("""
    function mw1(req, next) req.inline1 = "yes"; return next(req) end
    function mw2(req, next) req.inline2 = "yes"; return next(req) end
    chi.get("/hi", function(req) return respond(200, "bye") end)
    chi.with(mw1).with(mw2).get("/inline", function(req)
      return respond(200, "inline " .. req.inline1 .. " " .. req.inline2)
    end)
    """)
    hi = answer(script, "/hi")
    assert hi.action == RespondAction(200, b"bye") and hi.middleware == ()
    inline = answer(script, "/inline")
    assert inline.action == RespondAction(200, b"inline yes yes")
    assert labels(inline) == ["mw1", "mw2"]  # each ran once (cmwHandler1, cmwHandler2)


# -- TestMuxHandlePatternValidation -----------------------------------------------------------

@pytest.mark.parametrize(("method", "pattern", "request_method", "path", "expected"), [
    ("*", "/user/{id}", "GET", "/user/123", "without-prefix GET"),  # Handle("/user/{id}")
    ("POST", "/products/{id}", "POST", "/products/456", "with-prefix POST"),
    ("PATCH", "/", "PATCH", "/", "extended-whitespace PATCH"),  # "PATCH \t /"
])
def test_TestMuxHandlePatternValidation_valid(method, pattern, request_method, path,
                                               expected) -> None:
    script = load(f"chi.handle({method!r}, {pattern!r}, function(req) "
                  f"return respond(200, {expected!r}) end)")
    outcome = answer(script, path, request_method)
    assert outcome.action == RespondAction(200, expected.encode())
    assert outcome.route_pattern == pattern


@pytest.mark.parametrize(("method", "pattern", "reason"), [
    ("*", "INVALID/user/{id}", "must begin with '/'"),  # invalid pattern with no method
    ("*", "GET/user/{id}", "must begin with '/'"),  # supported method glued to the path
    ("UNSUPPORTED", "/unsupported-method", "unknown HTTP method"),
])
def test_TestMuxHandlePatternValidation_invalid(method, pattern, reason) -> None:
    line, message = refused(f"local h = function(req) return respond(200, 'x') end\n"
                            f"chi.handle({method!r}, {pattern!r}, h)")
    assert line == 2 and reason in message


# -- TestRouterFromMuxWith --------------------------------------------------------------------

def test_TestRouterFromMuxWith() -> None:
    script = load("""
    local with = chi.with(function(req, next) return next(req) end)
    with.get("/with_middleware", function(req) return respond(200, "") end)
    """)
    outcome = answer(script, "/with_middleware")
    assert outcome.action.status == 200 and len(outcome.middleware) == 1


# -- TestMuxMiddlewareStack -------------------------------------------------------------------

def test_TestMuxMiddlewareStack() -> None:
    script = load("""
    local stdmwHandler, ctxmwHandler, inCtxmwHandler, handlerCount = 0, 0, 0, 0
    chi.use(function(req, next) stdmwHandler = stdmwHandler + 1; return next(req) end)
    chi.use(function(req, next)
      ctxmwHandler = ctxmwHandler + 1
      req.ctxmwHandler = ctxmwHandler
      return next(req)
    end)
    chi.use(function(req, next)
      if req.path == "/ping" then return respond(200, "pong") end
      return next(req)
    end)
    chi.with(function(req, next) inCtxmwHandler = inCtxmwHandler + 1; return next(req) end)
      .get("/", function(req)
        handlerCount = handlerCount + 1
        return respond(200, string.format("reqs:%d ctxValue:%d", handlerCount,
                                          req.ctxmwHandler))
      end)
    chi.get("/hi", function(req) return respond(200, "wooot") end)
    """)
    answer(script, "/")
    answer(script, "/")
    assert body(script, "/") == "reqs:3 ctxValue:3"
    assert body(script, "/ping") == "pong"


# -- TestMuxRouteGroups -----------------------------------------------------------------------

def test_TestMuxRouteGroups() -> None:
    script = load("""
    function stdmw(req, next) return next(req) end
    function stdmw2(req, next) return next(req) end
    chi.group(function(r)
      r.use(stdmw)
      r.get("/group", function(req) return respond(200, "root group") end)
    end)
    chi.group(function(r)
      r.use(stdmw2)
      r.get("/group2", function(req) return respond(200, "root group2") end)
    end)
    """)
    group = answer(script, "/group")
    assert group.action == RespondAction(200, b"root group") and labels(group) == ["stdmw"]
    group2 = answer(script, "/group2")
    assert group2.action == RespondAction(200, b"root group2")
    assert labels(group2) == ["stdmw2"]


# -- TestMuxBig (and bigMux) ------------------------------------------------------------------

BIG_MUX = """
local function ctx(req)
  return string.format("reqid:%s session:%s", req.requestID, req.session_user)
end
local function say(fmt, ...)
  local keys = {...}
  return function(req)
    local values = {}
    for i, k in ipairs(keys) do values[i] = req.params[k] end
    values[#values + 1] = ctx(req)
    return respond(200, string.format(fmt, table.unpack(values)))
  end
end
chi.use(function(req, next) req.requestID = "1"; return next(req) end)
chi.use(function(req, next) return next(req) end)
chi.group(function(r)
  r.use(function(req, next) req.session_user = "anonymous"; return next(req) end)
  r.get("/favicon.ico", function(req) return respond(200, "fav") end)
  r.get("/hubs/{hubID}/view", say("/hubs/%s/view %s", "hubID"))
  r.get("/hubs/{hubID}/view/*", say("/hubs/%s/view/%s %s", "hubID", "*"))
  r.post("/hubs/{hubSlug}/view/*", say("/hubs/%s/view/%s %s", "hubSlug", "*"))
end)
chi.group(function(r)
  r.use(function(req, next) req.session_user = "elvis"; return next(req) end)
  r.get("/", say("/ %s"))
  r.get("/suggestions", say("/suggestions %s"))
  r.get("/woot/{wootID}/*", function(req)
    return respond(200, string.format("/woot/%s/%s", req.params.wootID, req.params["*"]))
  end)
  r.route("/hubs", function(r)
    r.route("/{hubID}", function(r)
      r.get("/", say("/hubs/%s %s", "hubID"))
      r.get("/touch", say("/hubs/%s/touch %s", "hubID"))
      local sr3 = chi.router()
      sr3.get("/", say("/hubs/%s/webhooks %s", "hubID"))
      sr3.route("/{webhookID}", function(r)
        r.get("/", say("/hubs/%s/webhooks/%s %s", "hubID", "webhookID"))
      end)
      r.with(function(req, next) req.hook = true; return next(req) end).mount("/webhooks", sr3)
      r.route("/posts", function(r)
        r.get("/", say("/hubs/%s/posts %s", "hubID"))
      end)
    end)
  end)
  r.route("/folders/", function(r)
    r.get("/", say("/folders/ %s"))
    r.get("/public", say("/folders/public %s"))
  end)
end)
"""


@pytest.fixture(scope="module")
def big_mux():
    script = load(BIG_MUX)
    yield script
    script.close()


@pytest.mark.parametrize(("method", "path", "expected", "pattern"), [
    ("GET", "/favicon.ico", "fav", "/favicon.ico"),
    ("GET", "/hubs/4/view", "/hubs/4/view reqid:1 session:anonymous", "/hubs/{hubID}/view"),
    ("GET", "/hubs/4/view/index.html", "/hubs/4/view/index.html reqid:1 session:anonymous",
     "/hubs/{hubID}/view/*"),
    ("POST", "/hubs/ethereumhub/view/index.html",
     "/hubs/ethereumhub/view/index.html reqid:1 session:anonymous", "/hubs/{hubSlug}/view/*"),
    ("GET", "/", "/ reqid:1 session:elvis", "/"),
    ("GET", "/suggestions", "/suggestions reqid:1 session:elvis", "/suggestions"),
    ("GET", "/woot/444/hiiii", "/woot/444/hiiii", "/woot/{wootID}/*"),
    ("GET", "/hubs/123", "/hubs/123 reqid:1 session:elvis", "/hubs/{hubID}"),
    ("GET", "/hubs/123/touch", "/hubs/123/touch reqid:1 session:elvis", "/hubs/{hubID}/touch"),
    ("GET", "/hubs/123/webhooks", "/hubs/123/webhooks reqid:1 session:elvis",
     "/hubs/{hubID}/webhooks"),
    ("GET", "/hubs/123/posts", "/hubs/123/posts reqid:1 session:elvis", "/hubs/{hubID}/posts"),
    ("GET", "/folders", None, None),
    ("GET", "/folders/", "/folders/ reqid:1 session:elvis", "/folders"),
    ("GET", "/folders/public", "/folders/public reqid:1 session:elvis", "/folders/public"),
    ("GET", "/folders/nothing", None, "/folders/*"),
])
def test_TestMuxBig(big_mux, method, path, expected, pattern) -> None:
    outcome = answer(big_mux, path, method)
    if expected is None:  # "404 page not found"
        assert isinstance(outcome.action, RejectAction) and outcome.action.status == 404
        # chi's RoutePattern() there: the mounts on the way ("" at the root: our None)
        assert outcome.route_pattern == (pattern or None)
        return
    assert outcome.action == RespondAction(200, expected.encode())
    assert outcome.route_pattern == pattern


def test_TestWalker(big_mux) -> None:
    """chi.Walk over bigMux: every route, with its full pattern. Ours: the route table."""
    rows = {(r.method, r.pattern, r.middleware) for r in big_mux.routes}
    assert rows == {
        ("GET", "/favicon.ico", 3), ("GET", "/hubs/{hubID}/view", 3),
        ("GET", "/hubs/{hubID}/view/*", 3), ("POST", "/hubs/{hubSlug}/view/*", 3),
        ("GET", "/", 3), ("GET", "/suggestions", 3), ("GET", "/woot/{wootID}/*", 3),
        ("GET", "/hubs/{hubID}", 3), ("GET", "/hubs/{hubID}/touch", 3),
        ("GET", "/hubs/{hubID}/webhooks", 4), ("GET", "/hubs/{hubID}/webhooks/{webhookID}", 4),
        ("GET", "/hubs/{hubID}/posts", 3), ("GET", "/folders", 3),
        ("GET", "/folders/public", 3),
    }


# -- Walk tests of tree_test.go, as routes and the middleware that run ------------------------

@pytest.mark.parametrize(("setup", "expected"), [
    ("""  -- With+Group wrapping Route+With
    chi.with(mw).group(function(r)
      r.route("/foo", function(r) r.with(mw).post("/bar", handler) end)
    end)""", 2),
    ("""  -- Use on subrouter combined with outer With
    chi.with(mw).group(function(r)
      r.route("/foo", function(r)
        r.use(mw)
        r.with(mw).post("/bar", handler)
      end)
    end)""", 3),
])
def test_TestWalkInlineMiddlewaresAcrossSubrouter(setup, expected) -> None:
    script = load("function mw(req, next) return next(req) end\n"
                  "local function handler(req) return respond(200, 'bar') end\n" + setup)
    assert [(r.method, r.pattern, r.middleware) for r in script.routes] == \
        [("POST", "/foo/bar", expected)]
    assert labels(answer(script, "/foo/bar", "POST")) == ["mw"] * expected


def test_TestWalkRouteWithHandlerAndSubrouter() -> None:
    script = load("""
    local function handler(req) return respond(200, req.route_pattern) end
    chi.route("/foo", function(r)
      r.route("/bar", function(r) r.get("/{id}", handler) end)
      r.get("/bar", handler)
    end)
    """)
    assert {(r.method, r.pattern) for r in script.routes} == \
        {("GET", "/foo/bar"), ("GET", "/foo/bar/{id}")}
    assert body(script, "/foo/bar") == "/foo/bar"
    assert body(script, "/foo/bar/7") == "/foo/bar/{id}"


def test_TestRoutesHidesMountStub() -> None:
    # a plain mount reports its routes only, not the mount's own patterns
    plain = load("chi.route('/api', function(r) r.get('/{id}', function() "
                 "return respond(200, 'id') end) end)")
    assert [(r.method, r.pattern) for r in plain.routes] == [("GET", "/api/{id}")]
    # a handler colliding with a mount pattern is the one that answers for its method
    script = load("""
    chi.route("/bar", function(r) r.get("/{id}", function() return respond(200, "id") end) end)
    chi.get("/bar", function() return respond(200, "bar") end)
    """)
    assert body(script, "/bar") == "bar"
    assert status(script, "/bar", "POST") == 404  # the mount: its router has no "/"
    assert {(r.method, r.pattern) for r in script.routes} == \
        {("GET", "/bar"), ("GET", "/bar/{id}")}


def test_TestWalkMiddlewaresAcrossGroupAndRoute() -> None:
    script = load("""
    function requestID(req, next) return next(req) end
    function timeout(req, next) return next(req) end
    local function handler(req) return respond(200, "ok") end
    chi.use(requestID)
    chi.get("/A", handler)
    chi.group(function(r)
      r.use(timeout)
      r.get("/B", handler)
      r.route("/C", function(r) r.get("/D", handler) end)
    end)
    """)
    want = {"/A": ["requestID"], "/B": ["requestID", "timeout"],
            "/C/D": ["requestID", "timeout"]}
    for path, names in want.items():
        assert labels(answer(script, path)) == names, path
    assert {r.pattern: r.middleware for r in script.routes} == {"/A": 1, "/B": 2, "/C/D": 2}


# -- TestMuxSubroutesBasic --------------------------------------------------------------------

def test_TestMuxSubroutesBasic() -> None:
    script = load("""
    chi.get("/", function(req) return respond(200, "index") end)
    chi.route("/articles", function(r)
      r.get("/", function(req) return respond(200, "articles-list") end)
      r.get("/search", function(req) return respond(200, "search-articles") end)
      r.route("/{id}", function(r)
        r.get("/", function(req) return respond(200, "get-article:" .. req.params.id) end)
        r.get("/sync", function(req) return respond(200, "sync-article:" .. req.params.id) end)
      end)
    end)
    """)
    assert body(script, "/") == "index"
    assert body(script, "/articles") == "articles-list"
    assert body(script, "/articles/search") == "search-articles"
    assert body(script, "/articles/123") == "get-article:123"
    assert body(script, "/articles/123/sync") == "sync-article:123"
    # chi's RoutePattern(): a route "/" inside route("/articles") reports "/articles"
    assert answer(script, "/articles").route_pattern == "/articles"
    assert answer(script, "/articles/").route_pattern == "/articles"
    assert answer(script, "/articles/123").route_pattern == "/articles/{id}"


# -- TestMuxSubroutes -------------------------------------------------------------------------

def test_TestMuxSubroutes() -> None:
    script = load("""
    local function say(text) return function(req) return respond(200, text) end end
    chi.get("/hubs/{hubID}/view", say("hub1"))
    chi.get("/hubs/{hubID}/view/*", say("hub2"))
    local sr = chi.router()
    sr.get("/", say("hub3"))
    chi.mount("/hubs/{hubID}/users", sr)
    chi.get("/hubs/{hubID}/users/", say("hub3 override"))
    local sr3 = chi.router()
    sr3.get("/", say("account1"))
    sr3.get("/hi", say("account2"))
    chi.route("/accounts/{accountID}", function(r)
      r.mount("/", sr3)
    end)
    """)
    assert body(script, "/hubs/123/view") == "hub1"
    assert body(script, "/hubs/123/view/index.html") == "hub2"
    assert body(script, "/hubs/123/users") == "hub3"
    assert body(script, "/hubs/123/users/") == "hub3 override"
    assert body(script, "/accounts/44") == "account1"
    assert body(script, "/accounts/44/hi") == "account2"
    # chi: RoutePatterns == ["/accounts/{accountID}/*", "/*", "/hi"]; joined, RoutePattern()
    outcome = answer(script, "/accounts/44/hi")
    assert outcome.route_pattern == "/accounts/{accountID}/hi"
    assert dict(outcome.params) == {"accountID": "44"}


# -- TestServeHTTPExistingContext (its routing half) ------------------------------------------

def test_TestServeHTTPExistingContext() -> None:
    script = load("""
    chi.get("/hi", function(req) return respond(200, "hi ctx") end)
    chi.not_found(function(req) return respond(404, "nothing here ctx") end)
    """)
    assert answer(script, "/hi").action == RespondAction(200, b"hi ctx")
    assert answer(script, "/hello").action == RespondAction(404, b"nothing here ctx")


# -- TestNestedGroups -------------------------------------------------------------------------

def test_TestNestedGroups() -> None:
    script = load("""
    local function handlerPrintCounter(req) return respond(200, tostring(req.counter or 0)) end
    local function mwIncreaseCounter(req, next)
      req.counter = (req.counter or 0) + 1
      return next(req)
    end
    -- each route represents value of its counter (number of applied middlewares)
    chi.get("/0", handlerPrintCounter)
    chi.group(function(r)
      r.use(mwIncreaseCounter) -- counter == 1
      r.get("/1", handlerPrintCounter)
      r.with(mwIncreaseCounter).get("/2", handlerPrintCounter)
      r.group(function(r)
        r.use(mwIncreaseCounter, mwIncreaseCounter) -- counter == 3
        r.get("/3", handlerPrintCounter)
      end)
      r.route("/", function(r)
        r.use(mwIncreaseCounter, mwIncreaseCounter) -- counter == 3
        r.with(mwIncreaseCounter).get("/4", handlerPrintCounter)
        r.group(function(r)
          r.use(mwIncreaseCounter, mwIncreaseCounter) -- counter == 5
          r.get("/5", handlerPrintCounter)
          r.with(mwIncreaseCounter).get("/6", handlerPrintCounter)
        end)
      end)
    end)
    """)
    for route in "0123456":
        assert body(script, "/" + route) == route


# -- TestMiddlewarePanicOnLateUse -------------------------------------------------------------

def test_TestMiddlewarePanicOnLateUse() -> None:
    line, message = refused("""local function handler(req) return respond(200, "hello") end
    local function mw(req, next) return next(req) end
    chi.get("/", handler)
    chi.use(mw) -- too late to apply middleware
    """)
    assert line == 4 and "before any route" in message


# -- TestMountingExistingPath -----------------------------------------------------------------

def test_TestMountingExistingPath() -> None:
    line, message = refused("""local function handler(req) return respond(200, "") end
    chi.get("/", handler)
    chi.mount("/hi", "a")
    chi.mount("/hi", "a")
    """)
    assert line == 4
    assert "attempting to mount() a handler on an existing path, '/hi'" in message


def test_TestMountingExistingPath_params_named_differently() -> None:
    """chi's check compares params by position: `/a/{x}` then `/a/{y}` is the same path."""
    source = """local r1, r2 = chi.router(), chi.router()
    r1.get("/", function(req) return respond(200, "1") end)
    r2.get("/", function(req) return respond(200, "2") end)
    chi.mount("/a/{x}", r1)
    chi.route("/a/{y}", function(r) r.get("/", function() return respond(200, "3") end) end)
    chi.mount("/a/{z:[0-9]+}", r2)
    """
    result = validate(source, backend_names=["a"])
    assert [(e.line, "existing path" in e.message) for e in result.errors] == \
        [(5, True), (6, True)]
    # a different regexp or static text in the same position is another path
    script = load("""local r1, r2 = chi.router(), chi.router()
    r1.get("/", function(req) return respond(200, "x " .. req.params.x) end)
    r2.get("/", function(req) return respond(200, "b") end)
    chi.mount("/a/{x}", r1)
    chi.mount("/a/{x}/b", r2)
    """)
    assert body(script, "/a/1") == "x 1"
    assert body(script, "/a/1/b") == "b"


# -- TestMountingSimilarPattern ---------------------------------------------------------------

def test_TestMountingSimilarPattern() -> None:
    script = load("""
    chi.get("/hi", function(req) return respond(200, "bye") end)
    local r2 = chi.router()
    r2.get("/", function(req) return respond(200, "foobar") end)
    local r3 = chi.router()
    r3.get("/", function(req) return respond(200, "foo") end)
    chi.mount("/foobar", r2)
    chi.mount("/foo", r3)
    """)
    assert body(script, "/hi") == "bye"
    assert body(script, "/foobar") == "foobar"
    assert body(script, "/foo") == "foo"


# -- TestMuxEmptyParams -----------------------------------------------------------------------

def test_TestMuxEmptyParams() -> None:
    script = load("""
    chi.get("/users/{x}/{y}/{z}", function(req)
      return respond(200, req.params.x .. "-" .. req.params.y .. "-" .. req.params.z)
    end)
    """)
    assert body(script, "/users/a/b/c") == "a-b-c"
    outcome = answer(script, "/users///c")
    assert outcome.action == RespondAction(200, b"--c")
    assert dict(outcome.params) == {"x": "", "y": "", "z": "c"}
    assert outcome.route_pattern == "/users/{x}/{y}/{z}"
    assert status(script, "/users/a/b/") == 404  # never empty at the end of the path


# -- TestMuxMissingParams ---------------------------------------------------------------------

def test_TestMuxMissingParams() -> None:
    script = load(r"""
    chi.get([[/user/{userId:\d+}]], function(req)
      return respond(200, "userId = '" .. req.params.userId .. "'")
    end)
    chi.not_found(function(req) return respond(404, "nothing here") end)
    """)
    assert body(script, "/user/123") == "userId = '123'"
    assert answer(script, "/user/").action == RespondAction(404, b"nothing here")


# -- TestMuxWildcardRoute, TestMuxWildcardRouteCheckTwo ---------------------------------------

@pytest.mark.parametrize("pattern", ["/*/wildcard/must/be/at/end",  # TestMuxWildcardRoute
                                     "/*/wildcard/{must}/be/at/end"])  # ...CheckTwo
def test_TestMuxWildcardRoute(pattern) -> None:
    line, message = refused(f"local function handler(req) return respond(200, '') end\n"
                            f"chi.get({pattern!r}, handler)")
    assert line == 2 and "must be the last character" in message


# -- TestMuxRegexp, TestMuxRegexp2, TestMuxRegexp3 --------------------------------------------

def test_TestMuxRegexp() -> None:
    script = load("""
    chi.route("/{param:[0-9]*}/test", function(r)
      r.get("/", function(req) return respond(200, "Hi: " .. req.params.param) end)
    end)
    """)
    outcome = answer(script, "//test")
    assert outcome.action == RespondAction(200, b"Hi: ")
    assert dict(outcome.params) == {"param": ""}
    assert outcome.route_pattern == "/{param:[0-9]*}/test"


def test_TestMuxRegexp2() -> None:
    script = load("""
    chi.get("/foo-{suffix:[a-z]{2,3}}.json", function(req)
      return respond(200, req.params.suffix)
    end)
    """)
    # chi descends into the last regexp param with "", its regexp untested: a match
    empty = answer(script, "/foo-.json")
    assert empty.action == RespondAction(200, b"") and dict(empty.params) == {"suffix": ""}
    assert body(script, "/foo-abc.json") == "abc"
    assert status(script, "/foo-abcd.json") == 404


def test_TestMuxRegexp3() -> None:
    script = load("""
    local function say(text) return function(req) return respond(200, text) end end
    chi.get("/one/{firstId:[a-z0-9-]+}/{secondId:[a-z]+}/first", say("first"))
    chi.get("/one/{firstId:[a-z0-9-_]+}/{secondId:[0-9]+}/second", say("second"))
    chi.delete("/one/{firstId:[a-z0-9-_]+}/{secondId:[0-9]+}/second", say("third"))
    chi.route("/one", function(r)
      r.get("/{dns:[a-z-0-9_]+}", say("_"))
      r.get("/{dns:[a-z-0-9_]+}/info", say("_"))
      r.delete("/{id:[0-9]+}", say("forth"))
    end)
    """)
    assert body(script, "/one/hello/peter/first") == "first"
    assert body(script, "/one/hithere/123/second") == "second"
    assert body(script, "/one/hithere/123/second", "DELETE") == "third"
    assert body(script, "/one/123", "DELETE") == "forth"


# -- TestMuxSubrouterWildcardParam ------------------------------------------------------------

def test_TestMuxSubrouterWildcardParam() -> None:
    script = load("""
    local function h(req)
      return respond(200, "param:" .. req.params.param .. " *:" .. (req.params["*"] or ""))
    end
    chi.get("/bare/{param}", h)
    chi.get("/bare/{param}/*", h)
    chi.route("/case0", function(r)
      r.get("/{param}", h)
      r.get("/{param}/*", h)
    end)
    """)
    assert body(script, "/bare/hi") == "param:hi *:"
    assert body(script, "/bare/hi/yes") == "param:hi *:yes"
    assert body(script, "/case0/hi") == "param:hi *:"
    assert body(script, "/case0/hi/yes") == "param:hi *:yes"
    assert answer(script, "/case0/hi/yes").route_pattern == "/case0/{param}/*"


# -- TestEscapedURLParams ---------------------------------------------------------------------

def test_TestEscapedURLParams() -> None:
    script = load("""
    chi.get("/api/{identifier}/{region}/{size}/{rotation}/*", function(req)
      return respond(200, "success")
    end)
    """)
    outcome = answer(script, "/api/http:%2f%2fexample.com%2fimage.png/full/max/0/color.png")
    assert outcome.action == RespondAction(200, b"success")
    assert dict(outcome.params) == {"identifier": "http:%2f%2fexample.com%2fimage.png",
                                    "region": "full", "size": "max", "rotation": "0",
                                    "*": "color.png"}


# -- TestCustomHTTPMethod, TestQueryHTTPMethod (what the script API can express) --------------

def test_TestCustomHTTPMethod() -> None:
    # chi refuses a method nobody registered; the script API has no RegisterMethod
    line, message = refused("chi.get('/', function(req) return respond(200, '.') end)\n"
                            "chi.handle('BOO', '/hi', function(req) return respond(200, '') end)")
    assert line == 2 and "unknown HTTP method 'BOO'" in message
    # ... and serves any method on "*" routes, as if it had been registered
    script = load("""
    chi.get("/", function(req) return respond(200, ".") end)
    chi.handle("*", "/hi", function(req) return respond(200, "custom method") end)
    """)
    assert body(script, "/") == "."
    assert body(script, "/hi", "BOO") == "custom method"
    assert status(script, "/", "BOO") == 405


def test_TestQueryHTTPMethod() -> None:
    from luascripts.engine.effects import BodyAnswer, ReadBody

    script = load("""
    chi.get("/search", function(req) return respond(200, "get") end)
    -- QUERY is a safe, idempotent method that conveys a request body (RFC 10008)
    chi.query("/search", function(req) return respond(200, "query: " .. req.body()) end)
    chi.handle("QUERY", "/reports", function(req) return respond(200, "reports") end)
    chi.handle("*", "/any", function(req) return respond(200, "any") end)
    """)
    run = script.start(request("/search", "QUERY"))
    assert run.effect == ReadBody()
    assert run.resume(BodyAnswer(b"select 1")).action.body == b"query: select 1"
    assert body(script, "/search") == "get"
    assert body(script, "/reports", "QUERY") == "reports"
    assert body(script, "/any", "QUERY") == "any"
    # An unregistered method on the same route answers 405 with QUERY in Allow.
    assert answer(script, "/search", "POST").action.allow == ("GET", "QUERY")


# -- TestMuxMatch, TestMuxMatch_HasBasePath, TestMuxMatch_DoesNotHaveBasePath, TestMuxFind ----

FIND = """
local function say(text) return function(req) return respond(200, text) end end
chi.get("/", say(""))
chi.get("/hi", say("bye"))
chi.route("/yo", function(r) r.get("/sup", say("sup")) end)
chi.route("/articles", function(r)
  r.get("/{id}", function(req) return respond(200, "article:" .. req.params.id) end)
end)
chi.route("/users", function(r)
  r.head("/{id}", say("user"))
  r.get("/{id}", function(req) return respond(200, "user:" .. req.params.id) end)
end)
chi.route("/api", function(r)
  r.route("/groups", function(r)
    r.route("/v2", function(r)
      r.get("/", say("groups"))
      r.post("/{id}", say("POST groups"))
    end)
  end)
end)
"""


def test_TestMuxMatch() -> None:
    script = load(FIND)
    assert body(script, "/users/1") == "user:1"  # Match(GET /users/1) == true
    assert status(script, "/articles/10", "HEAD") == 405  # Match(HEAD /articles/10) == false


def test_TestMuxMatch_HasBasePath() -> None:
    script = load("chi.get('/', function(req) return respond(200, '') end)")
    assert answer(script, "/").route_pattern == "/"


def test_TestMuxMatch_DoesNotHaveBasePath() -> None:
    script = load("local r = chi.router()\nchi.mount('/r', r)")  # a router with no routes
    assert status(script, "/r") == 404


@pytest.mark.parametrize(("method", "path", "pattern"), [
    ("GET", "/nope", None),
    ("GET", "/users/1", "/users/{id}"),
    ("HEAD", "/articles/10", None),
    ("GET", "/yo/sup", "/yo/sup"),
    ("GET", "/api/groups/v2/", "/api/groups/v2"),  # Mux.Find: "/api/groups/v2/"
    ("POST", "/api/groups/v2/1", "/api/groups/v2/{id}"),
])
def test_TestMuxFind(method, path, pattern) -> None:
    # Mux.Find(): the pattern of the route a request would run, "" when none would.
    outcome = answer(load(FIND), path, method)
    if pattern:
        assert outcome.route_pattern == pattern
        assert isinstance(outcome.action, RespondAction)
    else:
        assert isinstance(outcome.action, RejectAction)


# -- pattern_test.go: TestPattern; path_value_test.go: TestPathValue --------------------------

@pytest.mark.parametrize(("pattern", "method", "path"), [
    ("/hubs/{hubID}", "GET", "/hubs/392"),
    ("/users/{userID}/conversations/{conversationID}", "POST",
     "/users/Gojo/conversations/2948"),
    ("/users/{userID}/friends/*", "POST", "/users/Gojo/friends/all-of-them/and/more"),
])
def test_TestPattern(pattern, method, path) -> None:
    script = load(f"chi.handle({method!r}, {pattern!r}, function(req) "
                  "return respond(200, req.route_pattern) end)")
    assert body(script, path, method) == pattern


def test_TestPattern_nested_sub_router() -> None:
    script = load("""
    chi.route("/accounts/{accountID}", function(r)
      r.handle("GET", "/hi", function(req) return respond(200, req.route_pattern) end)
    end)
    """)
    assert body(script, "/accounts/44/hi") == "/accounts/{accountID}/hi"


@pytest.mark.parametrize(("pattern", "method", "keys", "path", "expected"), [
    ("/hubs/{hubID}", "GET", ["hubID"], "/hubs/392", "392"),
    ("/users/{userID}/conversations/{conversationID}", "POST", ["userID", "conversationID"],
     "/users/Gojo/conversations/2948", "Gojo 2948"),
    ("/users/{userID}/friends/*", "POST", ["userID", "*"],
     "/users/Gojo/friends/all-of-them/and/more", "Gojo all-of-them/and/more"),
])
def test_TestPathValue(pattern, method, keys, path, expected) -> None:
    script = load(f"""
    local keys = {{{", ".join(repr(k) for k in keys)}}}
    chi.handle({method!r}, {pattern!r}, function(req)
      local values = {{}}
      for i, k in ipairs(keys) do values[i] = req.params[k] or ("NOT_FOUND:" .. k) end
      return respond(200, table.concat(values, " "))
    end)
    """)
    assert body(script, path, method) == expected


# -- Route patterns chi reports for mounts, backends and fallbacks ----------------------------

def test_route_pattern_of_backend_mounts_and_mount_points() -> None:
    script = load("""
    chi.mount("/legacy", "legacy")
    chi.route("/api", function(r)
      r.mount("/old", "legacy")
      r.get("/*", function(req) return respond(200, req.route_pattern) end)
    end)
    """)
    assert answer(script, "/legacy").route_pattern == "/legacy"
    assert answer(script, "/legacy/").route_pattern == "/legacy"
    assert answer(script, "/legacy/x/y").route_pattern == "/legacy/*"
    assert answer(script, "/api/old/x").route_pattern == "/api/old/*"
    assert answer(script, "/api/old/x").action == ProxyAction(("legacy",), path="/x")
    # "/*" reached through each of the mount's three patterns, as chi joins them
    assert body(script, "/api") == "/api/*"
    assert body(script, "/api/") == "/api//*"
    assert body(script, "/api/x") == "/api/*"


def test_route_pattern_chi_reports_in_not_found_handlers() -> None:
    """In a 404/405 handler chi's RoutePattern() holds the mount patterns matched on the way
    ("" at the root). The matcher computes it (Match.pattern) for the script runner."""
    script = load("""
    local sr = chi.router()
    sr.get("/sub", function(req) return respond(200, "sub") end)
    chi.mount("/admin", sr)
    chi.get("/hi", function(req) return respond(200, "hi") end)
    """)
    root = script._compiled.routes.root
    assert match(root, "GET", "/nope").pattern is None
    assert match(root, "GET", "/admin/nope").pattern == "/admin/*"
    assert match(root, "GET", "/admin").pattern == "/admin"  # the mount point: sr sees "/"
    assert match(root, "POST", "/admin/sub").pattern == "/admin/*"
    assert match(root, "GET", "/admin/sub").pattern == "/admin/sub"
