"""Group 6: concurrency and configuration, against the real server and its database.

Activation under load (no failed request, never half of two versions), two concurrent
activations (one winner, served consistently), concurrent publishes of the same source (one
version), and the database going away mid-traffic (traffic keeps flowing, nothing is lost).
Races between processes run as real child processes released together by a file barrier.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.serving import ROOT

from .live import versioned_script

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("same_worker")]

CHILD = """
import json, os, sys, threading, time
import django
django.setup()
from django.db import connection
from chistone_site import actions
from tenants.audit import Actor
from tenants.models import Tenant
go, ready = sys.argv[1:3]
jobs = json.loads(sys.stdin.readline())
results = [None] * len(jobs)
waiting = threading.Semaphore(0)


def run(index, action, arg):
    tenant = Tenant.objects.get(slug="race")  # each thread has its own connection, open now
    waiting.release()
    while not os.path.exists(go):
        time.sleep(0.001)
    actor = Actor(name=f"racer-{os.getpid()}-{index}")
    try:
        if action == "publish":
            result = actions.do_publish_script(actor=actor, tenant=tenant, source=arg)
            results[index] = {"version": result.version.number, "created": result.created}
        else:
            activation = actions.do_activate_version(actor=actor, tenant=tenant,
                                                     version=int(arg))
            results[index] = {"activated": activation.version.number}
    except Exception as exc:
        results[index] = {"error": type(exc).__name__, "detail": str(exc)}
    finally:
        connection.close()


threads = [threading.Thread(target=run, args=(i, *job)) for i, job in enumerate(jobs)]
for thread in threads:
    thread.start()
for _ in threads:
    waiting.acquire()
open(ready, "w").close()
for thread in threads:
    thread.join()
print(json.dumps(results))
"""


def race(live, tmp_path: Path, jobs: list[tuple[str, str]], processes: int = 2) -> list[dict]:
    """Run `jobs` at the same instant: spread over `processes` child processes (two gateway
    nodes, say), one thread and one database connection per job, released together."""
    go = tmp_path / "go"
    children = []
    for index in range(processes):
        ready = tmp_path / f"ready-{index}"
        mine = [(i, job) for i, job in enumerate(jobs) if i % processes == index]
        process = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(go), str(ready)], env=live.env, cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        process.stdin.write(json.dumps([job for _, job in mine]) + "\n")
        process.stdin.close()
        children.append((process, ready, [i for i, _ in mine]))
    deadline = time.monotonic() + 60
    while not all(ready.exists() for _, ready, _ in children):
        assert time.monotonic() < deadline, "racers did not start"
        for process, _, _ in children:
            assert process.poll() is None, process.stderr.read()[-2000:]
        time.sleep(0.01)
    go.touch()
    results: list[dict] = [{} for _ in jobs]
    for process, _, indexes in children:
        out = process.stdout.read()
        assert process.wait(60) == 0, process.stderr.read()[-2000:]
        for i, result in zip(indexes, json.loads(out.strip().splitlines()[-1]), strict=True):
            results[i] = result
    return results


def db_query(live, sql: str, *params) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(live.db, timeout=20) as conn:
        return conn.execute(sql, params).fetchall()


def race_state(live) -> dict:
    [(active, config_version)] = db_query(
        live, "SELECT v.number, t.config_version FROM tenants_tenant t "
              "LEFT JOIN luascripts_scriptversion v ON v.id = t.active_version_id "
              "WHERE t.slug = 'race'")
    return {"active": active, "config_version": config_version}


def test_activation_under_load_fails_no_request_and_mixes_no_versions(live):
    stop = threading.Event()
    seen: list[list[tuple[int, str, str]]] = [[] for _ in range(6)]

    def hammer(bucket: list) -> None:
        with live.client() as client:
            while not stop.is_set():
                response = client.get("/v", headers={"Host": "swap.test"})
                bucket.append((response.status_code, response.text,
                               response.headers.get("x-version", "")))

    threads = [threading.Thread(target=hammer, args=(bucket,)) for bucket in seen]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.6)
        with live.api() as api:
            response = api.post("tenants/swap/scripts/", json={
                "source": versioned_script("v2"), "activate": True, "message": "under load"})
        assert response.status_code == 201, response.text
        live.wait_for("swap.test", "/v", lambda r: r.headers.get("x-version") == "v2")
        time.sleep(0.6)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    total = sum(len(bucket) for bucket in seen)
    assert total > 100
    for bucket in seen:
        assert {status for status, _, _ in bucket} == {200}
        for _, body, version in bucket:  # middleware and handler from the same version
            assert body == f"handler-{version}|mw-{version}", body
        versions = [version for _, _, version in bucket]
        # Once a client saw v2 it never sees v1 again (one worker, one snapshot at a time).
        assert versions == sorted(versions), versions
    assert any(version == "v2" for bucket in seen for _, _, version in bucket)


def test_two_concurrent_activations_have_one_consistent_winner(live, tmp_path):
    with live.api() as api:
        numbers = []
        for label in ("r2", "r3"):
            response = api.post("tenants/race/scripts/", json={"source": versioned_script(label)})
            assert response.status_code in (200, 201), response.text
            numbers.append(response.json()["version"])
    before = race_state(live)
    results = race(live, tmp_path, [("activate", str(n)) for n in numbers])
    assert sorted(r.get("activated") for r in results) == sorted(numbers), results
    after = race_state(live)
    assert after["active"] in numbers
    assert after["config_version"] == before["config_version"] + 2  # both applied, in turn
    # The audit log's last activation names the winner, and the data plane serves it.
    [(detail,)] = db_query(
        live, "SELECT detail FROM tenants_auditevent WHERE tenant_slug = 'race' AND action "
              "IN ('script.activate', 'script.rollback') ORDER BY id DESC LIMIT 1")
    assert json.loads(detail)["version"] == after["active"]
    label = {numbers[0]: "r2", numbers[1]: "r3"}[after["active"]]
    response = live.wait_for("race.test", "/v", lambda r: r.headers.get("x-version") == label)
    assert response.text == f"handler-{label}|mw-{label}"
    for _ in range(10):
        assert live.get("race.test", "/v").headers["x-version"] == label


def test_concurrent_publishes_of_the_same_source_store_one_version(live, tmp_path):
    source = versioned_script(f"same-{time.monotonic_ns()}")
    results = race(live, tmp_path, [("publish", source)] * 4)
    assert all("error" not in r for r in results), results
    assert len({r["version"] for r in results}) == 1
    assert sum(r["created"] for r in results) == 1
    rows = db_query(live, "SELECT count(*) FROM luascripts_scriptversion v JOIN tenants_tenant t"
                          " ON t.id = v.tenant_id WHERE t.slug = 'race' AND v.source = ?", source)
    assert rows == [(1,)]


def test_concurrent_publishes_through_the_api_agree_too(live):
    source = versioned_script(f"api-{time.monotonic_ns()}")
    answers: list = []

    def publish() -> None:
        with live.api() as api:
            answers.append(api.post("tenants/race/scripts/", json={"source": source}))

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201]
    assert len({a.json()["version"] for a in answers}) == 1


def test_concurrent_publishes_of_different_sources_lose_nothing(live, tmp_path):
    sources = [versioned_script(f"d{i}-{time.monotonic_ns()}") for i in range(4)]
    results = race(live, tmp_path, [("publish", s) for s in sources])
    numbers = sorted(r["version"] for r in results)
    assert all(r["created"] for r in results)
    assert numbers == list(range(numbers[0], numbers[0] + 4))  # distinct, no gap


def test_the_database_going_away_mid_traffic_does_not_stop_traffic(live):
    offset = live.log_size()
    hidden = live.db.with_name(live.db.name + ".away")
    os.replace(live.db, hidden)
    try:
        deadline = time.monotonic() + 2.0  # four polls of the generation watcher
        statuses = []
        while time.monotonic() < deadline:
            statuses += [live.get("adv.test", "/ok").status_code,
                         live.get("nb.test", "/up").status_code,
                         live.get("plain.test", "/x").status_code]
        assert set(statuses) == {200} and len(statuses) > 30
        with live.client() as client:
            ready = client.get("/readyz").json()
        assert ready["status"] == "degraded" and ready["database"] == "unreachable"
        with live.api() as api:
            refused = api.get("tenants/")
        assert refused.status_code == 503 and refused.json()["error"] == "unavailable"
        assert "configuration database unreachable" in live.log_since(offset)
    finally:
        os.replace(hidden, live.db)
    # Back: nothing was lost, and the next change is picked up.
    with live.client() as client:
        deadline = time.monotonic() + 10
        while client.get("/readyz").json()["status"] != "ready":
            assert time.monotonic() < deadline, "the gateway never saw the database again"
            time.sleep(0.1)
    with live.api() as api:
        response = api.post("tenants/swap/scripts/", json={
            "source": versioned_script("after-outage"), "activate": True})
    assert response.status_code == 201, response.text
    live.wait_for("swap.test", "/v", lambda r: r.headers.get("x-version") == "after-outage")
    assert live.get("swap.test", "/v").text == "handler-after-outage|mw-after-outage"
