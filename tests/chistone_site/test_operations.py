"""Operations, for real: config propagation across workers and nodes, activation under load,
a database outage, and the watchdog. Real `manage.py serve` processes, real Lua, real
backends; PostgreSQL where the scenario is about several nodes sharing it.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.e2e.backends import BackendFarm
from tests.serving import (
    TcpForwarder,
    create_api_key,
    pg_url,
    prepare_database,
    server_env,
    start_serve,
    throwaway_database,
)

pytestmark = pytest.mark.e2e


def version_script(tag: str) -> str:
    return (f'chi.get("/v", function(req) return respond(200, "{tag}") end)\n'
            'chi.get("/block", function(req)\n'
            '  local t = time.now() while time.now() - t < 3 do end\n'
            '  return respond(200, "survived")\n'
            'end)\n')


@pytest.fixture(scope="module")
def farm():
    farm = BackendFarm()
    yield farm
    farm.close()


@pytest.fixture
def pg_database():
    """A fresh PostgreSQL database for gateway nodes to share (dropped afterwards)."""
    with throwaway_database("chistone_ops") as name:
        yield name


def seed(env, tmp, tags=("v1",)):
    prepare_database(env, {"tenants": [
        {"slug": "live", "domains": ["live.test"], "script": version_script(tags[0])},
        {"slug": "other", "domains": ["other.test"],
         "script": 'chi.get("/ok", function(req) return respond(200, "other ok") end)\n'},
    ]}, tmp)


def api(node, key):
    return httpx.Client(base_url=f"{node.control}/api/v1", trust_env=False, timeout=15,
                        headers={"Authorization": f"Bearer {key}", "Host": "localhost"})


def publish(client, tag, activate=True):
    response = client.post("/tenants/live/scripts/", json={
        "source": version_script(tag), "message": tag, "activate": activate})
    assert response.status_code in (200, 201), response.text
    return response.json()["version"]


def fetch(base, path="/v", host="live.test", client=None):
    if client is not None:
        return client.get(f"{base}{path}", headers={"Host": host})
    with httpx.Client(trust_env=False, timeout=10) as fresh:
        return fresh.get(f"{base}{path}", headers={"Host": host})


def config_generation(response) -> int:
    """X-Chistone-Config: "<generation>; version=<n>" (the version that answered)."""
    return int(response.headers["x-chistone-config"].split(";")[0])


def wait_for_body(base, expected, timeout=10.0):
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if fetch(base).text == expected:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"{base} never answered {expected!r}")


def test_activation_on_node_a_is_served_by_node_b_within_a_second(pg_database, tmp_path):
    url = pg_url(pg_database)
    env_a = server_env(url, tmp_path / "a")
    env_b = server_env(url, tmp_path / "b")
    seed(env_a, tmp_path)
    key = create_api_key(env_a)
    node_a = start_serve(env_a, tmp_path / "a.log", "--workers", "1")
    node_b = start_serve(env_b, tmp_path / "b.log", "--workers", "1")
    try:
        node_a.wait_ready()
        node_b.wait_ready()
        before = fetch(node_b.data)
        assert before.text == "v1"
        with api(node_a, key) as client:
            publish(client, "v2")
        took = wait_for_body(node_b.data, "v2")
        assert took < 1.0, f"node B took {took:.2f}s"
        after = fetch(node_b.data)
        assert config_generation(after) > config_generation(before)
        assert after.headers["x-chistone-config"].endswith("; version=2")
        assert fetch(node_a.data).text == "v2"
    finally:
        node_a.stop()
        node_b.stop()


def test_two_workers_sharing_sqlite_both_pick_up_an_activation(tmp_path):
    env = server_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path)
    seed(env, tmp_path)
    key = create_api_key(env)
    node = start_serve(env, tmp_path / "serve.log", "--workers", "2")
    try:
        node.wait_ready(workers=2)
        with api(node, key) as client:
            publish(client, "v2")
        activated = time.monotonic()
        # Fresh connections spread over both workers; from 1 s on, every one answers v2.
        time.sleep(max(0.0, 1.0 - (time.monotonic() - activated)))
        bodies = {fetch(node.data).text for _ in range(40)}
        assert bodies == {"v2"}
    finally:
        node.stop()


def test_activations_under_load_lose_no_request_and_never_mix_versions(tmp_path):
    env = server_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path)
    seed(env, tmp_path)
    key = create_api_key(env)
    node = start_serve(env, tmp_path / "serve.log", "--workers", "2")
    node.wait_ready(workers=2)
    seen: list[tuple[int, str]] = []
    failures: list[str] = []
    stop = threading.Event()

    def load():
        with httpx.Client(trust_env=False, timeout=10) as client:
            while not stop.is_set():
                try:
                    r = fetch(node.data, client=client)
                    if r.status_code != 200:
                        failures.append(f"{r.status_code}: {r.text[:200]}")
                    else:
                        seen.append((config_generation(r), r.text))
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(3)]
    activated: list[str] = []
    try:
        with api(node, key) as client:
            tags = [f"v{i}" for i in range(2, 6)]
            numbers = {tag: publish(client, tag, activate=False) for tag in tags}
            for thread in threads:
                thread.start()
            for round_ in range(8):
                tag = tags[round_ % len(tags)]
                response = client.post(f"/tenants/live/scripts/{numbers[tag]}/activate/")
                assert response.status_code == 200, response.text
                activated.append(tag)
                time.sleep(0.4)
            time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
        node.stop()
    assert failures == []
    assert len(seen) > 100
    by_generation: dict[int, set[str]] = {}
    for generation, body in seen:
        by_generation.setdefault(generation, set()).add(body)
    mixed = {g: b for g, b in by_generation.items() if len(b) > 1}
    assert not mixed, f"generations answered by several versions: {mixed}"
    # Ordered by generation, the versions seen follow the order of activation.
    order = [next(iter(by_generation[g])) for g in sorted(by_generation)]
    expected = ["v1", *activated]
    position = 0
    for tag in order:
        while position < len(expected) and expected[position] != tag:
            position += 1
        assert position < len(expected), f"{order} is not in activation order {expected}"
    assert order[-1] == activated[-1]


def test_database_outage_keeps_traffic_flowing_and_cold_start_uses_the_disk_snapshot(
    pg_database, tmp_path
):
    direct = pg_url(pg_database)
    forwarder = TcpForwarder(5432)
    via_forwarder = pg_url(pg_database, forwarder.port)
    var = tmp_path / "var"
    env = server_env(via_forwarder, var)
    seed(server_env(direct, var), tmp_path)
    key = create_api_key(server_env(direct, var))
    node = start_serve(env, tmp_path / "a.log", "--workers", "1")
    cold = None
    try:
        node.wait_ready()
        assert fetch(node.data).text == "v1"
        forwarder.down()
        # Traffic keeps flowing with the last configuration.
        failures = [r.status_code for r in (fetch(node.data) for _ in range(30))
                    if r.status_code != 200 or r.text != "v1"]
        assert failures == []
        deadline = time.monotonic() + 5
        while True:
            ready = httpx.get(f"{node.data}/readyz", trust_env=False, timeout=5)
            if ready.json()["status"] == "degraded" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert ready.status_code == 200 and ready.json()["database"] == "unreachable"
        # The control plane refuses writes with a clear 503.
        with api(node, key) as client:
            response = client.post("/tenants/", json={"slug": "new", "name": "New",
                                                      "domains": ["new.test"]})
        assert response.status_code == 503, response.text
        assert "unreachable" in response.json()["detail"]
        # A worker that starts now serves the configuration saved on disk.
        assert (var / "snapshot.json").exists()
        cold = start_serve(server_env(via_forwarder, var), tmp_path / "cold.log", "--workers",
                           "1")
        cold.wait_ready()
        assert fetch(cold.data).text == "v1"
        assert httpx.get(f"{cold.data}/readyz", trust_env=False).json()["snapshot_source"] \
            == "disk"
        # A change made meanwhile (directly in the database) is picked up on recovery.
        with api_direct(direct, var, tmp_path, key) as client:
            publish(client, "v2")
        forwarder.up()
        wait_for_body(node.data, "v2", timeout=15)
        wait_for_body(cold.data, "v2", timeout=15)
        assert httpx.get(f"{cold.data}/readyz", trust_env=False).json()["status"] == "ready"
    finally:
        forwarder.down()
        node.stop()
        if cold is not None:
            cold.stop()


class api_direct:
    """A control plane on the database itself (not through the cut forwarder)."""

    def __init__(self, url, var, tmp, key):
        self.node = start_serve(server_env(url, tmp / "direct"), tmp / "direct.log",
                                "--workers", "1")
        self.key = key

    def __enter__(self):
        self.node.wait_ready()
        self.client = api(self.node, self.key)
        return self.client

    def __exit__(self, *exc):
        self.client.close()
        self.node.stop()


def test_the_watchdog_replaces_a_blocked_worker_and_disables_the_script(tmp_path):
    # The operator gave scripts 4 s of CPU, more than the watchdog's 1 s bound: a script that
    # spins for 3 s blocks its worker's event loop and only the watchdog can end it.
    env = server_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path,
                     CHISTONE_LUA_REQUEST_MS="4000")
    seed(env, tmp_path)
    node = start_serve(env, tmp_path / "serve.log", "--workers", "2", "--hang-timeout", "1")
    try:
        node.wait_ready(workers=2)
        before = node.worker_pids()
        result: dict = {}

        def blocked():
            try:
                result["response"] = fetch(node.data, "/block")
            except httpx.HTTPError as exc:
                result["error"] = exc

        thread = threading.Thread(target=blocked)
        thread.start()
        time.sleep(0.3)
        # Meanwhile the other worker keeps answering other tenants.
        others = [fetch(node.data, "/ok", host="other.test") for _ in range(10)]
        assert [r.status_code for r in others] == [200] * 10
        thread.join(15)
        assert "error" in result or result["response"].status_code >= 500
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (node.worker_pids() >= before
                                               or len(node.worker_pids()) < 2):
            time.sleep(0.1)
        after = node.worker_pids()
        assert len(after) == 2 and len(after & before) == 1, (before, after)
        assert "stopped answering" in node.log_text()
        # The version that blocked is disabled everywhere; the tenant says why.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            response = fetch(node.data, "/v")
            if response.status_code == 503:
                break
            time.sleep(0.1)
        assert response.status_code == 503
        assert "blocked a gateway worker" in response.json()["detail"]
        assert fetch(node.data, "/ok", host="other.test").text == "other ok"
    finally:
        node.stop()
