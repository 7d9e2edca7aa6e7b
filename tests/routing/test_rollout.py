"""The rollout split: a stable hash, the same in every process, sticky per key, monotonic in
the percentage; the key is the named header, else the client's IP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from routing.request import ClientRequest
from routing.rollout import BUCKETS, RolloutEntry, bucket, salt_for


def request(ip: str = "10.0.0.1", headers=()) -> ClientRequest:
    return ClientRequest(method="GET", raw_path="/", query="", host="shop.test",
                         host_header="shop.test", scheme="http", peer=ip, client_ip=ip,
                         forwarded_for=None, forwarded_proto="http", request_id="r",
                         headers=tuple(headers))


def entry(percent: int, key_header: str = "") -> RolloutEntry:
    return RolloutEntry(id=7, script=None, version_id=2, version_number=2, percent=percent,
                        key_header=key_header, salt=salt_for("shop", 7),
                        config_header=(b"x-chistone-config", b"5; version=2"))


def test_ten_percent_of_distinct_keys():
    rollout = entry(10)
    taken = sum(rollout.takes(request(f"10.{i // 256 % 256}.{i % 256}.{i // 65536}"))
                for i in range(20_000))
    assert 0.09 <= taken / 20_000 <= 0.11


def test_the_same_key_always_gets_the_same_answer_and_raising_only_adds_keys():
    keys = [f"user-{i}" for i in range(2000)]
    low, high = entry(10, "x-user"), entry(40, "x-user")
    at_10 = {k for k in keys if low.takes(request(headers=[("x-user", k)]))}
    at_40 = {k for k in keys if high.takes(request(headers=[("x-user", k)]))}
    assert at_10 < at_40
    assert at_10 == {k for k in keys if low.takes(request(headers=[("x-user", k)]))}


def test_without_the_header_the_client_ip_decides():
    rollout = entry(50, "x-user")
    assert rollout.key_of(request("10.1.2.3")) == "10.1.2.3"
    assert rollout.key_of(request("10.1.2.3", [("x-user", "ann")])) == "ann"


def test_edges():
    one = sum(entry(1).takes(request(f"key-{i}")) for i in range(10_000))
    assert 50 <= one <= 150
    assert all(entry(100).takes(request(f"10.0.0.{i}")) for i in range(256))
    assert all(0 <= bucket(b"s", f"k{i}") < BUCKETS for i in range(1000))


def test_the_hash_is_the_same_in_another_process():
    # Python's hash() of a str differs per process; the rollout's must not.
    code = ("from routing.rollout import bucket, salt_for\n"
            "print([bucket(salt_for('shop', 7), f'10.0.0.{i}') for i in range(50)])\n")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "random", "PATH": "/usr/bin"},
                           cwd=str(Path(__file__).resolve().parents[2]))
    here = [bucket(salt_for("shop", 7), f"10.0.0.{i}") for i in range(50)]
    assert other.stdout.strip() == str(here)


# -- in the gateway ------------------------------------------------------------------------

V1 = 'chi.get("/", function(req) return respond(200, "v1") end)\n'
V2 = 'chi.get("/", function(req) return respond(200, "v2") end)\n'


def gateway_with_rollout(percent: int, guard: int = 0):
    from dataclasses import replace

    from luascripts.engine import load_script
    from routing.gateway import Gateway
    from routing.snapshot import SnapshotHolder
    from tests.routing.fakes import FakeTransport, snapshot, tenant

    active = tenant("shop", domains=("shop.test",),
                    script=load_script(V1, tenant="shop", backend_names=["api"]))
    rollout = replace(entry(percent), script=load_script(V2, tenant="shop",
                                                         backend_names=["api"]))
    holder = SnapshotHolder()
    holder.swap(snapshot(replace(active, rollout=rollout, guard=guard), generation=5))
    return Gateway(holder=holder, transport=FakeTransport())


async def test_the_gateway_answers_with_the_version_the_key_picks():
    from tests.routing.asgi import call, http_scope

    gateway = gateway_with_rollout(30, guard=7)
    seen = {}
    for i in range(200):
        ip = f"192.0.2.{i}"
        result = await call(gateway, http_scope("/", host="shop.test", client=ip))
        seen[ip] = (result.body.decode(), result.header("x-chistone-config"))
        again = await call(gateway, http_scope("/", host="shop.test", client=ip))
        assert again.body == result.body  # sticky
    assert {v for v in seen.values()} == {("v1", "5; version=1"), ("v2", "5; version=2")}
    new = sum(body == "v2" for body, _ in seen.values())
    assert 30 <= new <= 90  # 30 % of 200, loosely: the hash is the precise test above
    expected = {ip: "v2" if entry(30).takes(request(ip)) else "v1" for ip in seen}
    assert {ip: body for ip, (body, _) in seen.items()} == expected
    # Both sides were counted for the guard (every request twice above).
    counts = gateway.stats.guards.take()
    assert counts[(7, 2)] == [2 * new, 0] and counts[(7, 1)] == [2 * (200 - new), 0]
