"""What workers report lands in the database and adds up across workers; bounded samples."""

from __future__ import annotations

import pytest

from chistone_site import actions
from luascripts.models import GuardCount, ShadowRoute, ShadowSample
from routing import observations
from routing.shadow import ShadowCounts
from tests.chistone_site.actions.conftest import ACTOR, V1, V2, shop  # noqa: F401

pytestmark = pytest.mark.django_db


def sample(n: int) -> dict:
    return {"request_id": f"r{n}", "route": "/v2/*", "method": "GET", "path": f"/v2/{n}",
            "active": {"kind": "proxy", "backend": "a"}, "shadow": {"kind": "proxy",
                                                                     "backend": "b"}}


def test_two_workers_add_up(shop):  # noqa: F811
    actions.do_publish_script(actor=ACTOR, tenant=shop, source=V1, activate=True)
    actions.do_publish_script(actor=ACTOR, tenant=shop, source=V2)
    shadow = actions.do_start_shadow(actor=ACTOR, tenant=shop, version=2)
    rollout = actions.do_activate_version(
        actor=ACTOR, tenant=shop, version=2, percent=10,
        guard=actions.Guard(0.1, 10, 30)).rollout
    for worker in range(2):
        counts = ShadowCounts(routes={"/v1/*": [10, 0], "/v2/*": [4, 4]},
                              samples=[sample(worker * 100 + i) for i in range(10)], dropped=1)
        touched = observations.write({shadow.pk: counts, 999_999: ShadowCounts()},
                                     {(rollout.pk, 1): [90, 1], (rollout.pk, 2): [10, 3],
                                      (123_456, 2): [5, 5]}, now=1000 + worker)
        assert touched == {rollout.pk}
    routes = dict(ShadowRoute.objects.filter(shadow=shadow).values_list("route", "mismatched"))
    assert routes == {"/v1/*": 0, "/v2/*": 8}
    assert ShadowRoute.objects.get(shadow=shadow, route="/v1/*").compared == 20
    assert ShadowSample.objects.filter(shadow=shadow).count() == 20
    shadow.refresh_from_db()
    assert shadow.dropped == 2
    assert GuardCount.objects.filter(rollout=rollout).count() == 4
    figures = actions.guard_figures(rollout, now=1001)
    assert figures["new"]["requests"] == 20 and figures["new"]["errors"] == 6


def test_samples_stop_at_the_bound(shop):  # noqa: F811
    actions.do_publish_script(actor=ACTOR, tenant=shop, source=V1, activate=True)
    actions.do_publish_script(actor=ACTOR, tenant=shop, source=V2)
    shadow = actions.do_start_shadow(actor=ACTOR, tenant=shop, version=2)
    for batch in range(7):
        counts = ShadowCounts(routes={"/v2/*": [10, 10]},
                              samples=[sample(batch * 10 + i) for i in range(10)])
        observations.write({shadow.pk: counts}, {})
    assert ShadowSample.objects.filter(shadow=shadow).count() == observations.MAX_SAMPLES
    first = ShadowSample.objects.filter(shadow=shadow).order_by("id").first()
    assert first.request_id == "r0"  # the first mismatches are the ones kept
