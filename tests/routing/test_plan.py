import pytest

from luascripts.engine.types import Outcome, ProxyAction, RejectAction, RespondAction
from routing.balancer import Balancer
from routing.conf import get_conf
from routing.errors import MethodNotAllowed, NoHealthyBackend, RouteNotFound, ScriptFailed
from routing.plan import DirectResponse, UpstreamPlan, decide, script_request
from routing.request import parse_scope
from tests.routing.asgi import http_scope
from tests.routing.fakes import backend, tenant


def req(path="/users/1", **kw):
    return parse_scope(http_scope(path, **kw), get_conf())


def proxy(**kw):
    return Outcome(ProxyAction(**kw), route_pattern="/users/{id}")


@pytest.fixture
def acme():
    return tenant("acme", domains=("acme.example.com",), backends=[
        backend("v1", port=9001, base="/base"), backend("v2", port=9002),
        backend("off", port=9003, enabled=False)])


def test_proxy_keeps_raw_path_and_query(acme):
    request = req("/a b", raw_path="/users/%2F..x/%7e", query="q=%20&q=2")
    plan = decide(acme, request, "/users/%2F..x/%7e", proxy(backends=("v2",)))
    assert isinstance(plan, UpstreamPlan)
    assert plan.url == "http://127.0.0.1:9002/users/%2F..x/%7e?q=%20&q=2"


def test_base_path_and_rewrite(acme):
    plan = decide(acme, req(query="a=1"), "/users/1",
                  proxy(backends=("v1",), path="/v1/users/1", query="b=2"))
    assert plan.url == "http://127.0.0.1:9001/base/v1/users/1?b=2"
    assert dict(plan.headers)["host"] == "127.0.0.1:9001"


@pytest.mark.parametrize("path", ["//evil.example/x", "http://evil.example/x", "evil",
                                  "/a/../admin", "/a\r\nHost: evil", "/%2e%2e/admin"])
def test_rewrite_cannot_leave_the_registered_backend(acme, path):
    with pytest.raises(ScriptFailed):
        decide(acme, req(), "/users/1", proxy(backends=("v2",), path=path))


def test_rewritten_query_is_checked(acme):
    with pytest.raises(ScriptFailed):
        decide(acme, req(), "/", proxy(backends=("v2",), query="a=1#frag"))


def test_header_rewrites_and_managed_headers(acme):
    request = req(headers=[("x-remove", "1"), ("x-keep", "k")])
    plan = decide(acme, request, "/", proxy(
        backends=("v2",), set_headers=(("X-Added", "yes"), ("x-forwarded-for", "6.6.6.6"),
                                       ("host", "evil.example")),
        remove_headers=("x-remove",)))
    headers = dict(plan.headers)
    assert headers["x-added"] == "yes" and headers["x-keep"] == "k"
    assert "x-remove" not in headers
    assert headers["host"] == "127.0.0.1:9002"
    assert headers["x-forwarded-for"] == "203.0.113.9"


def test_script_changed_request_headers_are_used(acme):
    outcome = Outcome(ProxyAction(backends=("v2",)), request_headers={"x-user": "42"})
    plan = decide(acme, req(headers=[("x-old", "1")]), "/", outcome)
    headers = dict(plan.headers)
    assert headers["x-user"] == "42" and "x-old" not in headers


def test_script_header_injection_refused(acme):
    with pytest.raises(ScriptFailed):
        decide(acme, req(), "/", proxy(backends=("v2",), set_headers=(("x-a", "1\r\nX-B: 2"),)))


def test_respond_and_reject(acme):
    direct = decide(acme, req(), "/", Outcome(RespondAction(201, b"made", (("X-A", "1"),
                                                                      ("Connection", "x")))))
    assert isinstance(direct, DirectResponse)
    assert direct.status == 201 and direct.body == b"made"
    assert (b"x-a", b"1") in direct.headers and (b"content-length", b"4") in direct.headers
    assert not any(name == b"connection" for name, _ in direct.headers)
    with pytest.raises(RouteNotFound):
        decide(acme, req(), "/", Outcome(RejectAction(404, "nope")))
    with pytest.raises(MethodNotAllowed) as info:
        decide(acme, req(), "/", Outcome(RejectAction(405, "no", allow=("GET", "POST"))))
    assert info.value.headers == (("allow", "GET, POST"),)
    with pytest.raises(Exception) as info:
        decide(acme, req(), "/", Outcome(RejectAction(401, "token please")))
    assert info.value.status == 401 and info.value.detail == "token please"


def test_unknown_backend_is_a_script_failure(acme):
    with pytest.raises(ScriptFailed):
        decide(acme, req(), "/", proxy(backends=("nope",)))


def test_disabled_or_unhealthy_backends_give_503(acme):
    with pytest.raises(NoHealthyBackend) as info:
        decide(acme, req(), "/", proxy(backends=("off",)))
    assert ("retry-after", "5") in info.value.headers
    with pytest.raises(NoHealthyBackend):
        decide(acme, req(), "/", proxy(backends=("v1", "v2")), healthy=lambda b: False)
    plan = decide(acme, req(), "/", proxy(backends=("v1", "v2")),
                  healthy=lambda b: b.name == "v2")
    assert plan.backend.name == "v2" and plan.fallbacks == ()


def test_no_script_balances_enabled_backends_and_forwards_router_path(acme):
    balancer = Balancer()
    names = [decide(acme, req(), "/rest", None, balancer=balancer).backend.name
             for _ in range(4)]
    assert names == ["v1", "v2", "v1", "v2"]
    plan = decide(acme, req(), "/rest", None, balancer=balancer)
    assert plan.path.endswith("/rest")


def test_hash_key_is_sticky(acme):
    picks = {decide(acme, req(), "/", proxy(backends=("v1", "v2"), hash_key="user-7"),
                    balancer=Balancer()).backend.name for _ in range(5)}
    assert len(picks) == 1


def test_timeouts(acme):
    plan = decide(acme, req(), "/", proxy(backends=("v2",), timeout_ms=1500),
                  total_timeout_s=300)
    assert plan.total_timeout_s == 1.5 and plan.read_timeout_s == 1.5
    plan = decide(acme, req(), "/", proxy(backends=("v2",)), total_timeout_s=300)
    assert (plan.connect_timeout_s, plan.read_timeout_s, plan.total_timeout_s) == (2, 30, 300)


def test_fallback_url_uses_the_fallbacks_own_base(acme):
    plan = decide(acme, req(), "/", proxy(backends=("v1", "v2"), path="/x"),
                  balancer=Balancer())
    assert plan.backend.name == "v1"
    assert plan.url_for(plan.fallbacks[0]) == "http://127.0.0.1:9002/x"
    assert dict(plan.headers_for(plan.fallbacks[0]))["host"] == "127.0.0.1:9002"


def test_script_request_view(acme):
    request = req(headers=[("x-a", "1"), ("x-a", "2")], query="q=1")
    sreq = script_request(acme, request, "/users/1")
    assert sreq.path == "/users/1" and sreq.query_string == "q=1"
    assert sreq.headers["x-a"] == "1, 2"
    assert sreq.tenant == "acme" and sreq.backends == ()
    selector = tenant("sel", selector=True, backends=[backend("a", tenant="sel")])
    views = script_request(selector, request, "/", healthy=lambda b: False).backends
    assert [(v.name, v.healthy) for v in views] == [("a", False)]


@pytest.mark.parametrize(("name", "value"), [("x-a", "1\x01b"), ("x-a", "\x7f"), ("x a", "1"),
                                             ("x-a", "1\r\nx: y"), ("", "1")])
def test_a_script_header_the_upstream_client_could_not_send_is_a_script_error(name, value):
    from routing.plan import _check_header

    with pytest.raises(ScriptFailed):
        _check_header(name, value)
