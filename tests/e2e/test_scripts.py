"""The scripts' actions under the real engine and server."""

from collections import Counter

import pytest

pytestmark = pytest.mark.e2e
H = {"Host": "routes.test"}


def test_respond(client):
    response = client.get("/hello", headers=H)
    assert response.status_code == 200
    assert response.text == "hello routes"
    assert response.headers["x-script"] == "yes"
    assert response.headers["x-request-id"]


def test_proxy_with_rewrites(client):
    response = client.get("/users/42?orig=1", headers={**H, "x-drop-me": "1", "x-keep": "k"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["backend"] == "users"
    assert body["target"] == "/v2/users/42?from=script"
    headers = dict(body["headers"])
    assert headers["x-user-id"] == "42"
    assert "x-drop-me" not in headers
    assert headers["x-keep"] == "k"


def test_reject_from_middleware(client):
    response = client.get("/hello", headers={**H, "x-block": "1"})
    assert response.status_code == 403
    assert response.json()["detail"] == "blocked by middleware"


def test_404_and_405_with_allow(client):
    response = client.get("/nope", headers=H)
    assert response.status_code == 404 and response.json()["error"] == "no_route"
    response = client.delete("/hello", headers=H)
    assert response.status_code == 405
    assert "GET" in response.headers["allow"]
    assert response.json()["error"] == "method_not_allowed"


def test_mount_sends_the_rest_of_the_path(client):
    response = client.get("/raw/a%2Fb/c?q=%20", headers=H)
    assert response.json()["target"] == "/a%2Fb/c?q=%20"


def test_legacy_result_tables(client):
    body = client.get("/legacy", headers=H).json()
    assert body["backend"] == "users2"
    assert body["target"].startswith("/legacy-path")
    assert dict(body["headers"])["x-legacy"] == "1"
    response = client.get("/legacy-reject", headers=H)
    assert response.status_code == 418 and response.json()["detail"] == "teapot"


def test_selector_script(client):
    host = {"Host": "selector.test"}
    assert client.get("/x", headers=host).json()["backend"] == "sel-legacy"
    body = client.get("/x", headers={**host, "x-api-version": "2"}).json()
    assert body["backend"] == "sel-modern"
    assert dict(body["headers"])["x-selected-by"] == "selector"
    assert client.get("/forbidden", headers=host).status_code == 403


def test_balancing_a_list_and_sticky_hash(client):
    seen = Counter(client.get("/pool", headers=H).json()["backend"] for _ in range(8))
    assert seen == {"users": 4, "users2": 4}
    for user in ("alice", "bob", "carol"):
        picks = {client.get("/sticky", headers={**H, "x-user": user}).json()["backend"]
                 for _ in range(4)}
        assert len(picks) == 1


def test_default_pool_weighted_round_robin(client):
    seen = Counter(client.get("/", headers={"Host": "pool.test"}).json()["backend"]
                   for _ in range(8))
    assert seen == {"pool-heavy": 6, "pool-light": 2}  # the disabled backend gets nothing


def test_lua_error_is_500_and_other_tenants_are_unaffected(client, gateway):
    response = client.get("/", headers={"Host": "broken.test"})
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "script_error"
    assert "kaboom" not in response.text
    assert client.get("/hello", headers=H).status_code == 200
    assert client.get("/boom", headers=H).status_code == 500
    assert client.get("/hello", headers=H).text == "hello routes"
    assert body["request_id"] in gateway.log_text()
