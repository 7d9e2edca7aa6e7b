"""Shared state and middleware.rate_limit, for real: `manage.py serve --workers 2` nodes, one
PostgreSQL database, one Redis (CHISTONE_TEST_REDIS_URL, CI's at 127.0.0.1:6379, or a
private redis-server), real Lua, a real backend.

Two nodes share the database and Redis: a limit of N lets exactly N through whichever
worker of whichever node answers, also when 200 requests arrive at once. A third node has a
Redis of its own, which a test stops and starts again: traffic flows (fail open), `fail =
"closed"` refuses, `/metrics` counts it, and service resumes by itself.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.backends import BackendFarm
from tests.redis_server import RedisServer, delete_prefix, unique_prefix
from tests.serving import (
    pg_url,
    prepare_database,
    server_env,
    start_serve,
    throwaway_database,
)

pytestmark = pytest.mark.e2e
LIMIT = 10

SCRIPT = r"""
local per_client = middleware.rate_limit{rate = 10, per = 60, key = "header:x-client"}
local closed = middleware.rate_limit{rate = 10, per = 60, key = "header:x-client",
  fail = "closed", name = "closed"}
local fifty = middleware.rate_limit{rate = 50, per = 60, key = "header:x-client",
  name = "fifty"}

chi.with(per_client).get("/limited", function(req) return proxy("echo") end)
chi.with(closed).get("/closed", function(req) return respond(200, "ok") end)
chi.with(fifty).get("/fifty", function(req) return respond(200, "ok") end)

chi.get("/allow", function(req)
  local ok, info = limit.allow(req.query.key, 3, 60)
  return respond(200, json.encode({ok = ok, remaining = info.remaining,
    degraded = info.degraded}))
end)
chi.get("/put", function(req)
  local ok, err = shared.set(req.query.key, req.query.value, 60)
  return respond(200, json.encode({ok = ok or false, err = err or ""}))
end)
chi.get("/get", function(req)
  local v, err = shared.get(req.query.key)
  return respond(200, json.encode({value = v or json.null, err = err or ""}))
end)
chi.get("/count", function(req)
  local n, err = shared.incr("count:" .. req.query.key, 1, 60)
  return respond(200, json.encode({n = n or json.null, err = err or ""}))
end)
"""


def spec(farm: BackendFarm) -> dict:
    echo = farm.add(f"rl-echo-{uuid.uuid4().hex[:6]}")
    return {"tenants": [
        {"slug": slug, "domains": [f"{slug}.test"], "script": SCRIPT,
         "backends": [{"name": "echo", "url": echo.url}]}
        for slug in ("rl", "rival")]}


@pytest.fixture(scope="module")
def pg_database():
    with throwaway_database("chistone_rl") as name:
        yield pg_url(name)


@pytest.fixture(scope="module")
def nodes(farm, pg_database, _session_redis_url, tmp_path_factory):
    """Two gateway nodes of two workers each, on one database and one Redis."""
    tmp = tmp_path_factory.mktemp("rate-limit")
    # A bound well above what Redis needs even when the test machine is saturated: these
    # tests count exact answers, and an answer past the bound is a degraded one (let
    # through). The default (50 ms) is what the outage test below uses.
    prefix = unique_prefix()
    redis = {"CHISTONE_REDIS_URL": _session_redis_url, "CHISTONE_REDIS_PREFIX": prefix,
             "CHISTONE_REDIS_TIMEOUT_MS": "2000"}
    env_a = server_env(pg_database, tmp / "a", **redis)
    env_b = server_env(pg_database, tmp / "b", **redis)
    prepare_database(env_a, spec(farm), tmp)
    served = [start_serve(env_a, tmp / "a.log", "--workers", "2"),
              start_serve(env_b, tmp / "b.log", "--workers", "2")]
    try:
        for node in served:
            node.wait_ready(workers=2)
        yield served
    finally:
        for node in served:
            node.stop()
        delete_prefix(_session_redis_url, prefix)


@pytest.fixture(scope="module")
def lone(farm, tmp_path_factory):
    """A node of two workers with a Redis of its own (which its test stops)."""
    tmp = tmp_path_factory.mktemp("rate-limit-outage")
    redis = RedisServer(tmp / "redis")
    redis.start()
    env = server_env(f"sqlite:///{tmp / 'db.sqlite3'}", tmp, CHISTONE_REDIS_URL=redis.url,
                     CHISTONE_REDIS_TIMEOUT_MS="50")
    prepare_database(env, spec(farm), tmp)
    node = start_serve(env, tmp / "serve.log", "--workers", "2")
    try:
        node.wait_ready(workers=2)
        yield node, redis
    finally:
        node.stop()
        redis.stop()


def get(base: str, path: str, client_id: str = "", host: str = "rl.test") -> httpx.Response:
    """One request on a new connection (so the kernel spreads them over the workers)."""
    headers = {"Host": host, "Connection": "close"}
    if client_id:
        headers["X-Client"] = client_id
    with httpx.Client(trust_env=False, timeout=10) as client:
        return client.get(f"{base}{path}", headers=headers)


def requests_per_worker(node, route: str) -> dict[int, int]:
    """Requests of tenant rl on `route` each worker of `node` counted, from the reports the
    workers write for /metrics (once a second) in the directory `serve` gave them."""
    counts = {}
    for pid in node.worker_pids():
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        directory = next(e.split(b"=", 1)[1].decode() for e in environ
                         if e.startswith(b"CHISTONE_METRICS_DIR="))
        report = json.loads(Path(directory, f"worker-{pid}.json").read_text())
        counts[pid] = sum(row["requests"] for row in report["stats"]["requests"]
                          if row["tenant"] == "rl" and row["route"] == route)
    return counts


def test_a_limit_of_n_lets_exactly_n_through_across_workers_and_nodes(nodes) -> None:
    a, b = nodes
    one_node = f"one-{uuid.uuid4().hex}"
    statuses = [get(a.data, "/limited", one_node).status_code for _ in range(3 * LIMIT)]
    assert statuses.count(200) == LIMIT and statuses.count(429) == 2 * LIMIT
    assert statuses[:LIMIT] == [200] * LIMIT
    time.sleep(1.5)  # the workers' next reports
    per_worker = requests_per_worker(a, "/limited")
    assert len(per_worker) == 2 and all(per_worker.values()), per_worker  # both answered
    two_nodes = f"two-{uuid.uuid4().hex}"
    statuses = [get((a, b)[i % 2].data, "/limited", two_nodes).status_code
                for i in range(3 * LIMIT)]
    assert statuses.count(200) == LIMIT and statuses[:LIMIT] == [200] * LIMIT


def test_every_answer_carries_the_headers_and_over_the_limit_is_a_429(nodes) -> None:
    a, b = nodes
    who = f"headers-{uuid.uuid4().hex}"
    for i in range(LIMIT):
        response = get((a, b)[i % 2].data, "/limited", who)
        assert response.status_code == 200
        assert response.headers["ratelimit-limit"] == str(LIMIT)
        assert response.headers["ratelimit-remaining"] == str(LIMIT - 1 - i)
        reset = int(response.headers["ratelimit-reset"])
        assert reset == 0 if i < LIMIT - 1 else 55 <= reset <= 60  # the oldest entry's age
        # the proxied answer itself, streamed: the backend's body and headers
        assert response.json()["target"] == "/limited"
    response = get(a.data, "/limited", who)
    assert response.status_code == 429
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["detail"] == "Too many requests: the limit is 10 per 60 s."
    assert response.headers["ratelimit-remaining"] == "0"
    retry_after = int(response.headers["retry-after"])
    assert 55 <= retry_after <= 60
    assert response.headers["ratelimit-reset"] == str(retry_after)
    assert response.headers["x-request-id"]


def test_200_concurrent_requests_against_a_limit_of_50_let_exactly_50_through(nodes) -> None:
    a, b = nodes
    who = f"race-{uuid.uuid4().hex}"
    with ThreadPoolExecutor(max_workers=100) as pool:
        statuses = list(pool.map(lambda i: get((a, b)[i % 2].data, "/fifty", who).status_code,
                                 range(200)))
    assert statuses.count(200) == 50, statuses
    assert statuses.count(429) == 150
    time.sleep(1.5)  # the workers' next reports: no answer was a degraded one
    assert _unavailable_total(a) == 0 and _unavailable_total(b) == 0


def test_tenants_cannot_read_each_others_state(nodes) -> None:
    a, b = nodes
    secret = uuid.uuid4().hex
    put = get(a.data, f"/put?key=token&value={secret}", host="rival.test").json()
    assert put == {"ok": True, "err": ""}
    assert get(b.data, "/get?key=token", host="rival.test").json()["value"] == secret
    # every name that could point into the rival's namespace reads nothing
    for key in ("token", "{rival}:v", "chistone:{rival}:v", "}:token", "../rival/token",
                "rival:token", "%7Brival%7D%3Av"):
        answer = get(b.data, f"/get?key={httpx.QueryParams({'k': key})['k']}").json()
        assert answer == {"value": None, "err": ""}, key
    # limits too: the rival exhausting a key leaves rl's key alone
    for _ in range(3):
        get(a.data, "/allow?key=shared-name", host="rival.test")
    assert get(a.data, "/allow?key=shared-name", host="rival.test").json()["ok"] is False
    assert get(a.data, "/allow?key=shared-name").json()["ok"] is True
    # and counters are one per tenant, shared by both nodes
    assert [get((a, b)[i % 2].data, f"/count?key={secret}").json()["n"] for i in range(4)] == \
        [1, 2, 3, 4]


def _unavailable_total(node) -> float:
    text = httpx.get(f"{node.control}/metrics", headers={"Host": "localhost"}, timeout=10,
                     trust_env=False).text
    found = re.findall(r'^chistone_shared_state_unavailable_total\{op="limit",tenant="rl"\} '
                       r'(\S+)$', text, re.M)
    return float(found[0]) if found else 0.0


def test_redis_down_traffic_flows_fail_closed_refuses_and_service_resumes(lone) -> None:
    node, redis = lone
    who = f"outage-{uuid.uuid4().hex}"
    first = get(node.data, "/limited", who)
    assert first.status_code == 200 and first.headers["ratelimit-remaining"] == str(LIMIT - 1)
    redis.stop()
    started = time.monotonic()
    # fail open: more than the limit goes through, promptly, and the middleware says nothing
    # it cannot know
    statuses = [get(node.data, "/limited", who) for _ in range(2 * LIMIT)]
    assert [r.status_code for r in statuses] == [200] * (2 * LIMIT)
    assert all(r.headers["ratelimit-remaining"] == str(LIMIT) for r in statuses)
    assert time.monotonic() - started < 10
    assert get(node.data, "/allow?key=x").json() == {"ok": True, "remaining": 3,
                                                       "degraded": True}
    assert get(node.data, "/get?key=x").json() == {"value": None, "err": "unavailable"}
    # fail closed: refused, with a 503 that says why
    refused = get(node.data, "/closed", who)
    assert refused.status_code == 503
    assert refused.json()["detail"] == "The rate limit cannot be checked now; try again shortly."
    assert refused.headers["retry-after"] == "1"
    # counted in /metrics (workers publish once a second), logged once per interval
    deadline = time.monotonic() + 10
    while _unavailable_total(node) < 2 * LIMIT + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _unavailable_total(node) >= 2 * LIMIT + 1
    warnings = [line for line in node.log_text().splitlines()
                if "shared state: Redis at" in line and "is unavailable" in line]
    assert 1 <= len(warnings) <= 2, warnings  # one per worker at most, not one per request
    # Redis is back (empty: it keeps nothing on disk): service resumes by itself
    redis.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        response = get(node.data, "/closed", who)
        if response.status_code == 200:
            break
        time.sleep(0.2)
    assert response.status_code == 200
    time.sleep(1.2)  # the other worker's back-off (1 s) is over too
    fresh = f"after-{uuid.uuid4().hex}"
    statuses = [get(node.data, "/limited", fresh).status_code for _ in range(LIMIT + 5)]
    assert statuses == [200] * LIMIT + [429] * 5
