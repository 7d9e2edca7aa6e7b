"""tenants/{slug}/simulate/ and the simulation service behind it (no network)."""

from __future__ import annotations

import pytest

from chistone_site import simulation
from luascripts import services as script_services
from tenants.audit import Actor

from .conftest import SCRIPT, SCRIPT_V2, assert_error

pytestmark = pytest.mark.django_db
URL = "/api/v1/tenants/acme/simulate/"


@pytest.fixture
def active(acme):
    actor = Actor(name="t")
    v1, _ = script_services.publish_version(actor=actor, tenant=acme, source=SCRIPT)
    script_services.publish_version(actor=actor, tenant=acme, source=SCRIPT_V2)
    script_services.activate_version(actor=actor, tenant=acme, version=v1)
    return v1


def headers_of(action, key="upstream_headers"):
    return {name: value for name, value in action[key]}


def test_a_proxied_request_shows_the_upstream_plan(active, api):
    response = api.post(URL, {"method": "GET", "path": "/users/42", "query": {"x": "1"},
                              "headers": {"Authorization": "Bearer t", "Connection": "close"}},
                        format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["version"] == 1 and body["route_pattern"] == "/users/{id:[0-9]+}"
    assert body["params"] == {"id": "42"}
    assert len(body["middleware"]) == 1
    action = body["action"]
    assert action["kind"] == "proxy" and action["backend"] == "users-v2"
    assert action["upstream_path"] == "/users/42?x=1"
    assert action["upstream_url"] == "http://10.0.0.2:9002/users/42?x=1"
    headers = headers_of(action)
    assert headers["x-user"] == "42" and headers["x-tagged"] == "yes"
    assert headers["authorization"] == "Bearer t"
    assert headers["host"] == "10.0.0.2:9002"
    assert headers["x-forwarded-host"] == "acme.example.com"
    assert "connection" not in headers
    assert body["error"] is None


def test_respond_reject_404_and_405(active, api):
    hello = api.post(URL, {"path": "/hello"}, format="json").json()["action"]
    assert (hello["kind"], hello["status"], hello["body"]) == ("respond", 200, "hello acme")
    assert headers_of(hello, "headers")["content-type"] == "text/plain"
    rejected = api.post(URL, {"method": "POST", "path": "/admin"}, format="json").json()
    assert rejected["action"]["kind"] == "reject" and rejected["action"]["status"] == 403
    assert rejected["action"]["message"] == "no admin here"
    missing = api.post(URL, {"path": "/nothing"}, format="json").json()
    assert missing["action"]["status"] == 404 and missing["route_pattern"] is None
    wrong_method = api.post(URL, {"method": "DELETE", "path": "/hello"}, format="json").json()
    assert wrong_method["action"]["status"] == 405
    assert "GET" in headers_of(wrong_method["action"], "headers")["allow"]


def test_a_version_or_an_unsaved_source_can_be_simulated(active, api):
    v2 = api.post(URL, {"path": "/hello", "version": 2}, format="json").json()
    assert v2["version"] == 2 and v2["action"]["body"] == "hi acme"
    unsaved = 'chi.get("/hello", function(req) return respond(201, "draft") end)\n'
    draft = api.post(URL, {"path": "/hello", "source": unsaved}, format="json").json()
    assert draft["version"] is None and draft["action"]["status"] == 201
    assert_error(api.post(URL, {"path": "/hello", "version": 99}, format="json"), 404)


def test_a_broken_unsaved_source_reports_the_error(active, api):
    body = api.post(URL, {"path": "/x", "source": "chi.get(("}, format="json").json()
    assert body["error"] and body["action"]["kind"] == "error"
    assert body["action"]["status"] == 500


def test_without_a_script_the_default_pool_answers(acme, api):
    body = api.post(URL, {"path": "/anything"}, format="json").json()
    assert body["version"] is None and body["action"]["kind"] == "proxy"
    assert body["action"]["backend"] in ("users-v1", "users-v2")
    assert body["action"]["upstream_path"] == "/anything"


def test_prefix_tenants_see_the_path_after_their_prefix(globex, api):
    body = api.post("/api/v1/tenants/globex/simulate/", {"path": "/globex/a/b?q=1"},
                    format="json").json()
    assert body["action"]["upstream_url"] == "http://10.0.1.1:8080/base/a/b?q=1"
    outside = api.post("/api/v1/tenants/globex/simulate/", {"path": "/other"},
                       format="json").json()
    assert outside["action"]["status"] == 404 and outside["action"]["error"] == "no_tenant"


def test_bad_requests_are_answered_as_the_gateway_would(active, api):
    body = api.post(URL, {"path": "/a/../admin"}, format="json").json()
    assert body["action"]["kind"] == "error" and body["action"]["status"] == 400
    assert_error(api.post(URL, {"method": "GET"}, format="json"), 400, "invalid")


def test_unhealthy_backends_are_taken_into_account(acme, api):
    body = api.post(URL, {"path": "/x", "unhealthy": ["users-v1", "users-v2"]},
                    format="json").json()
    assert body["action"]["status"] == 503


def test_the_service_runs_tests(active, acme):
    results = simulation.run_script_tests(tenant=acme, source=SCRIPT, tests=[
        {"name": "ok", "request": {"path": "/users/1"},
         "expect": {"kind": "proxy", "params": {"id": "1"}, "headers": {"x-missing": None}}},
        {"name": "status of a proxy", "request": {"path": "/users/1"}, "expect": {"status": 200}},
        {"name": "header", "request": {"path": "/hello"},
         "expect": {"headers": {"Content-Type": "text/html"}}},
    ])
    assert [r["passed"] for r in results] == [True, False, False]
    assert "proxied to users-v2" in results[0]["detail"]
    assert "text/html" in results[2]["detail"]


def test_simulation_result_is_json_ready(active, acme):
    result = simulation.simulate(tenant=acme, request={"path": "/hello"}, version=active)
    data = result.to_dict()
    assert set(data) == {"tenant", "version", "route_pattern", "params", "middleware", "action",
                         "logs", "error", "warnings", "response", "calls", "exchanges",
                         "stopped"}
    assert data["response"]["status"] == data["action"]["status"]
    assert data["tenant"] == "acme" and data["action"]["kind"] == "respond"


EXCHANGE = """\
chi.use(function(req, next)
  local res = next(req)
  if res.status >= 500 then return proxy("users-v2") end
  res.headers["x-from"] = res.backend
  return res
end)
chi.post("/hook", function(req)
  local check, err = http.request("users-v1", {path = "/check", body = req.body()})
  if not check then return reject(503, err) end
  return proxy("users-v1", {set_headers = {["x-check"] = check.body}})
end)
"""


def test_simulate_runs_calls_and_upstreams_against_stubs(acme, api):
    response = api.post(URL, {
        "source": EXCHANGE, "method": "POST", "path": "/hook", "body": "payload",
        "calls": {"users-v1": {"status": 200, "body": "ok"}},
        "upstream": {"users-v1": {"status": 500, "body": "boom"},
                     "users-v2": {"status": 200, "headers": {"content-type": "text/plain"},
                                  "body": "from v2"}}}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["calls"] == [{"backend": "users-v1", "method": "GET", "path": "/check",
                              "query": "", "url": "http://10.0.0.1:9001/check",
                              "status": 200}]
    assert body["exchanges"][0]["backend"] == "users-v1"
    assert body["exchanges"][0]["status"] == 500
    # the fallback: the final answer is users-v2's, proxied after the script ended
    assert body["action"]["kind"] == "proxy" and body["action"]["backend"] == "users-v2"
    assert body["response"]["status"] == 200 and body["response"]["body"] == "from v2"


def test_simulate_without_a_call_stub_gives_no_stub(acme, api):
    body = api.post(URL, {"source": EXCHANGE, "method": "POST", "path": "/hook"},
                    format="json").json()
    assert body["calls"][0]["error"] == "no_stub"
    # the handler's reject(503, "no_stub") reaches the middleware, which falls back
    assert body["action"]["kind"] == "proxy" and body["action"]["backend"] == "users-v2"
    assert body["response"] is None  # no upstream stub for users-v2: the plan is the answer


@pytest.mark.parametrize("stubs,message", [
    ({"upstream": {"users-v1": {"status": 99}}}, "upstream.users-v1.status"),
    ({"calls": {"users-v1": {"error": "exploded"}}}, "calls.users-v1.error must be one of"),
    ({"calls": {"users-v1": {"body": 5}}}, "calls.users-v1.body must be a string"),
    ({"upstream": {"users-v1": {"stauts": 200}}}, "unknown field(s) stauts"),
    ({"calls": ["users-v1"]}, "Expected a dictionary"),
])
def test_simulate_refuses_malformed_stubs_with_400(acme, api, stubs, message):
    response = api.post(URL, {"source": EXCHANGE, "path": "/hook", **stubs}, format="json")
    body = assert_error(response, 400)
    assert message in str(body), body


def test_a_body_over_the_tenants_limit_is_a_413_in_the_dry_run_too(acme, api):
    acme.max_request_body_bytes = 1024
    acme.save()
    body = api.post(URL, {"source": EXCHANGE, "method": "POST", "path": "/hook",
                          "body": "x" * 1025}, format="json").json()
    assert body["action"]["status"] == 413 and body["action"]["error"] == "payload_too_large"
    assert body["response"]["status"] == 413


def test_script_tests_expect_the_final_answer(acme):
    tests = [
        {"name": "fallback", "request": {
            "method": "POST", "path": "/hook", "body": "b",
            "calls": {"users-v1": {"status": 200, "body": "fine"}},
            "upstream": {"users-v1": {"status": 503}, "users-v2": {"status": 200,
                                                                    "body": "v2"}}},
         "expect": {"backend": "users-v2", "response_status": 200, "response_body": "v2"}},
        {"name": "patched", "request": {
            "method": "POST", "path": "/hook",
            "calls": {"users-v1": {"status": 200, "body": "fine"}},
            "upstream": {"users-v1": {"status": 201, "body": "made"}}},
         "expect": {"response_status": 201, "response_headers": {"x-from": "users-v1"},
                    "response_body": "made"}},
        {"name": "wrong", "request": {
            "method": "POST", "path": "/hook",
            "calls": {"users-v1": {"status": 200}},
            "upstream": {"users-v1": {"status": 201}}},
         "expect": {"response_status": 200, "response_headers": {"x-from": "nope"}}},
        {"name": "no stub", "request": {"method": "POST", "path": "/hook",
                                        "calls": {"users-v1": {"status": 200}}},
         "expect": {"response_status": 200}},
    ]
    results = simulation.run_script_tests(tenant=acme, source=EXCHANGE, tests=tests)
    assert [r["passed"] for r in results] == [True, True, False, False]
    assert "response_status: expected 200, got 201" in results[2]["detail"]
    assert "response header x-from: expected 'nope', got 'users-v1'" in results[2]["detail"]
    assert "no final answer" in results[3]["detail"]


STATEFUL = """\
chi.get("/plan", function(req)
  local plan = shared.get("plan:" .. req.headers["x-user"]) or "free"
  local n = shared.incr("views", 1)
  local ok, info = limit.allow("k", 1, 60)
  return respond(200, plan .. " " .. n .. " " .. tostring(ok))
end)
"""


def test_simulate_starts_from_the_seeded_shared_state_private_to_the_run(acme, api):
    seeded = {"source": STATEFUL, "path": "/plan", "headers": {"X-User": "ann"},
              "shared": {"plan:ann": "pro", "views": 41}}
    for _ in range(2):  # each run has its own state: the same answer twice
        body = api.post(URL, seeded, format="json").json()
        assert body["action"]["kind"] == "respond", body
        assert body["response"]["body"] == "pro 42 true"
    unseeded = api.post(URL, {"source": STATEFUL, "path": "/plan",
                              "headers": {"X-User": "ann"}}, format="json").json()
    assert unseeded["response"]["body"] == "free 1 true"


@pytest.mark.parametrize("shared,message", [
    (["plan"], "Expected a dictionary"),
    ({"plan": {"tier": 1}}, "shared.plan must be a string or a finite number"),
    ({"plan": True}, "shared.plan must be a string or a finite number"),
    ({"k" * 513: "v"}, "a key must be 1 to 512 bytes"),
    ({"big": "x" * 65537}, "a value is at most 65536 bytes"),
])
def test_simulate_refuses_a_malformed_shared_seed_with_400(acme, api, shared, message):
    response = api.post(URL, {"source": STATEFUL, "path": "/plan", "shared": shared},
                        format="json")
    body = assert_error(response, 400)
    assert message in str(body), body
