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
    assert choices == {"editor": "the editor's text (unsaved)", "2": "v2 (valid)",
                       "1": "v1 (active)"}
    # After an activation the console and the editor default to the active version, not
    # to the newest one.
    assert response.context["console"]["version"].value() == "1"
    assert response.context["form"]["source"].value() == GOOD
    assert "The editor holds v1 (active)." in response.content.decode()
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


def test_console_runs_the_editors_unsaved_text_and_keeps_it(op_client, acme, publish,
                                                          activate):
    from luascripts.models import ScriptVersion

    activate(acme, publish(acme, GOOD))
    edited = GOOD.replace('"hi"', '"unsaved hi"')
    response = op_client.post(url("try", acme), {
        "source": edited, "message": "wip", "from": "1", "version": "editor",
        "method": "GET", "host": "acme.example.com", "path": "/hello", "query": "",
        "headers": ""})
    assert response.status_code == 200
    result = response.context["result"]
    assert result["action"]["body"] == "unsaved hi"
    content = response.content.decode()
    assert "Result for the editor's text (based on v1), unsaved" in content
    # The page comes back with the editor's text, still unsaved, and says so.
    assert response.context["form"]["source"].value() == edited
    assert response.context["form"]["message"].value() == "wip"
    assert "The editor holds <strong>unsaved changes</strong> based on v1 (active)" in content
    assert ScriptVersion.objects.filter(tenant=acme).count() == 1  # nothing was stored


def test_dry_run_names_local_and_global_middleware(op_client, acme, publish):
    publish(acme, """\
local function require_key(req, next)
  return next(req)
end
function stamp(req, next) return next(req) end
chi.use(require_key, stamp, function(req, next) return next(req) end)
chi.get("/hello", function(req) return respond(200, "hi") end)
""")
    result = run(op_client, acme, version="1", path="/hello").context["result"]
    assert result["middleware"] == ["require_key (line 1)", "stamp (line 4)",
                                    "anonymous (line 5)"]


def test_an_operator_without_publish_rights_runs_stored_versions_only(client, acme, publish,
                                                                      operator):
    from django.contrib.auth.models import Permission

    operator.user_permissions.remove(Permission.objects.get(codename="add_scriptversion"))
    client.force_login(operator)
    publish(acme, GOOD)
    response = client.get(url("script", acme))
    choices = dict(response.context["console"].fields["version"].choices)
    assert "editor" not in choices
    refused = run(client, acme, version="editor", source="chi.get('/', nil)", path="/hello")
    assert refused.status_code == 400 and "version" in refused.context["console"].errors


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
