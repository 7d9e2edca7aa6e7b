"""`manage.py serve` for real: two planes, supervised workers, drain, rolling restart."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.backends import BackendFarm
from tests.serving import prepare_database, server_env, start_serve

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def farm():
    farm = BackendFarm()
    yield farm
    farm.close()


@pytest.fixture(scope="module")
def served(farm, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    env = server_env(f"sqlite:///{tmp / 'db.sqlite3'}", tmp)
    backend = farm.add("app")
    prepare_database(env, {"tenants": [
        {"slug": "acme", "domains": ["acme.test"],
         "backends": [{"name": "app", "url": backend.url}],
         "script": 'chi.get("/hello", function(req) return respond(200, "hi from lua") end)\n'
                   'chi.get("/counted/{n}", function(req) return proxy("app") end)\n'
                   'chi.handle("*", "/*", function(req) return proxy("app") end)\n'},
    ]}, tmp)
    server = start_serve(env, tmp / "serve.log", "--workers", "2")
    server.wait_ready(workers=2)
    yield server
    server.stop()


def get(url, **kw):
    with httpx.Client(trust_env=False, timeout=10) as client:
        return client.get(url, **kw)


def test_each_plane_answers_only_its_own_traffic(served):
    assert get(f"{served.data}/hello", headers={"Host": "acme.test"}).text == "hi from lua"
    # The admin is not reachable on the data plane, whatever the host or path.
    # On a tenant's host the path is the tenant's: its backend answers, not Django.
    response = get(f"{served.data}/admin/", headers={"Host": "acme.test"})
    assert response.json()["backend"] == "app" and response.json()["target"] == "/admin/"
    for host in ("127.0.0.1", "localhost"):
        response = get(f"{served.data}/admin/", headers={"Host": host})
        assert response.status_code == 404 and response.json()["error"] == "no_tenant"
    response = get(f"{served.data}/api/v1/tenants/", headers={"Host": "localhost"})
    assert response.status_code == 404 and response.json()["error"] == "no_tenant"
    # The control plane serves the admin and never proxies to a tenant.
    response = get(f"{served.control}/admin/", headers={"Host": "localhost"})
    assert response.status_code == 302 and "/admin/login/" in response.headers["location"]
    response = get(f"{served.control}/hello", headers={"Host": "acme.test"})
    assert "hi from lua" not in response.text
    assert get(f"{served.control}/healthz").status_code == 200


def test_the_log_is_one_json_object_per_line_with_request_fields(served):
    response = get(f"{served.data}/hello", headers={"Host": "acme.test",
                                                    "X-Request-Id": "e2e-log-1"})
    assert response.status_code == 200
    deadline = time.monotonic() + 5  # the access log is written in batches
    while "e2e-log-1" not in served.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    # stdout carries serve's banner for a person; everything on stderr is a JSON log line.
    lines = [line for line in served.log_text().splitlines()
             if line and not line.startswith(("chistone: ", "  data plane", "  control plane"))]
    entries = [json.loads(line) for line in lines]
    assert all(entry["ts"].endswith("Z") and entry["logger"] for entry in entries)
    (access,) = [e for e in entries if e.get("request_id") == "e2e-log-1"]
    assert access["logger"] == "chistone.access" and access["tenant"] == "acme"
    assert access["route"] == "/hello" and access["status"] == 200
    assert any(e["logger"] == "chistone.supervisor" and "started worker" in e["msg"]
               for e in entries)


def metric_values(served) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from the control plane's /metrics."""
    text = get(f"{served.control}/metrics").text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_add_up_the_requests_of_both_workers(served):
    requests = ("chistone_requests_total",
                (("route", "/counted/{n}"), ("status", "200"), ("tenant", "acme")))
    upstream = ("chistone_upstream_requests_total", (("backend", "app"), ("tenant", "acme")))
    time.sleep(1.2)  # earlier tests' requests to the backend are published by now
    before = metric_values(served)
    # Fresh connections: the kernel spreads them over both workers' sockets.
    for n in range(40):
        assert get(f"{served.data}/counted/{n}",
                   headers={"Host": "acme.test"}).status_code == 200
    deadline = time.monotonic() + 10  # each worker publishes its counters once a second
    while True:
        after = metric_values(served)
        counted = after.get(requests, 0) - before.get(requests, 0)
        if counted >= 40 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert counted == 40
    assert after.get(upstream, 0) - before.get(upstream, 0) == 40
    workers = {labels for name, labels in after if name == "chistone_config_generation"}
    assert len(workers) == 2  # one series per worker: both reports were merged


def test_a_killed_worker_is_replaced_and_the_other_keeps_serving(served):
    before = served.worker_pids()
    assert len(before) == 2
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    failures = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if get(f"{served.data}/hello", headers={"Host": "acme.test"}).status_code != 200:
                failures += 1
        except httpx.HTTPError:
            failures += 1
        now = served.worker_pids()
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.05)
    after = served.worker_pids()
    assert victim not in after and len(after) == 2
    assert failures == 0
    assert "exited with" in served.log_text()
    served.wait_ready(workers=2)


def test_sighup_replaces_workers_one_by_one_without_failed_requests(served):
    before = served.worker_pids()
    errors: list[str] = []
    count = 0
    stop = threading.Event()

    def load():
        nonlocal count
        with httpx.Client(trust_env=False, timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.get(f"{served.data}/hello", headers={"Host": "acme.test"})
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:100]}")
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                count += 1

    thread = threading.Thread(target=load)
    thread.start()
    try:
        served.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and served.worker_pids() & before:
            time.sleep(0.2)
        served.wait_ready(workers=2)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(15)
    assert not (served.worker_pids() & before), "every worker should have been replaced"
    assert count > 20
    assert errors == []


def test_sigterm_drains_in_flight_requests_then_exits(farm, tmp_path):
    env = server_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path)
    backend = farm.add("slowpoke")
    prepare_database(env, {"tenants": [
        {"slug": "slow", "domains": ["slow.test"],
         "backends": [{"name": "b", "url": backend.url}]}]}, tmp_path)
    server = start_serve(env, tmp_path / "serve.log", "--workers", "1")
    server.wait_ready()
    result: dict = {}

    def slow_request():
        try:
            result["response"] = get(f"{server.data}/slow?s=1.5", headers={"Host": "slow.test"})
        except httpx.HTTPError as exc:
            result["error"] = exc

    thread = threading.Thread(target=slow_request)
    thread.start()
    time.sleep(0.5)  # the request is at the backend now
    server.process.send_signal(signal.SIGTERM)
    thread.join(20)
    code = server.process.wait(30)
    assert "error" not in result, result
    assert result["response"].status_code == 200 and result["response"].text == "late"
    assert code == 0
    with pytest.raises(httpx.ConnectError):
        get(f"{server.data}/readyz")
