"""go-chi v5's tree_test.go (and context_test.go's RoutePattern tests), vector for vector.

Each Go test inserts handlers into a bare tree and looks paths up. Here the same patterns are
registered by a real Lua script, in the same order and for the same methods, each handler
answering with its Go name; every vector becomes a request through
`LoadedScript.handle(ScriptRequest)` asserting what chi's test asserts: which handler (none:
our 404), and the param keys and values in order. TestTreeFindPattern also drives our `Tree`
directly, since chi's test calls `findPattern` itself, and then through `mount()`, which is
where chi uses it. Tests are named after the Go test they come from.

Left out, with the reason (they have no meaning for Lua scripts):
- TestWalker, TestWalkInlineMiddlewaresAcrossSubrouter, TestWalkRouteWithHandlerAndSubrouter,
  TestRoutesHidesMountStub, TestWalkMiddlewaresAcrossGroupAndRoute: chi.Walk and
  Mux.Routes() list Go handler values and middleware funcs. Their routing content (which
  routes exist, which middleware wrap them) is asserted through requests and the script's
  route table in test_chi_mux.py under the same names.
- TestContext_Clone: copying a Go routing context for a goroutine.
- BenchmarkTreeGet: a Go benchmark (ours: bench/micro/bench_matching.py).
"""

from __future__ import annotations

import pytest

from luascripts.engine import RejectAction, RespondAction, ScriptLoadError
from luascripts.engine.patterns import parse_pattern, route_pattern
from luascripts.engine.tree import Tree

from .support import load, request

SAY = "local function say(name) return function(req) return respond(200, name) end end"


def tree_script(inserts: list[tuple[str, str, str]]):
    """A script registering (method, pattern, handler name) in order, like tr.InsertRoute."""
    lines = [SAY] + [f"chi.handle({m!r}, {p!r}, say({h!r}))" for m, p, h in inserts]
    return load("\n".join(lines))


def expect(script, method: str, path: str, handler: str | None, keys: list[str],
           values: list[str]) -> None:
    outcome = script.handle(request(path, method))
    if handler is None:
        assert isinstance(outcome.action, RejectAction), (path, outcome.action)
        assert outcome.action.status == 404, path
        assert dict(outcome.params) == {}, path
        return
    assert outcome.action == RespondAction(200, handler.encode()), (path, outcome.action)
    assert list(outcome.params.items()) == list(zip(keys, values, strict=True)), path


# -- TestTree ---------------------------------------------------------------------------------

TREE = [
    ("GET", "/", "hIndex"),
    ("GET", "/favicon.ico", "hFavicon"),
    ("GET", "/pages/*", "hStub"),
    ("GET", "/article", "hArticleList"),
    ("GET", "/article/", "hArticleList"),
    ("GET", "/article/near", "hArticleNear"),
    ("GET", "/article/{id}", "hStub"),
    ("GET", "/article/{id}", "hArticleShow"),
    ("GET", "/article/{id}", "hArticleShow"),  # duplicate will have no effect
    ("GET", "/article/@{user}", "hArticleByUser"),
    ("GET", "/article/{sup}/{opts}", "hArticleShowOpts"),
    ("GET", "/article/{id}/{opts}", "hArticleShowOpts"),  # overwrite above route, latest wins
    ("GET", "/article/{iffd}/edit", "hStub"),
    ("GET", "/article/{id}//related", "hArticleShowRelated"),
    ("GET", "/article/slug/{month}/-/{day}/{year}", "hArticleSlug"),
    ("GET", "/admin/user", "hUserList"),
    ("GET", "/admin/user/", "hStub"),  # will get replaced by next route
    ("GET", "/admin/user/", "hUserList"),
    ("GET", "/admin/user//{id}", "hUserShow"),
    ("GET", "/admin/user/{id}", "hUserShow"),
    ("GET", "/admin/apps/{id}", "hAdminAppShow"),
    ("GET", "/admin/apps/{id}/*", "hAdminAppShowCatchall"),
    ("GET", "/admin/*", "hStub"),  # catchall segment will get replaced by next route
    ("GET", "/admin/*", "hAdminCatchall"),
    ("GET", "/users/{userID}/profile", "hUserProfile"),
    ("GET", "/users/super/*", "hUserSuper"),
    ("GET", "/users/*", "hUserAll"),
    ("GET", "/hubs/{hubID}/view", "hHubView1"),
    ("GET", "/hubs/{hubID}/view/*", "hHubView2"),
    ("GET", "/hubs/{hubID}/*", "sr"),  # chi inserts a sub-router here as a plain handler
    ("GET", "/hubs/{hubID}/users", "hHubView3"),
]

TREE_VECTORS = [
    ("/", "hIndex", [], []),
    ("/favicon.ico", "hFavicon", [], []),
    ("/pages", None, [], []),
    ("/pages/", "hStub", ["*"], [""]),
    ("/pages/yes", "hStub", ["*"], ["yes"]),
    ("/article", "hArticleList", [], []),
    ("/article/", "hArticleList", [], []),
    ("/article/near", "hArticleNear", [], []),
    ("/article/neard", "hArticleShow", ["id"], ["neard"]),
    ("/article/123", "hArticleShow", ["id"], ["123"]),
    ("/article/123/456", "hArticleShowOpts", ["id", "opts"], ["123", "456"]),
    ("/article/@peter", "hArticleByUser", ["user"], ["peter"]),
    ("/article/22//related", "hArticleShowRelated", ["id"], ["22"]),
    ("/article/111/edit", "hStub", ["iffd"], ["111"]),
    ("/article/slug/sept/-/4/2015", "hArticleSlug", ["month", "day", "year"],
     ["sept", "4", "2015"]),
    ("/article/:id", "hArticleShow", ["id"], [":id"]),
    ("/admin/user", "hUserList", [], []),
    ("/admin/user/", "hUserList", [], []),
    ("/admin/user/1", "hUserShow", ["id"], ["1"]),
    ("/admin/user//1", "hUserShow", ["id"], ["1"]),
    ("/admin/hi", "hAdminCatchall", ["*"], ["hi"]),
    ("/admin/lots/of/:fun", "hAdminCatchall", ["*"], ["lots/of/:fun"]),
    ("/admin/apps/333", "hAdminAppShow", ["id"], ["333"]),
    ("/admin/apps/333/woot", "hAdminAppShowCatchall", ["id", "*"], ["333", "woot"]),
    ("/hubs/123/view", "hHubView1", ["hubID"], ["123"]),
    ("/hubs/123/view/index.html", "hHubView2", ["hubID", "*"], ["123", "index.html"]),
    ("/hubs/123/users", "hHubView3", ["hubID"], ["123"]),
    ("/users/123/profile", "hUserProfile", ["userID"], ["123"]),
    ("/users/super/123/okay/yes", "hUserSuper", ["*"], ["123/okay/yes"]),
    ("/users/123/okay/yes", "hUserAll", ["*"], ["123/okay/yes"]),
]


@pytest.fixture(scope="module")
def tree():
    script = tree_script(TREE)
    yield script
    script.close()


@pytest.mark.parametrize(("path", "handler", "keys", "values"), TREE_VECTORS,
                         ids=[v[0] for v in TREE_VECTORS])
def test_TestTree(tree, path, handler, keys, values) -> None:
    expect(tree, "GET", path, handler, keys, values)


# -- TestTreeMoar -----------------------------------------------------------------------------

TREE_MOAR = [
    ("GET", "/articlefun", "hStub5"),
    ("GET", "/articles/{id}", "hStub"),
    ("DELETE", "/articles/{slug}", "hStub8"),
    ("GET", "/articles/search", "hStub1"),
    ("GET", "/articles/{id}:delete", "hStub8"),
    ("GET", "/articles/{iidd}!sup", "hStub4"),
    ("GET", "/articles/{id}:{op}", "hStub3"),
    ("GET", "/articles/{id}:{op}", "hStub2"),  # this route sets a new handler for the above
    ("GET", "/articles/{slug:^[a-z]+}/posts", "hStub"),  # only matches if contents match
    ("GET", "/articles/{id}/posts/{pid}", "hStub6"),
    ("GET", "/articles/{id}/posts/{month}/{day}/{year}/{slug}", "hStub7"),
    ("GET", "/articles/{id}.json", "hStub10"),
    ("GET", "/articles/{id}/data.json", "hStub11"),
    ("GET", "/articles/files/{file}.{ext}", "hStub12"),
    ("PUT", "/articles/me", "hStub13"),
    ("GET", "/pages/*", "hStub"),
    ("GET", "/pages/*", "hStub9"),
    ("GET", "/users/{id}", "hStub14"),
    ("GET", "/users/{id}/settings/{key}", "hStub15"),
    ("GET", "/users/{id}/settings/*", "hStub16"),
]

TREE_MOAR_VECTORS = [
    ("GET", "/articles/search", "hStub1", [], []),
    ("GET", "/articlefun", "hStub5", [], []),
    ("GET", "/articles/123", "hStub", ["id"], ["123"]),
    ("DELETE", "/articles/123mm", "hStub8", ["slug"], ["123mm"]),
    ("GET", "/articles/789:delete", "hStub8", ["id"], ["789"]),
    ("GET", "/articles/789!sup", "hStub4", ["iidd"], ["789"]),
    ("GET", "/articles/123:sync", "hStub2", ["id", "op"], ["123", "sync"]),
    ("GET", "/articles/456/posts/1", "hStub6", ["id", "pid"], ["456", "1"]),
    ("GET", "/articles/456/posts/09/04/1984/juice", "hStub7",
     ["id", "month", "day", "year", "slug"], ["456", "09", "04", "1984", "juice"]),
    ("GET", "/articles/456.json", "hStub10", ["id"], ["456"]),
    ("GET", "/articles/456/data.json", "hStub11", ["id"], ["456"]),
    ("GET", "/articles/files/file.zip", "hStub12", ["file", "ext"], ["file", "zip"]),
    ("GET", "/articles/files/photos.tar.gz", "hStub12", ["file", "ext"], ["photos", "tar.gz"]),
    ("GET", "/articles/files/photos.tar.gz", "hStub12", ["file", "ext"], ["photos", "tar.gz"]),
    ("PUT", "/articles/me", "hStub13", [], []),
    ("GET", "/articles/me", "hStub", ["id"], ["me"]),
    ("GET", "/pages", None, [], []),
    ("GET", "/pages/", "hStub9", ["*"], [""]),
    ("GET", "/pages/yes", "hStub9", ["*"], ["yes"]),
    ("GET", "/users/1", "hStub14", ["id"], ["1"]),
    ("GET", "/users/", None, [], []),
    ("GET", "/users/2/settings/password", "hStub15", ["id", "key"], ["2", "password"]),
    ("GET", "/users/2/settings/", "hStub16", ["id", "*"], ["2", ""]),
]


@pytest.fixture(scope="module")
def tree_moar():
    script = tree_script(TREE_MOAR)
    yield script
    script.close()


@pytest.mark.parametrize(("method", "path", "handler", "keys", "values"), TREE_MOAR_VECTORS,
                         ids=[f"{v[0]} {v[1]}" for v in TREE_MOAR_VECTORS])
def test_TestTreeMoar(tree_moar, method, path, handler, keys, values) -> None:
    expect(tree_moar, method, path, handler, keys, values)


# -- TestTreeRegexp ---------------------------------------------------------------------------

TREE_REGEXP = [
    ("GET", "/articles/{rid:^[0-9]{5,6}}", "hStub7"),
    ("GET", "/articles/{zid:^0[0-9]+}", "hStub3"),
    ("GET", "/articles/{name:^@[a-z]+}/posts", "hStub4"),
    ("GET", "/articles/{op:^[0-9]+}/run", "hStub5"),
    ("GET", "/articles/{id:^[0-9]+}", "hStub1"),
    ("GET", "/articles/{id:^[1-9]+}-{aux}", "hStub6"),
    ("GET", "/articles/{slug}", "hStub2"),
]

TREE_REGEXP_VECTORS = [
    ("/articles", None, [], []),
    ("/articles/12345", "hStub7", ["rid"], ["12345"]),
    ("/articles/123", "hStub1", ["id"], ["123"]),
    ("/articles/how-to-build-a-router", "hStub2", ["slug"], ["how-to-build-a-router"]),
    ("/articles/0456", "hStub3", ["zid"], ["0456"]),
    ("/articles/@pk/posts", "hStub4", ["name"], ["@pk"]),
    ("/articles/1/run", "hStub5", ["op"], ["1"]),
    ("/articles/1122", "hStub1", ["id"], ["1122"]),
    ("/articles/1122-yes", "hStub6", ["id", "aux"], ["1122", "yes"]),
]


@pytest.fixture(scope="module")
def tree_regexp():
    script = tree_script(TREE_REGEXP)
    yield script
    script.close()


@pytest.mark.parametrize(("path", "handler", "keys", "values"), TREE_REGEXP_VECTORS,
                         ids=[v[0] for v in TREE_REGEXP_VECTORS])
def test_TestTreeRegexp(tree_regexp, path, handler, keys, values) -> None:
    expect(tree_regexp, "GET", path, handler, keys, values)


# -- TestTreeRegexpRecursive ------------------------------------------------------------------

TREE_REGEXP_RECURSIVE = [
    ("GET", "/one/{firstId:[a-z0-9-]+}/{secondId:[a-z0-9-]+}/first", "hStub1"),
    ("GET", "/one/{firstId:[a-z0-9-_]+}/{secondId:[a-z0-9-_]+}/second", "hStub2"),
]


@pytest.mark.parametrize(("path", "handler", "keys", "values"), [
    ("/one/hello/world/first", "hStub1", ["firstId", "secondId"], ["hello", "world"]),
    ("/one/hi_there/ok/second", "hStub2", ["firstId", "secondId"], ["hi_there", "ok"]),
    # chi descends into the last regexp param with an empty value: for "firstId" that is
    # the `[a-z0-9-_]+` one, whose subtree only has ".../second"
    ("/one///first", None, [], []),
    ("/one/hi/123/second", "hStub2", ["firstId", "secondId"], ["hi", "123"]),
])
def test_TestTreeRegexpRecursive(path, handler, keys, values) -> None:
    script = tree_script(TREE_REGEXP_RECURSIVE)
    expect(script, "GET", path, handler, keys, values)


# -- TestTreeRegexMatchWholeParam -------------------------------------------------------------

@pytest.mark.parametrize(("path", "handler"), [
    ("/13", "hStub1"),
    ("/a13", None),
    ("/13.jpg", None),
    ("/a13.jpg", None),
    ("/a/foo", "hStub1"),
    ("//foo", None),  # `{x:.+}` is not the last regexp param at "/": never given ""
    ("//test", "hStub1"),  # `{param:[0-9]*}` is: chi descends into it with ""
])
def test_TestTreeRegexMatchWholeParam(path, handler) -> None:
    script = tree_script([
        ("GET", "/{id:[0-9]+}", "hStub1"),
        ("GET", "/{x:.+}/foo", "hStub1"),
        ("GET", "/{param:[0-9]*}/test", "hStub1"),
    ])
    outcome = script.handle(request(path))
    if handler is None:
        assert outcome.action.status == 404
    else:
        assert outcome.action == RespondAction(200, handler.encode())


# -- TestTreeFindPattern ----------------------------------------------------------------------

FIND_PATTERN = [
    ("GET", "/pages/*", "hStub1"),
    ("GET", "/articles/{id}/*", "hStub2"),
    ("GET", "/articles/{slug}/{uid}/*", "hStub3"),
]


@pytest.mark.parametrize(("pattern", "found"), [
    ("/pages", False),
    ("/pages*", False),
    ("/pages/*", True),
    ("/articles/{id}/*", True),
    ("/articles/{something}/*", True),
    ("/articles/{slug}/{uid}/*", True),
])
def test_TestTreeFindPattern(pattern, found) -> None:
    tree = Tree()
    for method, route, name in FIND_PATTERN:
        tree.insert(method, parse_pattern(route), name)
    assert tree.find_pattern(pattern) is found


@pytest.mark.parametrize(("prefix", "refused"), [
    ("/pages", True),  # findPattern("/pages/*")
    ("/articles/{id}", True),
    ("/articles/{something}", True),  # params compared by position, not by name
    ("/articles/{slug}/{uid}", True),
    ("/articles", False),
    ("/articles/{id}/{x}/{y}", False),
])
def test_TestTreeFindPattern_through_mount(prefix, refused) -> None:
    """Mount() asks findPattern(prefix + "*") and findPattern(prefix + "/*")."""
    lines = [SAY] + [f"chi.handle({m!r}, {p!r}, say({h!r}))" for m, p, h in FIND_PATTERN]
    lines.append(f"chi.mount({prefix!r}, 'a')")
    if not refused:
        script = load("\n".join(lines))
        outcome = script.handle(request(prefix.replace("{", "").replace("}", "") + "/x"))
        assert outcome.action.backends == ("a",)
        return
    with pytest.raises(ScriptLoadError) as info:
        load("\n".join(lines))
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.line == len(lines)
    assert f"attempting to mount() a handler on an existing path, {prefix!r}" \
        in diagnostic.message


# -- context_test.go: TestRoutePattern, TestReplaceWildcardsConsecutive -----------------------

@pytest.mark.parametrize(("patterns", "expected"), [
    (["/v1/*", "/resources/*", "/{resource_id}"], "/v1/resources/{resource_id}"),
    # an additional wildcard, depending on the router structure of the user
    (["/v1/*", "/resources/*", "/*", "/{resource_id}"], "/v1/resources/{resource_id}"),
    # even with many wildcards, keeping the trailing one
    (["/v1/*", "/resources/*", "/*", "/*", "/*", "/{resource_id}/*"],
     "/v1/resources/{resource_id}/*"),
    # respects asterisks as part of the paths
    (["/v1/*", "/resources/*", "/*special_path/*", "/with_asterisks*/*", "/{resource_id}"],
     "/v1/resources/*special_path/with_asterisks*/{resource_id}"),
    (["/"], "/"),  # the root pattern stays "/"
    ([], ""),  # no pattern at all (chi's nil context): ""
])
def test_TestRoutePattern(patterns, expected) -> None:
    assert route_pattern("".join(patterns)) == expected


def test_TestRoutePattern_through_lua() -> None:
    """The router layout TestRoutePattern's comment describes, through a real script."""
    script = load("""
    local function show(req) return respond(200, req.route_pattern) end
    local resources = chi.router()
    resources.route("/", function(r) r.get("/{resource_id}", show) end)
    chi.route("/v1", function(r) r.mount("/resources", resources) end)
    """)
    outcome = script.handle(request("/v1/resources/42"))
    assert outcome.action == RespondAction(200, b"/v1/resources/{resource_id}")
    assert outcome.route_pattern == "/v1/resources/{resource_id}"
    assert dict(outcome.params) == {"resource_id": "42"}


def test_TestReplaceWildcardsConsecutive() -> None:
    assert route_pattern("/foo/*/*/*/bar") == "/foo/bar"
    assert route_pattern("/foo/*/*/*/bar/*") == "/foo/bar/*"
