"""Publish, validate, test, activate, roll back and deactivate a tenant's script.

    do_validate_script(*, tenant, source, tests=())                      stores nothing
    do_publish_script(*, actor, tenant, source, message, tests, activate, allow_draft,
                      result=None)                                       -> Published
    do_test_version(*, tenant, version)                                  -> test results
    do_activate_version(*, actor, tenant, version, percent=100, key_header="",
                        guard=None, override=None)                       -> Activation
    do_rollback(*, actor, tenant, version=None, override=None)           -> Activation
    do_deactivate_script(*, actor, tenant)

Stored tests run on every activation (the full one, the start of a rollout, its completion,
a rollback to an older version) against the tenant's current backends and limits, through
the simulation (chistone_site.simulation: the data plane's own loader and driver). When one
fails the activation is refused (Unprocessable, 422, with `test_results`) unless the caller
holds an Override: a separate permission, checked where it is built, and audited.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from chistone_site import simulation
from chistone_site.actions.guard import Guard
from chistone_site.actions.rollouts import (
    check_key_header,
    check_percent,
    finish_rollout,
    running_rollout,
    start_rollout,
)
from chistone_site.actions.shadows import stop_shadow_of
from luascripts import services as script_services
from luascripts.engine import ValidationResult
from luascripts.models import Rollout, ScriptVersion
from luascripts.route_table import RouteChanges, route_changes, stored_rows
from routing.snapshot import script_limits
from tenants.audit import Actor, record
from tenants.errors import Conflict, Forbidden, InvalidInput, NotFound, Unprocessable
from tenants.models import AuditEvent, Tenant

OVERRIDE_PERMISSION = "luascripts.override_script_tests"
OVERRIDE_SCOPE = "override"


@dataclass(frozen=True, slots=True)
class Override:
    """Permission to activate although stored tests fail, and why. Built only by
    `for_user` (the Django permission) or `for_scopes` (the API key scope)."""

    reason: str

    @classmethod
    def for_user(cls, user: Any, reason: str = "") -> Override:
        if not user.has_perm(OVERRIDE_PERMISSION):
            raise Forbidden("Activating a version whose tests fail needs the permission "
                            "'Can activate a version whose stored tests fail'.")
        return cls(reason.strip()[:500])

    @classmethod
    def for_scopes(cls, scopes: Any, reason: str = "") -> Override:
        if OVERRIDE_SCOPE not in scopes:
            raise Forbidden("Activating a version whose tests fail needs a key with the "
                            f"{OVERRIDE_SCOPE} scope.")
        return cls(reason.strip()[:500])


@dataclass
class Validation:
    valid: bool
    errors: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    routes: list[dict[str, Any]]
    is_selector: bool
    tests: list[dict[str, Any]]
    route_changes: dict[str, Any] | None = None  # against the active version


@dataclass
class Published:
    version: ScriptVersion
    created: bool
    test_results: list[dict[str, Any]] = field(default_factory=list)
    route_changes: RouteChanges | None = None  # against the version active before publish
    activation: Activation | None = None


@dataclass
class Activation:
    version: ScriptVersion
    test_results: list[dict[str, Any]] = field(default_factory=list)
    rollout: Rollout | None = None  # a rollout started or ended by this call
    overridden: list[str] = field(default_factory=list)  # failing tests activated anyway
    rolled_back: bool = False


def validate_for(tenant: Tenant, source: str) -> ValidationResult:
    """Validate with the tenant's backends and the limits the gateway loads it with
    (routing.snapshot.script_limits: settings and the tenant's own), as every path must."""
    return script_services.validate_for_tenant(
        tenant=tenant, source=source, limits=script_limits(tenant.script_limits()))


def failed(results: Sequence[dict[str, Any]]) -> list[str]:
    return [r["name"] for r in results if not r["passed"]]


def _active_routes(tenant: Tenant) -> list[dict[str, Any]]:
    active = tenant.active_version
    return list(active.routes) if active is not None else []


# -- validate and publish ----------------------------------------------------------------


def do_validate_script(*, tenant: Tenant, source: Any,
                       tests: Sequence[dict[str, Any]] = ()) -> Validation:
    """Compile and register `source` against the tenant's backends, run `tests`, compare
    its route table with the active version's; store nothing."""
    source = script_services.check_source(source)
    result = validate_for(tenant, source)
    results = (simulation.run_script_tests(tenant=tenant, source=source, tests=tests)
               if result.valid and tests else [])
    routes = stored_rows(result.routes, source)
    return Validation(
        valid=result.valid,
        errors=[d.to_dict() for d in result.errors],
        warnings=[d.to_dict() for d in result.warnings],
        routes=routes,
        is_selector=result.is_selector,
        tests=results,
        route_changes=route_changes(_active_routes(tenant), routes).to_dict()
        if result.valid else None,
    )


def refuse_invalid(result: ValidationResult) -> None:
    if not result.valid:
        first = result.errors[0] if result.errors else None
        where = f" (line {first.line})" if first is not None and first.line else ""
        raise InvalidInput(
            f"The script is invalid{where}: {first.message if first else 'unknown error'}",
            detail={"errors": [d.to_dict() for d in result.errors]},
        )


def do_publish_script(
    *,
    actor: Actor,
    tenant: Tenant,
    source: Any,
    message: str = "",
    tests: Sequence[dict[str, Any]] = (),
    activate: bool = False,
    allow_draft: bool = False,
    result: ValidationResult | None = None,
) -> Published:
    """Validate `source` once and store it as the tenant's next version (idempotent by
    sha256), with its tests run; activate it when asked (after those tests pass).

    An invalid source stores nothing (InvalidInput with the diagnostics), unless
    `allow_draft` (the admin's editor keeps the operator's work as a draft). Failing tests
    with `activate` leave the version stored but inactive (Unprocessable, with the results).
    `result` is the source's validation when the caller already made it (config sync plans
    the document first), so it is never validated twice.
    """
    source = script_services.check_source(source)
    if result is None:
        result = validate_for(tenant, source)
    if not allow_draft:
        refuse_invalid(result)
    tests = list(tests)
    results = (simulation.run_script_tests(tenant=tenant, source=source, tests=tests)
               if tests and result.valid else [])
    before = _active_routes(tenant)
    version, created = script_services.publish_version(
        actor=actor, tenant=tenant, source=source, message=message, tests=tests,
        result=result)
    published = Published(version=version, created=created, test_results=results,
                          route_changes=route_changes(before, version.routes)
                          if version.valid else None)
    if activate:
        # The version's stored tests: the ones just run, unless the same source was
        # published before with other tests (then those are its stored tests).
        stored = results if version.tests == tests else None
        published.activation = _activate(actor=actor, tenant=tenant, version=version,
                                         results=stored)
    version.tenant.refresh_from_db(fields=["active_version", "config_version"])
    return published


# -- tests and activation ------------------------------------------------------------------


def do_test_version(*, tenant: Tenant, version: int | ScriptVersion) -> list[dict[str, Any]]:
    """Run a stored version's tests against the tenant's current configuration."""
    version = _version(tenant, version)
    if not version.valid or not version.tests:
        return []
    return simulation.run_script_tests(tenant=tenant, source=version.source,
                                       tests=version.tests)


def _version(tenant: Tenant, version: int | ScriptVersion) -> ScriptVersion:
    if isinstance(version, ScriptVersion):
        if version.tenant_id != tenant.pk:
            raise NotFound(f"Tenant {tenant.slug!r} has no script version {version.number}.")
        return version
    return script_services.get_version(tenant=tenant, number=version)


def do_activate_version(
    *,
    actor: Actor,
    tenant: Tenant,
    version: int | ScriptVersion,
    percent: int = 100,
    key_header: str = "",
    guard: Guard | None = None,
    override: Override | None = None,
) -> Activation:
    """Activate a stored version once its stored tests pass: fully (percent 100), or for
    a share of the traffic (a rollout, sticky by `key_header` or the client's IP); with a
    `guard`, rolled back by itself when it fails more than the previous version.

    Activating the version a running rollout rolls out completes that rollout; activating
    another one ends it. Refused with the test results when a stored test fails, unless
    `override` (then audited as `script.override_tests`).
    """
    version = _version(tenant, version)
    return _activate(actor=actor, tenant=tenant, version=version, percent=percent,
                     key_header=key_header, guard=guard, override=override)


def _activate(*, actor: Actor, tenant: Tenant, version: ScriptVersion,
              results: list[dict[str, Any]] | None = None, percent: int = 100,
              key_header: str = "", guard: Guard | None = None,
              override: Override | None = None) -> Activation:
    percent = check_percent(percent)
    key_header = check_key_header(key_header)
    if percent == 100 and key_header:
        raise InvalidInput("key_header only applies to a rollout (percent below 100).")
    script_services.check_activatable(tenant=tenant, version=version)
    if results is None:
        results = do_test_version(tenant=tenant, version=version)
    bad = failed(results)
    if bad and override is None:
        raise Unprocessable(
            f"{len(bad)} stored test(s) of version {version.number} failed "
            f"({', '.join(bad)}); it was not activated.",
            detail={"version": version.number, "test_results": results})
    activation = Activation(version=version, test_results=results, overridden=bad)
    with transaction.atomic():
        locked = (Tenant.objects.select_for_update(of=("self",))
                  .select_related("active_version").get(pk=tenant.pk))
        if bad:
            assert override is not None
            record(actor=actor, action="script.override_tests", obj=version, tenant=locked,
                   detail={"version": version.number, "failed": bad,
                           "reason": override.reason})
        tested = {"tests": len(results), "tests_failed": bad} if results else {}
        if percent < 100 or guard is not None:
            current = running_rollout(locked, lock=True)
            if current is not None and current.version_id == version.pk and guard is None:
                raise Conflict(f"v{version.number} is already being rolled out to "
                               f"{current.percent}%: change its percentage instead.")
            activation.rollout = start_rollout(actor=actor, tenant=locked, version=version,
                                               percent=percent, key_header=key_header,
                                               guard=guard)
            if percent == 100:  # a guarded full activation: the version answers everything
                script_services.activate_version(actor=actor, tenant=locked, version=version,
                                                 detail={**tested,
                                                         "rollout": activation.rollout.pk})
        else:
            finish_rollout(actor=actor, tenant=locked, activated=version)
            script_services.activate_version(actor=actor, tenant=locked, version=version,
                                             detail=tested)
            stop_shadow_of(actor=actor, tenant=locked, version=version)
    tenant.refresh_from_db(fields=["active_version", "config_version"])
    version.tenant = tenant
    return activation


def do_rollback(*, actor: Actor, tenant: Tenant, version: int | ScriptVersion | None = None,
                override: Override | None = None) -> Activation:
    """Roll back: end the running rollout (the previous version keeps every request), or
    activate `version` (an older one; its tests run), or, with neither, the version that
    was active before the current one."""
    from chistone_site.actions.rollouts import do_end_rollout

    if version is None and running_rollout(tenant) is not None:
        rollout = do_end_rollout(actor=actor, tenant=tenant)
        kept = rollout.previous or rollout.version
        return Activation(version=kept, rollout=rollout, rolled_back=True)
    if version is None:
        version = _previous_version(tenant)
    activation = do_activate_version(actor=actor, tenant=tenant, version=version,
                                     override=override)
    activation.rolled_back = True
    return activation


def _previous_version(tenant: Tenant) -> ScriptVersion:
    active = tenant.active_version
    if active is None:
        raise Conflict(f"Tenant {tenant.slug!r} has no active version to roll back from.")
    events = AuditEvent.objects.filter(
        tenant=tenant, action__in=("script.activate", "script.rollback"),
    ).order_by("-created_at", "-id")
    for event in events:
        if (event.detail or {}).get("version") == active.number:
            previous = event.detail.get("previous")
            if previous:
                return script_services.get_version(tenant=tenant, number=previous)
            break
    raise Conflict(f"v{active.number} of {tenant.slug!r} replaced no other version: name "
                   "the version to roll back to.")


def version_diff(*, tenant: Tenant, number: int, against: int | None = None) -> dict[str, Any]:
    """A unified diff and the route-table changes from `against` (default: the active
    version; 0: an empty script) to version `number`."""
    version = script_services.get_version(tenant=tenant, number=number)
    if against is None:
        active = tenant.active_version
        against = active.number if active is not None else 0
    if against == 0:
        old_source, old_label, old_routes = "", "empty", []
    else:
        try:
            old = script_services.get_version(tenant=tenant, number=against)
        except NotFound:
            raise NotFound(f"Tenant {tenant.slug!r} has no script version {against} to "
                           "compare with.") from None
        old_source, old_label, old_routes = old.source, f"v{old.number}", old.routes
    lines = difflib.unified_diff(
        old_source.splitlines(keepends=True), version.source.splitlines(keepends=True),
        fromfile=f"{tenant.slug}/{old_label}", tofile=f"{tenant.slug}/v{version.number}")
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    return {"version": version.number, "against": against or None, "diff": text,
            "route_changes": route_changes(old_routes, version.routes).to_dict()}


def do_deactivate_script(*, actor: Actor, tenant: Tenant) -> Tenant:
    """Remove the active script (a running rollout ends with it): the tenant then proxies
    to its enabled backends."""
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        rollout = running_rollout(locked, lock=True)
        if rollout is not None:
            script_services.end_rollout(rollout, state=Rollout.ROLLED_BACK, by=actor.name,
                                        outcome={"reason": "the script was removed"})
            record(actor=actor, action="script.rollout_rollback", obj=rollout, tenant=locked,
                   detail={"version": rollout.version.number, "percent": rollout.percent})
        result = script_services.deactivate_script(actor=actor, tenant=locked)
    tenant.refresh_from_db(fields=["active_version", "config_version"])
    return result
