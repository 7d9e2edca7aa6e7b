"""The action layer for scripts: validation once per publish, the route-table diff, stored
tests on every activation, the override as its own audited permission."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from chistone_site import actions
from chistone_site.actions.scripts import Override
from luascripts import services as script_services
from tenants.errors import Forbidden, InvalidInput, Unprocessable
from tenants.models import AuditEvent

from .conftest import ACTOR, FAILING, TESTS, V1, V2

pytestmark = pytest.mark.django_db


def test_publish_validates_once(shop, monkeypatch):
    calls = []
    real = script_services.validate_for_tenant

    def counting(**kwargs):
        calls.append(kwargs["source"])
        return real(**kwargs)

    monkeypatch.setattr(script_services, "validate_for_tenant", counting)
    published = actions.do_publish_script(actor=ACTOR, tenant=shop, source=V1, tests=TESTS,
                                          activate=True)
    assert published.version.valid and published.activation is not None
    assert calls == [V1]


def test_an_invalid_source_stores_nothing_unless_a_draft_is_wanted(shop):
    broken = 'chi.get("/", function(req) return proxy("mian") end)\n'
    with pytest.raises(InvalidInput) as refused:
        actions.do_publish_script(actor=ACTOR, tenant=shop, source=broken)
    assert refused.value.detail["errors"][0]["line"] == 1
    assert not shop.versions.exists()
    draft = actions.do_publish_script(actor=ACTOR, tenant=shop, source=broken,
                                      allow_draft=True)
    assert draft.version.valid is False and draft.route_changes is None


def test_the_route_diff_compares_middleware_by_name_not_by_line(shop):
    actions.do_publish_script(actor=ACTOR, tenant=shop, source=V1, activate=True)
    published = actions.do_publish_script(actor=ACTOR, tenant=shop, source=V2)
    changes = published.route_changes.to_dict()
    # V2 moves every line down by two: the auth middleware is the same "auth", not a change.
    assert changes["added"] == [
        {"method": "*", "pattern": "/v2/*", "target": "backend:b", "middleware": ["auth"]},
        {"method": "GET", "pattern": "/new", "target": "", "middleware": ["auth"]}]
    assert changes["removed"] == [
        {"method": "GET", "pattern": "/v2/{rest:.*}", "target": "", "middleware": ["auth"]}]
    assert changes["changed"] == []
    assert published.version.routes[0]["labels"] == ["auth (line 3)"]


def test_a_changed_middleware_is_a_changed_route(shop):
    actions.do_publish_script(actor=ACTOR, tenant=shop, source=V1, activate=True)
    other = V1.replace("chi.use(auth)", "local function log(req, next) return next(req) end\n"
                                        "chi.use(log)")
    changes = actions.do_publish_script(actor=ACTOR, tenant=shop, source=other).route_changes
    assert [(c.new["pattern"], c.old_middleware, c.new_middleware) for c in changes.changed] == [
        ("/v1/{rest:.*}", "auth", "log"), ("/v2/{rest:.*}", "auth", "log")]


def test_activation_runs_the_stored_tests_and_refuses_with_their_results(shop):
    version = actions.do_publish_script(actor=ACTOR, tenant=shop, source=V1,
                                        tests=FAILING).version
    with pytest.raises(Unprocessable) as refused:
        actions.do_activate_version(actor=ACTOR, tenant=shop, version=version.number)
    results = refused.value.detail["test_results"]
    assert results[0]["name"] == "v1 goes to b" and results[0]["passed"] is False
    shop.refresh_from_db()
    assert shop.active_version is None
    assert not AuditEvent.objects.filter(action="script.activate").exists()


def test_publishing_with_activate_runs_the_tests_once(shop, monkeypatch):
    from chistone_site import simulation

    runs = []
    real = simulation.run_script_tests
    monkeypatch.setattr(simulation, "run_script_tests",
                        lambda **kw: runs.append(1) or real(**kw))
    actions.do_publish_script(actor=ACTOR, tenant=shop, source=V1, tests=TESTS, activate=True)
    assert len(runs) == 1


def test_an_override_needs_its_own_permission_and_is_audited(shop):
    version = actions.do_publish_script(actor=ACTOR, tenant=shop, source=V1,
                                        tests=FAILING).version
    user = get_user_model().objects.create_user("olga", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_tenant"))
    with pytest.raises(Forbidden):
        Override.for_user(get_user_model().objects.get(pk=user.pk), "hotfix")
    with pytest.raises(Forbidden):
        Override.for_scopes({"read", "write", "activate"}, "hotfix")
    user.user_permissions.add(Permission.objects.get(codename="override_script_tests"))
    override = Override.for_user(get_user_model().objects.get(pk=user.pk), "hotfix for INC-7")
    activation = actions.do_activate_version(actor=ACTOR, tenant=shop, version=version,
                                             override=override)
    assert activation.overridden == ["v1 goes to b"]
    shop.refresh_from_db()
    assert shop.active_version_id == version.pk
    event = AuditEvent.objects.get(action="script.override_tests")
    assert event.detail == {"version": 1, "failed": ["v1 goes to b"],
                            "reason": "hotfix for INC-7"}
    activated = AuditEvent.objects.get(action="script.activate")
    assert activated.detail["tests_failed"] == ["v1 goes to b"]


def test_rollback_goes_to_the_version_active_before(shop):
    v1 = actions.do_publish_script(actor=ACTOR, tenant=shop, source=V1, activate=True).version
    actions.do_publish_script(actor=ACTOR, tenant=shop, source=V2, activate=True)
    activation = actions.do_rollback(actor=ACTOR, tenant=shop)
    assert activation.version.pk == v1.pk and activation.rolled_back
    shop.refresh_from_db()
    assert shop.active_version_id == v1.pk
    assert AuditEvent.objects.filter(action="script.rollback").count() == 1
