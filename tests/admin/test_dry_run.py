"""The dry-run console on the script page runs chistone_site.simulation; nothing is proxied."""

from __future__ import annotations

import pytest
from django.urls import reverse

from .conftest import BAD, GOOD, GOOD2

pytestmark = pytest.mark.django_db

AUTH = """\
chi.use(function(req, next)
  if req.headers["authorization"] ~= "Bearer t" then return reject(401, "no token") end
  log.info("auth ok")
  return next(req)
end)
chi.get("/users/{id}", function(req)
  return proxy("api", {path = "/u/" .. req.params.id, set_headers = {["x-user"] = req.params.id}})
end)
"""


def url(name, tenant, *args):
    return reverse(f"admin:luascripts_scriptversion_{name}", args=[tenant.pk, *args])


def run(client, tenant, **fields):
    data = {"method": "GET", "host": "acme.example.com", "path": "/", "query": "",
            "headers": "", **fields}
    return client.post(url("try", tenant), data)


def test_console_shows_route_params_backend_upstream_path_and_headers(op_client, acme,
                                                                      publish):
    publish(acme, GOOD)
    publish(acme, GOOD2)
    response = run(op_client, acme, version="2", path="/users/42", query="x=1",
                   headers="X-Trace: abc")
    assert response.status_code == 200
    result = response.context["result"]
    assert result["route_pattern"] == "/users/{id}"
    assert result["params"] == {"id": "42"}
    assert result["action"]["kind"] == "proxy" and result["action"]["backend"] == "api"
    assert result["action"]["upstream_path"] == "/u/42?x=1"
    assert ("x-trace", "abc") in result["action"]["upstream_headers"]
    content = response.content.decode()
    assert 'id="dry-run-result"' in content and "/u/42?x=1" in content
    assert "Nothing was proxied" in content
    # The console keeps what the operator typed.
    assert response.context["console"]["path"].value() == "/users/42"


def test_console_shows_middleware_logs_and_rejections(op_client, acme, publish):
    publish(acme, AUTH)
    refused = run(op_client, acme, version="1", path="/users/7").context["result"]
    assert (refused["action"]["kind"], refused["action"]["status"]) == ("reject", 401)
    allowed = run(op_client, acme, version="1", path="/users/7",
                  headers="Authorization: Bearer t").context["result"]
    assert allowed["action"]["kind"] == "proxy"
    assert len(allowed["middleware"]) == 1
    assert any("auth ok" in line["message"] for line in allowed["logs"])
    assert dict(allowed["action"]["upstream_headers"])["x-user"] == "7"


def test_console_can_try_the_active_or_any_stored_version(op_client, acme, publish, activate):
    v1 = publish(acme, GOOD)
    publish(acme, GOOD2)
    activate(acme, v1)
    response = op_client.get(url("script", acme))
    choices = dict(response.context["console"].fields["version"].choices)
    assert choices == {"2": "v2 (valid)", "1": "v1 (active)"}
    old = run(op_client, acme, version="1", path="/hello").context["result"]
    assert old["action"]["body"] == "hi"
    new = run(op_client, acme, version="2", path="/hello").context["result"]
    assert new["action"]["body"] == "hello"


def test_trying_a_draft_reports_why_it_cannot_run(op_client, acme, publish):
    publish(acme, BAD)
    response = run(op_client, acme, version="1", path="/hello")
    assert response.status_code == 200
    assert response.context["result"]["error"]
    assert 'id="dry-run-error"' in response.content.decode()


def test_a_malformed_console_request_is_a_form_error(op_client, acme, publish):
    publish(acme, GOOD)
    response = run(op_client, acme, version="1", path="no-slash", headers="not a header")
    assert response.status_code == 400
    errors = response.context["console"].errors
    assert "path" in errors and "headers" in errors
    assert response.context["result"] is None


def test_console_is_scoped(op_client, globex, publish):
    publish(globex, GOOD)
    assert run(op_client, globex, version="1").status_code == 404


EXCHANGE = """\
chi.use(function(req, next)
  local res = next(req)
  if res.status >= 500 then
    return respond(503, "friendly: " .. res.body())
  end
  res.headers["x-wrapped"] = "yes"
  return res
end)
chi.post("/users/{id}", function(req)
  local who, err = http.request("api", {path = "/whoami", headers = {["x-body"] = req.body()}})
  if not who then return reject(503, "call failed: " .. err) end
  return proxy("api", {path = "/u/" .. req.params.id, set_headers = {["x-who"] = who.body}})
end)
"""


def test_console_runs_against_stubs_and_shows_the_final_answer(op_client, acme, publish):
    publish(acme, EXCHANGE)
    upstream = '{"api": {"status": 200, "headers": {"content-type": "text/plain"}, "body": "hi"}}'
    result = run(op_client, acme, version="1", method="POST", path="/users/7", body="payload",
                 upstream=upstream, calls='{"api": {"status": 200, "body": "alice"}}'
                 ).context["result"]
    assert result["calls"][0]["backend"] == "api" and result["calls"][0]["status"] == 200
    assert ("x-who", "alice") in result["action"]["upstream_headers"]
    answer = result["response"]
    assert answer["status"] == 200 and answer["body"] == "hi"
    assert ["x-wrapped", "yes"] in answer["headers"]
    failing = run(op_client, acme, version="1", method="POST", path="/users/7",
                  upstream='{"api": {"status": 502, "body": "down"}}',
                  calls='{"api": {"status": 200}}')
    assert failing.context["result"]["response"]["status"] == 503
    assert failing.context["result"]["response"]["body"] == "friendly: down"
    assert 'id="dry-run-response"' in failing.content.decode()


def test_console_without_stubs_stops_at_the_plan_and_says_so(op_client, acme, publish):
    publish(acme, EXCHANGE)
    result = run(op_client, acme, version="1", method="POST", path="/users/7").context["result"]
    # http.request without a stub: nil, "no_stub"; the handler's 503 reject then passes the
    # middleware, which reads the gateway's rendering of it.
    assert result["calls"][0]["error"] == "no_stub"
    assert result["response"]["status"] == 503
    assert result["response"]["body"].startswith("friendly: {")
    assert "call failed: no_stub" in result["response"]["body"]
    stopped = run(op_client, acme, version="1", method="POST", path="/users/7",
                  calls='{"api": {"status": 200}}').context["result"]
    assert stopped["action"]["kind"] == "proxy" and stopped["response"] is None
    assert "give an `upstream` stub for 'api'" in stopped["stopped"]


def test_console_refuses_stubs_that_are_not_json_objects(op_client, acme, publish):
    publish(acme, EXCHANGE)
    response = run(op_client, acme, version="1", upstream="[1, 2]", calls="{nope")
    assert response.status_code == 400
    console = response.context["console"]
    assert "An object of backend name" in console.errors["upstream"][0]
    assert "Not valid JSON" in console.errors["calls"][0]
    bad_shape = run(op_client, acme, version="1", upstream='{"api": {"status": "x"}}')
    assert "upstream.api.status must be an integer" in bad_shape.context["result"]["error"]
