"""Backends that refuse, stall, drip, reset or die; retries and health, through the server."""

import json
import time
from collections import Counter

import httpx
import pytest

pytestmark = pytest.mark.e2e
H = {"Host": "routes.test"}


def access_lines(gateway, needle: str, *, at_least: int = 1) -> list[dict]:
    """The access-log entries containing `needle` (lines are flushed in batches)."""
    deadline = time.monotonic() + 3
    while True:
        lines = [json.loads(line) for line in gateway.log_text().splitlines()
                 if line.startswith("{") and needle in line]
        if len(lines) >= at_least or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_refused_is_502(client):
    response = client.get("/refused", headers=H)
    assert response.status_code == 502
    assert response.json()["error"] == "backend_refused"


@pytest.mark.parametrize("path, error, detail, bounds", [
    # A listener whose accept queue is full: connect_timeout_ms 300, not the read timeout.
    ("/unaccepting", "connect_timeout", "did not accept a connection in time", (0.25, 2.0)),
    # A backend that accepts and never answers: read_timeout_ms 500.
    ("/slow", "gateway_timeout", "did not answer in time", (0.4, 2.5)),
])
def test_timeouts_are_504_after_the_backends_own_timeout(client, path, error, detail, bounds):
    started = time.monotonic()
    response = client.get(path, headers=H)
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["error"] == error and detail in response.json()["detail"]
    assert bounds[0] < elapsed < bounds[1]


def test_slow_drip_is_cut_by_the_total_deadline(client):
    started = time.monotonic()
    with pytest.raises(httpx.HTTPError):
        with client.stream("GET", "/drip", headers=H) as response:
            assert response.status_code == 200
            for _ in response.iter_raw():
                pass
    assert time.monotonic() - started < 3.5  # the drip alone would take 5 s


def test_reset_mid_body_aborts_the_client_connection(client):
    with pytest.raises(httpx.HTTPError):  # never a clean, short 200
        with client.stream("GET", "/resetter/reset", headers=H) as response:
            assert response.status_code == 200
            for _ in response.iter_raw():
                pass
    assert client.get("/hello", headers=H).status_code == 200  # the gateway is fine


def test_reset_before_the_response_is_502(client):
    response = client.get("/early/reset-early", headers=H)
    assert response.status_code == 502
    assert response.json()["error"] == "backend_broke"


def test_all_down_503_with_retry_after(client):
    host = {"Host": "down.test"}
    statuses = [client.get("/", headers=host).status_code for _ in range(3)]
    assert statuses == [502, 502, 502]
    response = client.get("/", headers=host)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"] == "no_healthy_backend"
    time.sleep(1.7)  # the cool-down: tried again, still dead, out again at once
    assert client.get("/", headers=host).status_code == 502
    assert client.get("/", headers=host).status_code == 503


def test_retries_go_to_another_backend_and_the_dead_one_is_ejected(client, gateway):
    host = {"Host": "retry.test"}
    for _ in range(8):
        response = client.post("/x", headers=host, content=b"body")
        assert response.status_code == 200  # refused connections are retried, even for POST
        assert response.json()["backend"] == "retry-alive"
        assert response.json()["body_len"] == 4
    lines = access_lines(gateway, '"tenant":"retry"', at_least=8)
    assert len(lines) == 8
    retried = [line for line in lines if line["retries"]]
    assert 1 <= len(retried) <= 3  # after 3 failures the dead backend is not tried any more


def test_passive_health_with_a_backend_that_goes_away_and_comes_back(client, farm):
    host = {"Host": "flaky.test"}
    farm.stop("flaky-one")
    try:
        seen = Counter(client.get("/", headers=host).json()["backend"] for _ in range(10))
        assert seen == {"flaky-two": 10}
    finally:
        farm.restart("flaky-one")
    time.sleep(1.7)
    seen = Counter(client.get("/", headers=host).json()["backend"] for _ in range(10))
    assert seen["flaky-one"] >= 4


def test_active_health_checks_take_out_and_bring_back(client, farm):
    host = {"Host": "active.test"}
    a = farm.backends["active-a"]
    assert a.health_checks > 0  # the checker runs in the background
    a.healthy = False
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            seen = Counter(client.get("/", headers=host).json()["backend"] for _ in range(4))
            if seen == {"active-b": 4}:
                break
            time.sleep(0.1)
        assert seen == {"active-b": 4}
    finally:
        a.healthy = True
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        seen = Counter(client.get("/", headers=host).json()["backend"] for _ in range(4))
        if seen.get("active-a"):
            break
        time.sleep(0.1)
    assert seen.get("active-a")


def test_access_log_line(client, gateway):
    response = client.get("/users/9", headers={**H, "X-Request-ID": "log-probe-1"})
    assert response.status_code == 200
    lines = access_lines(gateway, '"request_id":"log-probe-1"')
    assert len(lines) == 1
    entry = lines[0]
    assert entry["tenant"] == "routes" and entry["route"] == "/users/{id:[0-9]+}"
    assert entry["backend"] == "users" and entry["status"] == 200
    assert entry["bytes"] > 0 and entry["upstream_ms"] > 0 and entry["lua_ms"] >= 0
