"""The shared-state stores: LocalStore in memory, RedisStore on a real redis-server.

Both stores answer the same contract, so most tests run against each. Redis-only: one
round trip per operation (EVALSHA), exactness under concurrency, failure, back-off, the
count of unavailable answers, recovery.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest
import redis

from luascripts.engine.effects import LimitAnswer, LimitCheck, SharedAnswer, SharedOp
from routing.shared_state import LocalStore, Quota, RedisStore, decode, encode


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", "redis"])
async def store(request):
    if request.param == "local":
        s = LocalStore(Quota(max_keys=5, max_bytes=200))
        yield s
    else:
        url, prefix = request.getfixturevalue("redis_url")
        s = RedisStore(url, timeout_s=1.0, quota=Quota(max_keys=5, max_bytes=200),
                       prefix=prefix)
        yield s
        await s.close()


def op(action, key, value=None, ttl_s=None, delta=None) -> SharedOp:
    return SharedOp(action, key, value, ttl_s, delta)


async def test_values_keep_their_type(store) -> None:
    assert await store.shared("acme", op("get", "nothing")) == SharedAnswer(None)
    assert await store.shared("acme", op("set", "s", "héllo\x00\xff")) == SharedAnswer(True)
    assert await store.shared("acme", op("set", "i", 42)) == SharedAnswer(True)
    assert await store.shared("acme", op("set", "f", 2.5)) == SharedAnswer(True)
    assert (await store.shared("acme", op("get", "s"))).value == "héllo\x00\xff"
    assert (await store.shared("acme", op("get", "i"))).value == 42
    assert (await store.shared("acme", op("get", "f"))).value == 2.5
    assert await store.shared("acme", op("delete", "s")) == SharedAnswer(True)
    assert await store.shared("acme", op("get", "s")) == SharedAnswer(None)
    assert await store.shared("acme", op("delete", "s")) == SharedAnswer(True)


async def test_incr_starts_at_zero_and_refuses_strings(store) -> None:
    assert await store.shared("acme", op("incr", "n", delta=1)) == SharedAnswer(1)
    assert await store.shared("acme", op("incr", "n", delta=41)) == SharedAnswer(42)
    assert await store.shared("acme", op("incr", "n", delta=-50)) == SharedAnswer(-8)
    await store.shared("acme", op("set", "f", 0.5))
    assert await store.shared("acme", op("incr", "f", delta=2)) == SharedAnswer(2.5)
    await store.shared("acme", op("set", "s", "5"))
    assert await store.shared("acme", op("incr", "s", delta=1)) == \
        SharedAnswer(error="not_a_number")


async def test_tenants_never_see_each_others_keys(store) -> None:
    await store.shared("acme", op("set", "secret", "acme's"))
    for key in ("secret", "{acme}:v", "acme:secret", "chistone:{acme}:v"):
        assert await store.shared("globex", op("get", key)) == SharedAnswer(None)
    await store.shared("globex", op("set", "secret", "globex's"))
    assert (await store.shared("acme", op("get", "secret"))).value == "acme's"
    # limit counters too
    assert (await store.limit("acme", LimitCheck("k", 1, 60))).allowed
    assert not (await store.limit("acme", LimitCheck("k", 1, 60))).allowed
    assert (await store.limit("globex", LimitCheck("k", 1, 60))).allowed


async def test_quota_on_keys_and_bytes(store) -> None:
    for i in range(5):
        assert await store.shared("acme", op("set", f"k{i}", i)) == SharedAnswer(True)
    assert await store.shared("acme", op("set", "k5", 5)) == SharedAnswer(error="quota")
    assert await store.shared("acme", op("incr", "k6", delta=1)) == SharedAnswer(error="quota")
    # replacing an existing key is not a new key; another tenant has its own quota
    assert await store.shared("acme", op("set", "k0", "x")) == SharedAnswer(True)
    assert await store.shared("globex", op("set", "k5", 5)) == SharedAnswer(True)
    await store.shared("acme", op("delete", "k4"))
    assert await store.shared("acme", op("set", "k5", 5)) == SharedAnswer(True)
    # bytes: key + value (+1 tag byte) must stay within 200
    assert await store.shared("acme", op("set", "k0", "x" * 300)) == SharedAnswer(error="quota")
    assert await store.shared("acme", op("set", "k0", "x" * 150)) == SharedAnswer(True)
    assert await store.shared("acme", op("set", "k1", "x" * 50)) == SharedAnswer(error="quota")
    assert (await store.shared("acme", op("get", "k1"))).value == 1  # unchanged


async def test_values_expire_and_leave_the_quota(store, request) -> None:
    local = isinstance(store, LocalStore)
    if local:
        clock = store.clock = Clock()
    for i in range(5):
        await store.shared("acme", op("set", f"k{i}", i, ttl_s=0.2))
    assert await store.shared("acme", op("set", "later", 1)) == SharedAnswer(error="quota")
    if local:
        clock.now += 0.25
    else:
        await asyncio.sleep(0.25)
    assert await store.shared("acme", op("get", "k0")) == SharedAnswer(None)
    # every expired key left the count: five new ones fit (the quota is exact)
    for i in range(5):
        assert await store.shared("acme", op("set", f"n{i}", "v")) == SharedAnswer(True)


async def test_incr_ttl_applies_when_it_creates_the_key(store) -> None:
    local = isinstance(store, LocalStore)
    if local:
        clock = store.clock = Clock()
    assert (await store.shared("acme", op("incr", "w", ttl_s=0.3, delta=1))).value == 1
    if local:
        clock.now += 0.2
    else:
        await asyncio.sleep(0.2)
    assert (await store.shared("acme", op("incr", "w", ttl_s=0.3, delta=1))).value == 2
    if local:
        clock.now += 0.15
    else:
        await asyncio.sleep(0.15)
    # the first incr's TTL: the window restarts
    assert (await store.shared("acme", op("incr", "w", ttl_s=0.3, delta=1))).value == 1


async def test_limit_is_a_sliding_window(store) -> None:
    local = isinstance(store, LocalStore)
    if local:
        clock = store.clock = Clock()
    answers = [await store.limit("acme", LimitCheck("k", 3, 1)) for _ in range(4)]
    assert [a.allowed for a in answers] == [True, True, True, False]
    assert [a.remaining for a in answers] == [2, 1, 0, 0]
    assert answers[0].limit == 3 and answers[0].reset_s == 0
    assert 0.9 <= answers[3].reset_s <= 1.0
    assert not answers[3].degraded
    if local:
        clock.now += 1.01
    else:
        await asyncio.sleep(1.01)
    assert (await store.limit("acme", LimitCheck("k", 3, 1))).allowed


async def test_redis_limit_is_exact_under_concurrency(redis_url) -> None:
    url, prefix = redis_url
    stores = [RedisStore(url, timeout_s=2.0, prefix=prefix) for _ in range(4)]
    try:
        answers = await asyncio.gather(*(stores[i % 4].limit("acme", LimitCheck("c", 50, 60))
                                         for i in range(200)))
        assert sum(a.allowed for a in answers) == 50
        assert sorted(a.remaining for a in answers if a.allowed) == list(range(50))
    finally:
        for s in stores:
            await s.close()


async def test_redis_each_operation_is_one_round_trip(redis_url) -> None:
    url, prefix = redis_url
    store = RedisStore(url, timeout_s=1.0, prefix=prefix)
    monitor = redis.Redis.from_url(url)
    try:
        await store.shared("acme", op("get", "warm"))  # loads the scripts if needed
        await store.limit("acme", LimitCheck("warm", 5, 60))
        before = monitor.info("commandstats")
        await store.shared("acme", op("set", "a", 1))
        await store.shared("acme", op("incr", "a", delta=1))
        await store.limit("acme", LimitCheck("b", 5, 60))
        after = monitor.info("commandstats")
        calls = {name: after[name]["calls"] - before.get(name, {"calls": 0})["calls"]
                 for name in after if name.startswith("cmdstat_")}
        calls = {name: n for name, n in calls.items() if n and name != "cmdstat_info"}
        assert calls.get("cmdstat_evalsha") == 3, calls
        # (commandstats also counts the commands the scripts run inside Redis)
        assert "cmdstat_eval" not in calls and "cmdstat_script|load" not in calls, calls
    finally:
        monitor.close()
        await store.close()


async def test_redis_keys_are_namespaced_per_tenant_in_one_slot(redis_url) -> None:
    url, prefix = redis_url
    store = RedisStore(url, timeout_s=1.0, prefix=prefix)
    direct = redis.Redis.from_url(url)
    try:
        await store.shared("acme", op("set", "x}:{globex", "v", ttl_s=60))
        await store.limit("acme", LimitCheck("ip:1", 5, 60))
        keys = sorted(k.decode() for k in direct.scan_iter(f"{prefix}:*"))
        assert keys == [f"{prefix}:{{acme}}:{s}" for s in ("b", "l:ip:1", "seq", "v", "x")]
        assert direct.hget(f"{prefix}:{{acme}}:v", "x}:{globex") == b"sv"
    finally:
        direct.close()
        await store.close()


async def test_redis_down_answers_unavailable_counts_backs_off_and_recovers(
        private_redis, caplog) -> None:
    seen: list[tuple[str, str]] = []
    store = RedisStore(private_redis.url, timeout_s=0.05, backoff_s=0.3,
                       on_unavailable=lambda t, o: seen.append((t, o)))
    try:
        assert (await store.shared("acme", op("set", "a", 1))) == SharedAnswer(True)
        private_redis.stop()
        caplog.set_level(logging.WARNING, "chistone.shared_state")
        assert await store.shared("acme", op("get", "a")) == SharedAnswer(error="unavailable")
        open_ = await store.limit("acme", LimitCheck("k", 1, 60))
        assert open_ == LimitAnswer(True, 1, 1, 0.0, degraded=True)
        closed = await store.limit("acme", LimitCheck("k", 1, 60, fail_closed=True))
        assert not closed.allowed and closed.degraded and closed.error == "unavailable"
        for _ in range(50):  # in the back-off: answered at once, counted, not logged again
            await store.shared("acme", op("incr", "a", delta=1))
        assert seen[:3] == [("acme", "get"), ("acme", "limit"), ("acme", "limit")]
        assert len(seen) == 53
        warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(warnings) == 1
        private_redis.start()
        await asyncio.sleep(0.35)  # the back-off ends; the next call asks Redis again
        assert await store.shared("acme", op("set", "b", 2)) == SharedAnswer(True)
        assert any("answers again" in r.getMessage() for r in caplog.records)
    finally:
        await store.close()


async def test_redis_slower_than_the_timeout_is_unavailable(private_redis) -> None:
    store = RedisStore(private_redis.url, timeout_s=0.05, backoff_s=0.2)
    try:
        await store.shared("acme", op("get", "warm"))  # a pooled connection, scripts loaded
        os.kill(private_redis.process.pid, signal.SIGSTOP)  # Redis stops answering
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            answer = await store.limit("acme", LimitCheck("k", 5, 60))
            assert answer.degraded and answer.allowed
            assert await store.shared("acme", op("get", "warm")) == \
                SharedAnswer(error="unavailable")
            assert loop.time() - started < 0.5  # bounded by the timeout, then the back-off
        finally:
            os.kill(private_redis.process.pid, signal.SIGCONT)
        await asyncio.sleep(0.25)
        assert (await store.limit("acme", LimitCheck("k", 5, 60))).degraded is False
    finally:
        await store.close()


def test_values_encode_with_their_type() -> None:
    for value in ("", "s", "5", 0, -7, 2 ** 52, 0.1, -2.5):
        assert decode(encode(value)) == value
    assert decode(encode(3.0)) == 3 and isinstance(decode(encode(3.0)), int)


async def test_redis_scripts_are_loaded_again_after_a_flush(redis_url) -> None:
    url, prefix = redis_url
    store = RedisStore(url, timeout_s=1.0, prefix=prefix)
    direct = redis.Redis.from_url(url)
    try:
        assert (await store.limit("acme", LimitCheck("k", 2, 60))).remaining == 1
        direct.script_flush()
        assert (await store.limit("acme", LimitCheck("k", 2, 60))).remaining == 0
        direct.script_flush()
        assert await store.shared("acme", op("incr", "n", delta=5)) == SharedAnswer(5)
    finally:
        direct.close()
        await store.close()


async def test_local_store_memory_stays_bounded() -> None:
    store = LocalStore(clock=Clock())
    for i in range(5000):  # one key set again and again with a TTL
        await store.shared("acme", op("set", "k", i, ttl_s=3600))
    space = store._spaces["acme"]
    assert len(space.expiry) <= 4 * len(space.values) + 1025
    # limit logs of keys whose window has passed are forgotten
    for i in range(4095):
        await store.limit("acme", LimitCheck(f"ip:{i}", 5, 1))
    store.clock.now += 2
    await store.limit("acme", LimitCheck("ip:last", 5, 1))
    assert list(space.limits) == ["ip:last"]
