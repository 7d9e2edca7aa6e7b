"""Rollouts and their guard, through the action layer: start, change, complete (tests run
again), roll back; the guard reads every worker's counts and rolls back by itself."""

from __future__ import annotations

import time

import pytest

from chistone_site import actions
from luascripts.models import GuardCount, Rollout
from routing.snapshot import build_snapshot
from tenants.errors import Conflict, InvalidInput, NotFound, Unprocessable
from tenants.models import AuditEvent, ConfigState

from .conftest import ACTOR, FAILING, TESTS, V1, V2

pytestmark = pytest.mark.django_db
GUARD = actions.Guard(max_error_rate=0.1, min_requests=20, window_s=30)


@pytest.fixture
def versions(shop):
    v1 = actions.do_publish_script(actor=ACTOR, tenant=shop, source=V1, tests=TESTS,
                                   activate=True).version
    v2 = actions.do_publish_script(actor=ACTOR, tenant=shop, source=V2, tests=TESTS).version
    return v1, v2


def test_a_rollout_starts_with_tests_and_is_in_the_snapshot(shop, versions):
    v1, v2 = versions
    generation = ConfigState.objects.get().generation
    activation = actions.do_activate_version(actor=ACTOR, tenant=shop, version=2, percent=10,
                                             key_header="X-User", guard=GUARD)
    rollout = activation.rollout
    assert (rollout.percent, rollout.key_header, rollout.previous_id) == (10, "x-user", v1.pk)
    assert [r["passed"] for r in activation.test_results] == [True]
    shop.refresh_from_db()
    assert shop.active_version_id == v1.pk  # the rest of the traffic keeps v1
    assert ConfigState.objects.get().generation > generation
    entry = build_snapshot().tenants["shop"]
    assert entry.version_number == 1 and entry.rollout.version_number == 2
    assert entry.rollout.percent == 10 and entry.rollout.key_header == "x-user"
    assert entry.guard == rollout.pk
    assert entry.rollout.config_header[1].endswith(b"; version=2")
    assert entry.config_header[1].endswith(b"; version=1")
    event = AuditEvent.objects.get(action="script.rollout_start")
    assert event.detail["guard"] == GUARD.to_dict() and event.detail["percent"] == 10


def test_one_rollout_at_a_time_and_shapes_are_checked(shop, versions):
    actions.do_activate_version(actor=ACTOR, tenant=shop, version=2, percent=10)
    with pytest.raises(Conflict, match="change its percentage"):
        actions.do_activate_version(actor=ACTOR, tenant=shop, version=2, percent=20)
    for bad in ({"percent": 0}, {"percent": 101}, {"percent": 100, "key_header": "x-user"},
                {"percent": 10, "key_header": "bad header"}):
        with pytest.raises(InvalidInput):
            actions.do_activate_version(actor=ACTOR, tenant=shop, version=1, **bad)
    with pytest.raises(InvalidInput):
        actions.Guard.parse({"max_error_rate": 2, "min_requests": 1, "window_s": 1})
    with pytest.raises(InvalidInput, match="missing: window_s"):
        actions.Guard.parse({"max_error_rate": 0.1, "min_requests": 1})


def test_raising_to_100_completes_after_the_tests_pass_again(shop, versions):
    _v1, v2 = versions
    actions.do_activate_version(actor=ACTOR, tenant=shop, version=2, percent=10)
    rollout = actions.do_set_rollout_percent(actor=ACTOR, tenant=shop, percent=50)
    assert rollout.percent == 50
    rollout = actions.do_set_rollout_percent(actor=ACTOR, tenant=shop, percent=100)
    assert rollout.state == Rollout.COMPLETED
    shop.refresh_from_db()
    assert shop.active_version_id == v2.pk
    assert build_snapshot().tenants["shop"].rollout is None
    assert list(AuditEvent.objects.filter(action__startswith="script.rollout")
                .order_by("id").values_list("action", flat=True)) == [
        "script.rollout_start", "script.rollout_percent", "script.rollout_complete"]
    with pytest.raises(NotFound):
        actions.do_set_rollout_percent(actor=ACTOR, tenant=shop, percent=20)


def test_completing_is_an_activation_refused_when_tests_fail(shop, versions):
    v3 = actions.do_publish_script(actor=ACTOR, tenant=shop, source=V2 + "-- v3\n",
                                   tests=FAILING).version
    with pytest.raises(Unprocessable):  # starting the rollout runs them already
        actions.do_activate_version(actor=ACTOR, tenant=shop, version=v3, percent=10)
    assert not Rollout.objects.exists()


def test_rolling_back_ends_the_rollout_and_keeps_the_previous_version(shop, versions):
    v1, _v2 = versions
    actions.do_activate_version(actor=ACTOR, tenant=shop, version=2, percent=10)
    activation = actions.do_rollback(actor=ACTOR, tenant=shop)
    assert activation.rollout.state == Rollout.ROLLED_BACK and activation.version.pk == v1.pk
    shop.refresh_from_db()
    assert shop.active_version_id == v1.pk
    assert build_snapshot().tenants["shop"].rollout is None


def test_activating_another_version_ends_the_rollout(shop, versions):
    actions.do_activate_version(actor=ACTOR, tenant=shop, version=2, percent=10)
    v3 = actions.do_publish_script(actor=ACTOR, tenant=shop, source=V2 + "-- v3\n").version
    actions.do_activate_version(actor=ACTOR, tenant=shop, version=v3)
    rollout = Rollout.objects.get()
    assert rollout.state == Rollout.ROLLED_BACK and "v3 was activated" in rollout.outcome["reason"]


def count(rollout, arm, requests, errors, at):
    GuardCount.objects.create(rollout=rollout, arm=arm, second=int(at), requests=requests,
                              errors=errors)


def test_the_guard_rolls_back_when_the_new_version_fails_more(shop, versions):
    rollout = actions.do_activate_version(actor=ACTOR, tenant=shop, version=2, percent=30,
                                          guard=GUARD).rollout
    now = time.time()
    # Two workers' reports for each side: v2 fails 9 of 30, v1 1 of 70.
    count(rollout, GuardCount.NEW, 15, 5, now - 2)
    count(rollout, GuardCount.NEW, 15, 4, now - 1)
    count(rollout, GuardCount.OLD, 35, 1, now - 2)
    count(rollout, GuardCount.OLD, 35, 0, now - 1)
    count(rollout, GuardCount.NEW, 500, 0, now - 300)  # outside the window: not counted
    ended = actions.check_guards(now=now)
    assert [r.pk for r in ended] == [rollout.pk]
    rollout.refresh_from_db()
    assert rollout.state == Rollout.AUTO_ROLLED_BACK and rollout.ended_by == "guard"
    event = AuditEvent.objects.get(action="auto_rollback")
    assert event.detail["new"] == {"version": 2, "requests": 30, "errors": 9,
                                   "error_rate": 0.3}
    assert event.detail["old"]["requests"] == 70 and event.detail["tripped"] is True
    assert event.actor == "guard"
    assert build_snapshot().tenants["shop"].rollout is None
    report = actions.rollout_report(rollout)
    assert report["state"] == "auto_rolled_back" and report["figures"]["new"]["errors"] == 9
    assert actions.check_guards(now=now) == []  # nothing left to roll back


def test_the_guard_waits_for_min_requests_and_spares_a_healthy_version(shop, versions):
    rollout = actions.do_activate_version(actor=ACTOR, tenant=shop, version=2, percent=30,
                                          guard=GUARD).rollout
    now = time.time()
    count(rollout, GuardCount.NEW, 10, 10, now - 1)  # all errors, but under min_requests
    assert actions.check_guards(now=now) == []
    count(rollout, GuardCount.NEW, 100, 3, now)  # now 14 % of 110 ...
    count(rollout, GuardCount.OLD, 200, 10, now)  # ... against 5 %: within 10 points
    assert actions.check_guards(now=now) == []
    rollout.refresh_from_db()
    assert rollout.state == Rollout.RUNNING


def test_a_guarded_full_activation_goes_back_by_itself(shop, versions):
    v1, v2 = versions
    rollout = actions.do_activate_version(actor=ACTOR, tenant=shop, version=2,
                                          guard=GUARD).rollout
    shop.refresh_from_db()
    assert shop.active_version_id == v2.pk and rollout.percent == 100
    entry = build_snapshot().tenants["shop"]
    assert entry.rollout is None and entry.guard == rollout.pk and entry.version_number == 2
    count(rollout, GuardCount.NEW, 40, 8, time.time())
    actions.check_guards()
    shop.refresh_from_db()
    assert shop.active_version_id == v1.pk
    assert AuditEvent.objects.filter(action="auto_rollback").count() == 1


def test_a_guarded_full_activation_completes_after_a_clean_window(shop, versions):
    rollout = actions.do_activate_version(actor=ACTOR, tenant=shop, version=2,
                                          guard=GUARD).rollout
    later = rollout.started_at.timestamp() + GUARD.window_s + 1
    count(rollout, GuardCount.NEW, 40, 0, later - 1)
    assert [r.pk for r in actions.check_guards(now=later)] == [rollout.pk]
    rollout.refresh_from_db()
    assert rollout.state == Rollout.COMPLETED
    assert build_snapshot().tenants["shop"].guard == 0


def test_a_guard_needs_a_previous_version(shop):
    actions.do_publish_script(actor=ACTOR, tenant=shop, source=V1)
    with pytest.raises(Conflict, match="no active version"):
        actions.do_activate_version(actor=ACTOR, tenant=shop, version=1, guard=GUARD)


def test_a_version_the_watchdog_disables_ends_its_rollout_and_shadow(shop, versions):
    from luascripts.models import Shadow
    from luascripts.services import mark_version_faulty

    v3 = actions.do_publish_script(actor=ACTOR, tenant=shop, source=V2 + "-- 3\n").version
    actions.do_activate_version(actor=ACTOR, tenant=shop, version=2, percent=10)
    shadow = actions.do_start_shadow(actor=ACTOR, tenant=shop, version=v3)
    mark_version_faulty(actor=ACTOR, version_id=shop.versions.get(number=2).pk, reason="busy")
    mark_version_faulty(actor=ACTOR, version_id=v3.pk, reason="busy")
    rollout = Rollout.objects.get()
    assert rollout.state == Rollout.ROLLED_BACK and "blocked a gateway worker" in \
        rollout.outcome["reason"]
    shadow.refresh_from_db()
    assert shadow.state == Shadow.STOPPED
    entry = build_snapshot().tenants["shop"]
    assert entry.rollout is None and entry.shadow is None and entry.version_number == 1
