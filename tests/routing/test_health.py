import pytest

from routing.health import ActiveChecker, HealthRegistry
from tests.routing.fakes import backend, snapshot, tenant


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_passive_ejection_and_cooldown():
    clock = Clock()
    registry = HealthRegistry(failures=3, cooldown=10, clock=clock)
    b = backend("api")
    registry.record_failure(b, "refused")
    registry.record_failure(b, "refused")
    assert registry.is_healthy(b)
    registry.record_failure(b, "refused")
    assert not registry.is_healthy(b)
    clock.now += 9.9
    assert not registry.is_healthy(b)
    clock.now += 0.2
    assert registry.is_healthy(b)  # retried after the cool-down
    registry.record_failure(b, "refused")  # still failing: out again at once
    assert not registry.is_healthy(b)
    clock.now += 11
    registry.record_success(b)
    registry.record_failure(b, "refused")
    assert registry.is_healthy(b)  # a success cleared the streak


def test_success_resets_streak():
    registry = HealthRegistry(failures=2)
    b = backend("api")
    registry.record_failure(b, "x")
    registry.record_success(b)
    registry.record_failure(b, "x")
    assert registry.is_healthy(b)


async def test_active_rise_and_fall():
    registry = HealthRegistry(rise=2, fall=2)
    checked = backend("api", health="/health")
    unchecked = backend("other")
    snap = snapshot(tenant("acme", backends=[checked, unchecked], domains=("a.test",)))
    answers = {"ok": False}
    probed = []

    async def probe(b, limit):
        probed.append(b.name)
        return answers["ok"]

    checker = ActiveChecker(registry, lambda: snap, probe, interval=60, timeout=1)
    await checker.check_once()
    assert registry.is_healthy(checked)
    await checker.check_once()
    assert not registry.is_healthy(checked)
    assert probed == ["api", "api"]  # backends without a health path are not probed
    answers["ok"] = True
    await checker.check_once()
    assert not registry.is_healthy(checked)
    await checker.check_once()
    assert registry.is_healthy(checked)


async def test_probe_timeout_counts_as_failure():
    import asyncio

    registry = HealthRegistry(fall=1)
    b = backend("api", health="/h")
    snap = snapshot(tenant("acme", backends=[b], domains=("a.test",)))

    async def slow(_b, _limit):
        await asyncio.sleep(5)
        return True

    await ActiveChecker(registry, lambda: snap, slow, interval=60, timeout=0.05).check_once()
    assert not registry.is_healthy(b)


def test_report_and_prune():
    registry = HealthRegistry(failures=1)
    b = backend("api")
    snap = snapshot(tenant("acme", backends=[b], domains=("a.test",)))
    registry.record_failure(b, "boom")
    report = registry.report(snap)
    row = report["acme"]["api"]
    assert row["healthy"] is False and row["errors"] == 1 and row["last_error"] == "boom"
    registry.prune(snapshot(tenant("acme", backends=[], domains=("a.test",))))
    assert registry.states == {}


@pytest.mark.parametrize("enabled", [True, False])
def test_report_disabled_backend_is_not_healthy(enabled):
    b = backend("api", enabled=enabled)
    report = HealthRegistry().report(snapshot(tenant("acme", backends=[b], domains=("a",))))
    assert report["acme"]["api"]["healthy"] is enabled


class Failed:
    """What a probe returns for a failed check: falsy, with a reason."""

    def __init__(self, reason):
        self.reason = reason

    def __bool__(self):
        return False


def test_report_shows_pending_until_the_first_check_then_the_reason_and_since():
    registry = HealthRegistry(rise=2, fall=2)
    checked = backend("api", health="/health")
    plain = backend("other")
    snap = snapshot(tenant("acme", backends=[checked, plain], domains=("a.test",)))
    report = registry.report(snap)["acme"]
    assert report["api"]["state"] == "pending" and report["api"]["healthy"]
    assert report["other"]["state"] == "healthy"
    pending_since = report["api"]["since"]
    registry.record_check(checked, Failed("answered HTTP 503"))
    registry.record_check(checked, Failed("answered HTTP 503"))
    report = registry.report(snap)["acme"]["api"]
    assert report["state"] == "unhealthy"
    assert report["reason"] == "failed 2 active checks in a row: answered HTTP 503"
    assert report["check_reason"] == "answered HTTP 503" and report["last_check"]
    assert report["since"] >= pending_since
    registry.record_check(checked, True)
    registry.record_check(checked, True)
    report = registry.report(snap)["acme"]["api"]
    assert (report["state"], report["reason"], report["check_reason"]) == ("healthy", "", "")


def test_a_passive_ejection_says_why_in_the_report():
    clock = Clock()
    registry = HealthRegistry(failures=2, cooldown=10, clock=clock)
    b = backend("api")
    snap = snapshot(tenant("acme", backends=[b], domains=("a.test",)))
    for _ in range(2):
        registry.record_failure(b, "ConnectFailed: refused")
    report = registry.report(snap)["acme"]["api"]
    assert report["state"] == "unhealthy"
    assert report["reason"] == ("2 failed requests in a row, out for 10 s more: "
                                "ConnectFailed: refused")
