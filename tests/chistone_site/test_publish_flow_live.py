"""Shadow, rollout and guard for real: two `manage.py serve --workers 2` nodes sharing one
PostgreSQL database, real Lua, real backends, requests over loopback.

- rollout: at 10 % over 2,000 distinct client addresses the new version answers 10 % +- 3 %,
  and each address gets the same version from every worker of both nodes;
- guard: under one load, a rollout of a version that fails 30 % of its requests is rolled
  back by itself within its window on both nodes, with an `auto_rollback` audit event, a
  metric and a log line; a healthy version under the same load is not;
- shadow: a candidate that routes /v2/* elsewhere shows exactly those mismatches, while the
  clients got only the active version's answers and the candidate's backend got nothing.
"""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.e2e.backends import BackendFarm
from tests.serving import (
    PG,
    create_api_key,
    pg_url,
    prepare_database,
    server_env,
    start_serve,
    throwaway_database,
)

pytestmark = pytest.mark.e2e
WORKERS = 2


def answer(tag: str) -> str:
    return f'chi.get("/", function(req) return respond(200, "{tag}") end)\n'


# Fails (a script error: 500) for 30 % of requests: those whose X-N ends in 0, 1 or 2.
FAILING = """
chi.get("/", function(req)
  if tonumber(req.headers["x-n"] or "0") % 10 < 3 then error("v2 is broken") end
  return respond(200, "v2")
end)
"""
MIRROR_ACTIVE = """
chi.get("/v1/{rest}", function(req) return proxy("a") end)
chi.get("/v2/{rest}", function(req) return proxy("a") end)
"""
MIRROR_CANDIDATE = """
chi.get("/v1/{rest}", function(req) return proxy("a") end)
chi.get("/v2/{rest}", function(req) return proxy("b", {path = "/new/" .. req.params.rest}) end)
"""


@pytest.fixture(scope="module")
def farm():
    farm = BackendFarm()
    yield farm
    farm.close()


@pytest.fixture(scope="module")
def cluster(farm, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("publish-flow")
    with throwaway_database("chistone_flow") as name:
        yield from _cluster(farm, tmp, name)


def _cluster(farm, tmp, name):
    url = pg_url(name)
    # The client's address is the key of a rollout: trust loopback's X-Forwarded-For, so
    # each request can come "from" its own address.
    extra = {"CHISTONE_TRUSTED_PROXIES": "127.0.0.1/32", "CHISTONE_ACCESS_LOG": "0"}
    envs = [server_env(url, tmp / side, **extra) for side in ("a", "b")]
    a, b = farm.add("a"), farm.add("b")
    prepare_database(envs[0], {"tenants": [
        {"slug": "split", "domains": ["split.test"], "script": answer("v1")},
        {"slug": "bad", "domains": ["bad.test"], "script": answer("v1")},
        {"slug": "good", "domains": ["good.test"], "script": answer("v1")},
        {"slug": "mirror", "domains": ["mirror.test"], "script": MIRROR_ACTIVE,
         "backends": [{"name": "a", "url": a.url}, {"name": "b", "url": b.url}]},
    ]}, tmp)
    key = create_api_key(envs[0])
    nodes = [start_serve(env, tmp / f"node-{side}.log", "--workers", str(WORKERS))
             for env, side in zip(envs, "ab", strict=True)]
    try:
        for node in nodes:
            node.wait_ready(workers=WORKERS)
        yield {"nodes": nodes, "key": key, "db": name, "farm": farm}
    finally:
        for node in nodes:
            node.stop()


def api(cluster) -> httpx.Client:
    return httpx.Client(base_url=f"{cluster['nodes'][0].control}/api/v1", trust_env=False,
                        timeout=30, headers={"Authorization": f"Bearer {cluster['key']}"})


def sql(cluster, query: str, *args):
    with psycopg.connect(dbname=cluster["db"], **PG) as conn:
        return conn.execute(query, args).fetchall()


def fresh_client() -> httpx.Client:
    # No keep-alive: every request is a new connection, which the kernel hands to either
    # worker of the node.
    return httpx.Client(trust_env=False, timeout=15,
                        limits=httpx.Limits(max_keepalive_connections=0))


_local = threading.local()


def thread_client() -> httpx.Client:
    """One client per load thread (making one is not free), still without keep-alive."""
    client = getattr(_local, "client", None)
    if client is None:
        client = _local.client = fresh_client()
    return client


def get(client, node, host, path="/", ip="192.0.2.1", **headers):
    response = client.get(f"{node.data}{path}", headers={
        "Host": host, "X-Forwarded-For": ip, **headers})
    config = response.headers.get("x-chistone-config", "")
    version = re.search(r"version=(\d+)", config)
    return response, int(version.group(1)) if version else None


def publish(client, tenant, source, **extra) -> int:
    response = client.post(f"/tenants/{tenant}/scripts/", json={"source": source, **extra})
    assert response.status_code in (200, 201), response.text
    return response.json()["version"]


def wait_for_generation(cluster, timeout=10.0):
    """Until every worker of both nodes serves the database's current generation."""
    [(target,)] = sql(cluster, "SELECT generation FROM tenants_configstate WHERE id = 1")
    deadline = time.monotonic() + timeout
    with fresh_client() as client:
        for node in cluster["nodes"]:
            good = 0
            while good < 12:  # twelve fresh connections in a row: both workers, surely
                assert time.monotonic() < deadline, f"{node.data} never reached {target}"
                response, _ = get(client, node, "split.test")
                seen = int(response.headers["x-chistone-config"].split(";")[0])
                good = good + 1 if seen >= target else 0
    return target


def worker_recent(node) -> dict[int, list[list]]:
    """Each worker's last requests (routing.traffic), from the files it reports to."""
    out = {}
    for pid in node.worker_pids():
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        directory = next(v.split(b"=", 1)[1].decode() for v in environ
                         if v.startswith(b"CHISTONE_METRICS_DIR="))
        report = json.loads((Path(directory) / f"console-{pid}.json").read_text())
        out[pid] = report["recent"]
    return out


# -- rollout ---------------------------------------------------------------------------------


def test_ten_percent_sticky_across_workers_and_nodes(cluster):
    nodes = cluster["nodes"]
    with api(cluster) as client:
        publish(client, "split", answer("v2"))
        started = client.post("/tenants/split/scripts/2/activate/", json={"percent": 10})
        assert started.status_code == 200, started.text
        assert started.json()["rollout"]["key"] == "client IP"
    wait_for_generation(cluster)
    keys = [f"10.{i // 200}.{i % 200}.{7 + i % 3}" for i in range(2000)]

    def both_nodes(ip):
        client = thread_client()
        answers = []
        for node in nodes:
            response, version = get(client, node, "split.test", ip=ip)
            assert response.status_code == 200, response.text
            assert response.text == f"v{version}"  # the header names who answered
            answers.append(version)
        return ip, answers

    with ThreadPoolExecutor(8) as pool:
        results = dict(pool.map(both_nodes, keys))
    differ = {ip: pair for ip, pair in results.items() if pair[0] != pair[1]}
    assert not differ, f"keys answered differently by the two nodes: {list(differ)[:5]}"
    new = sum(pair[0] == 2 for pair in results.values())
    assert 140 <= new <= 260, f"{new} of 2000 keys got the new version (10 % +- 3 %)"
    # Again, in another order and over other connections: every key keeps its version.
    with ThreadPoolExecutor(8) as pool:
        again = dict(pool.map(both_nodes, list(reversed(keys[:400]))))
    assert all(again[ip] == results[ip] for ip in again)
    # Every worker of both nodes answered with both versions.
    time.sleep(1.5)  # the workers' reports are written once a second
    for node in nodes:
        recent = worker_recent(node)
        assert len(recent) == WORKERS
        for pid, rows in recent.items():
            versions = {row[6] for row in rows if row[2] == "split"}
            assert versions == {1, 2}, f"worker {pid} of {node.data} answered {versions}"
    with api(cluster) as client:
        done = client.post("/tenants/split/rollout/", json={"percent": 100}).json()
        assert done["rollout"]["state"] == "completed"
    wait_for_generation(cluster)
    with fresh_client() as client:
        assert {get(client, node, "split.test", ip=keys[i])[1]
                for node in nodes for i in range(0, 2000, 100)} == {2}


# -- guard -------------------------------------------------------------------------------------


def test_the_guard_rolls_back_a_failing_version_and_spares_a_healthy_one(cluster):
    nodes = cluster["nodes"]
    guard = {"max_error_rate": 0.1, "min_requests": 30, "window_s": 8}
    with api(cluster) as client:
        publish(client, "bad", FAILING)
        publish(client, "good", answer("v2"))
        for tenant in ("bad", "good"):
            started = client.post(f"/tenants/{tenant}/scripts/2/activate/",
                                  json={"percent": 50, "guard": guard})
            assert started.status_code == 200, started.text
    wait_for_generation(cluster)

    stop = threading.Event()
    statuses: dict[str, dict[int, int]] = {"bad": {}, "good": {}}
    lock = threading.Lock()

    def load(worker: int):
        n = worker
        with fresh_client() as client:
            while not stop.is_set():
                for tenant in ("bad", "good"):
                    response, _ = get(client, nodes[n % 2], f"{tenant}.test",
                                      ip=f"198.51.{n // 250 % 250}.{n % 250}", **{"X-N": str(n)})
                    with lock:
                        bucket = statuses[tenant]
                        bucket[response.status_code] = bucket.get(response.status_code, 0) + 1
                n += 4
                time.sleep(0.01)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    rolled_back_after = None
    try:
        with api(cluster) as client:
            # The same load for a whole window and more: the healthy rollout gets its chance.
            while time.monotonic() - began < guard["window_s"] + 4:
                state = client.get("/tenants/bad/rollout/").json()["rollout"]["state"]
                if state == "auto_rolled_back" and rolled_back_after is None:
                    rolled_back_after = time.monotonic() - began
                time.sleep(0.25)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert statuses["bad"].get(500, 0) > 0  # the failures the guard saw were real answers
    assert rolled_back_after is not None, "the failing rollout was not rolled back"
    assert rolled_back_after < guard["window_s"], f"rolled back after {rolled_back_after:.1f}s"

    with api(cluster) as client:
        bad = client.get("/tenants/bad/rollout/").json()["rollout"]
        good = client.get("/tenants/good/rollout/").json()["rollout"]
    assert bad["state"] == "auto_rolled_back" and bad["ended_by"] == "guard"
    # Measured over the first few dozen requests of v2, when the guard tripped: 30 % with
    # a sampling error, and well above v1's 0 % plus the threshold.
    assert 0.15 <= bad["figures"]["new"]["error_rate"] <= 0.55
    assert bad["figures"]["old"]["error_rate"] == 0
    assert bad["figures"]["new"]["requests"] >= guard["min_requests"]
    assert good["state"] == "running", good
    assert good["figures"]["new"]["requests"] >= guard["min_requests"]
    assert good["figures"]["new"]["errors"] == 0

    # The audit trail: one auto_rollback, with the figures, for the failing tenant only.
    events = sql(cluster, "SELECT tenant_slug, actor, detail FROM tenants_auditevent "
                          "WHERE action = 'auto_rollback'")
    assert [(slug, actor) for slug, actor, _ in events] == [("bad", "guard")]
    detail = events[0][2] if isinstance(events[0][2], dict) else json.loads(events[0][2])
    assert detail["version"] == 2 and detail["previous"] == 1 and detail["tripped"] is True
    assert detail["new"]["errors"] >= 3

    # Every worker of both nodes serves v1 alone for the failing tenant again.
    wait_for_generation(cluster)
    with fresh_client() as client:
        for node in nodes:
            for i in range(60):
                response, version = get(client, node, "bad.test", ip=f"203.0.113.{i}",
                                        **{"X-N": "1"})
                assert (response.status_code, version) == (200, 1), response.text

    # ... and says so in the metrics and the logs of the node whose worker acted.
    total = 0
    for node in nodes:
        metrics = httpx.get(f"{node.control}/metrics", trust_env=False, timeout=10).text
        found = re.search(r'chistone_auto_rollbacks_total\{tenant="bad"\} (\d+)', metrics)
        total += int(float(found.group(1))) if found else 0
    assert total == 1
    logs = "".join(node.log_text() for node in nodes)
    assert logs.count("auto rollback: tenant bad v2 rolled back to v1") == 1
    assert "auto rollback: tenant good" not in logs

    with api(cluster) as client:  # the healthy one completes as usual
        done = client.post("/tenants/good/rollout/", json={"percent": 100}).json()
        assert done["rollout"]["state"] == "completed"


# -- shadow ------------------------------------------------------------------------------------


def test_a_shadow_shows_exactly_the_routes_it_decides_differently(cluster):
    nodes, farm = cluster["nodes"], cluster["farm"]
    a, b = farm.backends["a"], farm.backends["b"]
    with api(cluster) as client:
        publish(client, "mirror", MIRROR_CANDIDATE)
        started = client.post("/tenants/mirror/shadow/", json={"version": 2,
                                                                "sample_rate": 1.0})
        assert started.status_code == 201, started.text
    wait_for_generation(cluster)
    a.seen.clear()
    b.seen.clear()

    def one(i):
        path = f"/v1/item{i}" if i % 2 else f"/v2/item{i}"
        response, version = get(thread_client(), nodes[i % 2], "mirror.test", path=path)
        return path, response.status_code, response.json()["backend"], version

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(one, range(200)))
    # The clients got the active version's answers, all from backend a.
    assert {(status, backend, version) for _, status, backend, version in answers} == {
        (200, "a", 1)}
    assert len(a.seen) == 200 and b.seen == []

    deadline = time.monotonic() + 15
    with api(cluster) as client:
        while True:
            shadow = client.get("/tenants/mirror/shadow/").json()["shadow"]
            if shadow["compared"] + shadow["dropped"] >= 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    assert shadow["compared"] + shadow["dropped"] == 200
    assert shadow["dropped"] <= 10  # a bounded queue may drop a few, never silently
    routes = {r["route"]: (r["compared"], r["mismatched"]) for r in shadow["routes"]}
    assert set(routes) == {"/v1/{rest}", "/v2/{rest}"}
    assert routes["/v1/{rest}"][1] == 0 and routes["/v1/{rest}"][0] > 80
    assert routes["/v2/{rest}"][1] == routes["/v2/{rest}"][0] > 80
    assert shadow["mismatched"] == routes["/v2/{rest}"][1]
    assert 0 < len(shadow["samples"]) <= 50
    for sample in shadow["samples"]:
        assert sample["route"] == "/v2/{rest}" and sample["path"].startswith("/v2/item")
        assert sample["active"]["backend"] == "a" and sample["active"]["path"] == sample["path"]
        assert sample["shadow"]["backend"] == "b"
        assert sample["shadow"]["path"] == sample["path"].replace("/v2/", "/new/")
    assert b.seen == []  # the shadow never called its backend
    with api(cluster) as client:
        assert client.delete("/tenants/mirror/shadow/").status_code == 200
