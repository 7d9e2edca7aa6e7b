"""Script services of the API: publish with tests, validate, activate with tests, diff.

They compose `luascripts.services` (storage, numbering, audit) with the simulation service
(script tests). Keyword-only, like every write service.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chistone_site import simulation
from luascripts import services as script_services
from luascripts.models import ScriptVersion
from tenants.audit import Actor
from tenants.errors import InvalidInput, NotFound, Unprocessable
from tenants.models import Tenant


@dataclass
class PublishResult:
    version: ScriptVersion
    created: bool
    test_results: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Validation:
    valid: bool
    errors: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    routes: list[dict[str, Any]]
    is_selector: bool
    tests: list[dict[str, Any]]


def failed(results: Sequence[dict[str, Any]]) -> list[str]:
    return [r["name"] for r in results if not r["passed"]]


def validate_script(*, tenant: Tenant, source: Any,
                    tests: Sequence[dict[str, Any]] = ()) -> Validation:
    """Compile and register `source` against the tenant's backends, run its tests; store
    nothing."""
    source = script_services.check_source(source)
    result = script_services.validate_for_tenant(tenant=tenant, source=source)
    results = (simulation.run_script_tests(tenant=tenant, source=source, tests=tests)
               if result.valid and tests else [])
    return Validation(
        valid=result.valid,
        errors=[d.to_dict() for d in result.errors],
        warnings=[d.to_dict() for d in result.warnings],
        routes=[r.to_dict() for r in result.routes],
        is_selector=result.is_selector,
        tests=results,
    )


def _refuse_invalid(tenant: Tenant, source: str) -> None:
    result = script_services.validate_for_tenant(tenant=tenant, source=source)
    if not result.valid:
        first = result.errors[0] if result.errors else None
        where = f" (line {first.line})" if first is not None and first.line else ""
        raise InvalidInput(
            f"The script is invalid{where}: {first.message if first else 'unknown error'}",
            detail={"errors": [d.to_dict() for d in result.errors]},
        )


def publish_script(
    *,
    actor: Actor,
    tenant: Tenant,
    source: Any,
    message: str = "",
    tests: Sequence[dict[str, Any]] = (),
    activate: bool = False,
) -> PublishResult:
    """Store a valid source as a version (idempotent by sha256), run its tests, activate.

    An invalid source stores nothing (InvalidInput with the diagnostics). Failing tests with
    `activate` leave the version stored but inactive (Unprocessable, with the results).
    """
    source = script_services.check_source(source)
    _refuse_invalid(tenant, source)
    results = simulation.run_script_tests(tenant=tenant, source=source, tests=tests) \
        if tests else []
    version, created = script_services.publish_version(
        actor=actor, tenant=tenant, source=source, message=message, tests=list(tests))
    if activate:
        bad = failed(results)
        if bad:
            raise Unprocessable(
                f"{len(bad)} script test(s) failed ({', '.join(bad)}); version "
                f"{version.number} is stored but not active.",
                detail={"version": version.number, "test_results": results},
            )
        script_services.activate_version(actor=actor, tenant=tenant, version=version)
    version.tenant.refresh_from_db(fields=["active_version", "config_version"])
    return PublishResult(version=version, created=created, test_results=results)


def activate_script(*, actor: Actor, tenant: Tenant, number: int,
                    run_tests: bool = True) -> tuple[ScriptVersion, list[dict[str, Any]]]:
    """Activate a stored version (rolling back is activating an older one) after its stored
    tests pass against the tenant's current backends."""
    version = script_services.get_version(tenant=tenant, number=number)
    results: list[dict[str, Any]] = []
    if run_tests and version.tests and version.valid:
        results = simulation.run_script_tests(tenant=tenant, source=version.source,
                                              tests=version.tests)
        bad = failed(results)
        if bad:
            raise Unprocessable(
                f"{len(bad)} stored test(s) of version {number} failed ({', '.join(bad)}); "
                "it was not activated.",
                detail={"version": number, "test_results": results},
            )
    script_services.activate_version(actor=actor, tenant=tenant, version=version)
    version.tenant.refresh_from_db(fields=["active_version", "config_version"])
    return version, results


def diff_versions(*, tenant: Tenant, number: int, against: int | None = None) -> dict[str, Any]:
    """A unified diff from `against` (default: the active version; 0: empty) to `number`."""
    version = script_services.get_version(tenant=tenant, number=number)
    if against is None:
        active = tenant.active_version
        against = active.number if active is not None else 0
    if against == 0:
        old_source, old_label = "", "empty"
    else:
        try:
            old = script_services.get_version(tenant=tenant, number=against)
        except NotFound:
            raise NotFound(f"Tenant {tenant.slug!r} has no script version {against} to "
                           "compare with.") from None
        old_source, old_label = old.source, f"v{old.number}"
    lines = difflib.unified_diff(
        old_source.splitlines(keepends=True), version.source.splitlines(keepends=True),
        fromfile=f"{tenant.slug}/{old_label}", tofile=f"{tenant.slug}/v{version.number}")
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    return {"version": version.number, "against": against or None, "diff": text}
