"""Shadows through the action layer: start (one per tenant), stop, report."""

from __future__ import annotations

import pytest

from chistone_site import actions
from luascripts.models import Shadow, ShadowRoute, ShadowSample
from routing.snapshot import build_snapshot
from tenants.errors import Conflict, InvalidInput, NotFound
from tenants.models import AuditEvent

from .conftest import ACTOR, V1, V2

pytestmark = pytest.mark.django_db


def test_start_replace_stop(shop):
    actions.do_publish_script(actor=ACTOR, tenant=shop, source=V1, activate=True)
    actions.do_publish_script(actor=ACTOR, tenant=shop, source=V2)
    v3 = actions.do_publish_script(actor=ACTOR, tenant=shop, source=V2 + "-- 3\n").version
    first = actions.do_start_shadow(actor=ACTOR, tenant=shop, version=2, sample_rate=0.5)
    entry = build_snapshot().tenants["shop"].shadow
    assert (entry.id, entry.version_number, entry.rate) == (first.pk, 2, 0.5)
    second = actions.do_start_shadow(actor=ACTOR, tenant=shop, version=v3, sample_rate=1)
    first.refresh_from_db()
    assert first.state == Shadow.STOPPED and second.state == Shadow.RUNNING
    stopped = actions.do_stop_shadow(actor=ACTOR, tenant=shop)
    assert stopped.pk == second.pk and build_snapshot().tenants["shop"].shadow is None
    with pytest.raises(NotFound):
        actions.do_stop_shadow(actor=ACTOR, tenant=shop)
    assert list(AuditEvent.objects.filter(action__startswith="script.shadow")
                .order_by("id").values_list("action", flat=True)) == [
        "script.shadow_start", "script.shadow_stop", "script.shadow_start",
        "script.shadow_stop"]


def test_refusals(shop):
    with pytest.raises(NotFound):
        actions.do_start_shadow(actor=ACTOR, tenant=shop, version=1)
    actions.do_publish_script(actor=ACTOR, tenant=shop, source=V1)
    with pytest.raises(Conflict, match="no active version"):
        actions.do_start_shadow(actor=ACTOR, tenant=shop, version=1)
    actions.do_activate_version(actor=ACTOR, tenant=shop, version=1)
    with pytest.raises(Conflict, match="is the active version"):
        actions.do_start_shadow(actor=ACTOR, tenant=shop, version=1)
    actions.do_publish_script(actor=ACTOR, tenant=shop, source=V2)
    for rate in (0, -1, 1.5, True):
        with pytest.raises(InvalidInput):
            actions.do_start_shadow(actor=ACTOR, tenant=shop, version=2, sample_rate=rate)


def test_activating_the_shadowed_version_stops_its_shadow(shop):
    actions.do_publish_script(actor=ACTOR, tenant=shop, source=V1, activate=True)
    actions.do_publish_script(actor=ACTOR, tenant=shop, source=V2)
    shadow = actions.do_start_shadow(actor=ACTOR, tenant=shop, version=2)
    actions.do_activate_version(actor=ACTOR, tenant=shop, version=2)
    shadow.refresh_from_db()
    assert shadow.state == Shadow.STOPPED


def test_report(shop):
    actions.do_publish_script(actor=ACTOR, tenant=shop, source=V1, activate=True)
    actions.do_publish_script(actor=ACTOR, tenant=shop, source=V2)
    shadow = actions.do_start_shadow(actor=ACTOR, tenant=shop, version=2, sample_rate=0.25)
    ShadowRoute.objects.create(shadow=shadow, route="/v1/{rest:.*}", compared=7)
    ShadowRoute.objects.create(shadow=shadow, route="/v2/{rest:.*}", compared=5, mismatched=5)
    ShadowSample.objects.create(shadow=shadow, request_id="r1", route="/v2/{rest:.*}",
                                method="GET", path="/v2/x", active={"kind": "proxy"},
                                candidate={"kind": "respond"})
    report = actions.shadow_report(shadow)
    assert (report["compared"], report["mismatched"], report["version"]) == (12, 5, 2)
    assert report["routes"][0] == {"route": "/v2/{rest:.*}", "compared": 5, "mismatched": 5}
    assert report["samples"][0]["shadow"] == {"kind": "respond"}
