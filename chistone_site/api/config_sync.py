"""The declarative tenant document: dump it, plan it, apply it (decK's dump/diff/sync).

    {"tenant": {slug, name, domains, path_prefix, active},
     "backends": [{name, url, weight, enabled, health_check_path, connect_timeout_ms,
                   read_timeout_ms}],
     "script": {source, message, tests} | null,
     "config_version": N}                       (informational; send If-Match to guard)

Only what a document states is managed: a tenant field or backend field left out keeps its
value; a backend left out is kept unless `prune`; a missing `script` key leaves the script
alone, `"script": null` deactivates it only with `prune`. Values are compared after the same
normalisation the services apply, so applying a document twice changes nothing the second
time (no version bump, no audit row).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from chistone_site import actions, simulation
from chistone_site.actions.scripts import failed
from chistone_site.api.exceptions import ScopeRequired
from luascripts import services as script_services
from luascripts.engine import ValidationResult, validate
from luascripts.models import ScriptVersion
from routing.snapshot import script_limits
from tenants import services as tenant_services
from tenants import validators
from tenants.audit import Actor
from tenants.errors import InvalidInput, PreconditionFailed, Unprocessable
from tenants.models import LIMIT_FIELDS, Backend, Tenant

TENANT_FIELDS = ("name", "domains", "path_prefix", "active", "max_request_body_bytes",
                 "max_response_body_bytes")
BACKEND_FIELDS = tenant_services.BACKEND_FIELDS


@dataclass
class Plan:
    created: list[dict[str, Any]] = field(default_factory=list)
    updated: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[dict[str, Any]] = field(default_factory=list)
    test_results: list[dict[str, Any]] = field(default_factory=list)
    # What apply() does, in order.
    tenant_changes: dict[str, Any] = field(default_factory=dict)
    backend_creates: list[dict[str, Any]] = field(default_factory=list)
    backend_updates: list[tuple[Backend, dict[str, Any]]] = field(default_factory=list)
    backend_deletes: list[Backend] = field(default_factory=list)
    script_source: str | None = None  # publish (idempotent) and activate
    script_result: ValidationResult | None = None  # its validation, made once when planned
    script_message: str = ""
    script_tests: list[dict[str, Any]] = field(default_factory=list)
    deactivate: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)

    @property
    def activates(self) -> bool:
        return self.script_source is not None or self.deactivate


def dump_config(*, tenant: Tenant) -> dict[str, Any]:
    version = tenant.active_version
    script = None
    if version is not None:
        script = {"source": version.source, "message": version.message,
                  "tests": version.tests, "version": version.number, "sha256": version.sha256}
    return {
        "tenant": {"slug": tenant.slug, "name": tenant.name, "domains": list(tenant.domains),
                   "path_prefix": tenant.path_prefix, "active": tenant.active,
                   **{name: getattr(tenant, name) for name in LIMIT_FIELDS}},
        "backends": [
            {name: getattr(b, name) for name in BACKEND_FIELDS}
            for b in Backend.objects.filter(tenant=tenant).order_by("name")
        ],
        "script": script,
        "config_version": tenant.config_version,
    }


def _normalised(kind: str, name: str, value: Any) -> Any:
    """The value a service would store, so equal meanings compare equal; raw if invalid."""
    try:
        if name == "domains":
            return validators.normalise_domains(value)
        if name == "path_prefix":
            return validators.normalise_path_prefix(value)
        if name == "url":
            return validators.normalise_backend_url(value)
        if name == "name" and kind == "tenant" and isinstance(value, str):
            return value.strip()[:200]
    except ValidationError:
        return value
    return value


def _diff(kind: str, current: Mapping[str, Any], wanted: Mapping[str, Any],
          names: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for name in names:
        if name in wanted:
            value = _normalised(kind, name, wanted[name])
            if current.get(name) != value:
                out[name] = [current.get(name), value]
    return out


def plan_config(*, tenant: Tenant, document: Mapping[str, Any], prune: bool) -> Plan:
    """What applying `document` would change; validates the script and runs its tests."""
    plan = Plan()
    doc_tenant = document.get("tenant") or {}
    if "slug" in doc_tenant and doc_tenant["slug"] != tenant.slug:
        raise InvalidInput(
            f"The document is for tenant {doc_tenant['slug']!r}, not {tenant.slug!r}.",
            detail={"tenant": {"slug": ["Does not match the tenant in the URL."]}})
    current_tenant = {name: getattr(tenant, name) for name in TENANT_FIELDS}
    changes = _diff("tenant", current_tenant, doc_tenant, TENANT_FIELDS)
    if changes:
        plan.tenant_changes = {name: new for name, (_old, new) in changes.items()}
        plan.updated.append({"kind": "tenant", "name": tenant.slug, "fields": changes})

    existing = {b.name: b for b in Backend.objects.filter(tenant=tenant).order_by("name")}
    planned: dict[str, dict[str, Any]] = {
        name: {f: getattr(b, f) for f in BACKEND_FIELDS} for name, b in existing.items()}
    if "backends" in document:
        wanted_names = set()
        for doc_backend in document["backends"]:
            name = doc_backend["name"]
            wanted_names.add(name)
            values = {k: v for k, v in doc_backend.items() if k in BACKEND_FIELDS}
            if name not in existing:
                plan.backend_creates.append(values)
                plan.created.append({"kind": "backend", "name": name})
                planned[name] = {"weight": 1, "enabled": True, **values,
                                 "url": _normalised("backend", "url", values["url"])}
                continue
            current = planned[name]
            changes = _diff("backend", current, values, BACKEND_FIELDS)
            if changes:
                plan.backend_updates.append(
                    (existing[name], {k: new for k, (_old, new) in changes.items()}))
                plan.updated.append({"kind": "backend", "name": name, "fields": changes})
                current.update({k: new for k, (_old, new) in changes.items()})
        if prune:
            for name in sorted(set(existing) - wanted_names):
                plan.backend_deletes.append(existing[name])
                plan.deleted.append({"kind": "backend", "name": name})
                del planned[name]

    if "script" in document:
        doc_script = document["script"]
        if doc_script is None:
            if prune and tenant.active_version_id is not None:
                plan.deactivate = True
                plan.deleted.append({"kind": "script", "name": "active",
                                     "fields": {"version": [tenant.active_version.number, None]}})
        else:
            _plan_script(plan, tenant, doc_script, planned, doc_tenant)
    return plan


def _plan_script(plan: Plan, tenant: Tenant, doc_script: Mapping[str, Any],
                 planned: dict[str, dict[str, Any]], doc_tenant: Mapping[str, Any]) -> None:
    source = script_services.check_source(doc_script["source"])
    digest = script_services.source_sha256(source)
    tests = list(doc_script.get("tests") or [])
    active = tenant.active_version
    if active is not None and active.sha256 == digest:
        return
    limits = {name: value for name in LIMIT_FIELDS
              if (value := doc_tenant.get(name, getattr(tenant, name))) is not None}
    # The backends and the limits the gateway will load it with, once the document applies.
    result = validate(source, backend_names=sorted(planned), limits=script_limits(limits))
    if not result.valid:
        first = result.errors[0] if result.errors else None
        raise InvalidInput(
            f"The document's script is invalid: {first.message if first else 'unknown error'}",
            detail={"errors": [d.to_dict() for d in result.errors]})
    if tests:
        spec = simulation.TenantSpec(
            slug=tenant.slug, id=tenant.pk,
            path_prefix=_normalised("tenant", "path_prefix",
                                    doc_tenant.get("path_prefix", tenant.path_prefix)),
            domains=tuple(_normalised("tenant", "domains",
                                      doc_tenant.get("domains", tenant.domains))),
            active=doc_tenant.get("active", tenant.active),
            limits=limits,
            backends=tuple({"name": name, **values} for name, values in sorted(planned.items())),
        )
        plan.test_results = simulation.run_script_tests(tenant=spec, source=source, tests=tests)
    existing = ScriptVersion.objects.filter(tenant=tenant, sha256=digest).first()
    if existing is None:
        plan.created.append({"kind": "script_version", "name": f"sha256:{digest[:12]}"})
    plan.updated.append({"kind": "script", "name": "active", "fields": {"version": [
        active.number if active else None, existing.number if existing else "new"]}})
    plan.script_source = source
    plan.script_result = result
    plan.script_message = doc_script.get("message") or "applied from a config document"
    plan.script_tests = tests


def _etag_number(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    value = if_match.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if not value.isdigit():
        raise PreconditionFailed(f"If-Match {if_match!r} is not a config version of this API.")
    return int(value)


def apply_config_document(
    *,
    actor: Actor,
    tenant: Tenant,
    document: Mapping[str, Any],
    dry_run: bool = False,
    prune: bool = False,
    if_match: str | None = None,
    may_activate: bool = True,
) -> tuple[Plan, int]:
    """Plan `document` against the tenant and, unless `dry_run`, apply it in one transaction.

    Returns (plan, config_version after). PreconditionFailed when `if_match` is not the
    tenant's current config version; InvalidInput for an invalid script; Unprocessable when
    the script's tests fail (nothing is applied); ScopeRequired when the plan would change
    the active script and the caller may not activate.
    """
    expected = _etag_number(if_match)
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        if expected is not None and expected != locked.config_version:
            raise PreconditionFailed(
                f"Tenant {locked.slug!r} is at config version {locked.config_version}, not "
                f"{expected}: it changed since you read it. Dump it again and retry.")
        plan = plan_config(tenant=locked, document=document, prune=prune)
        bad = failed(plan.test_results)
        if bad:
            raise Unprocessable(
                f"{len(bad)} script test(s) failed ({', '.join(bad)}); nothing was applied.",
                detail={"test_results": plan.test_results})
        if plan.activates and not may_activate and not dry_run:
            raise ScopeRequired("This document changes the active script: the key needs the "
                                "activate scope.")
        if dry_run or not plan.changed:
            return plan, locked.config_version
        _apply(plan, actor=actor, tenant=locked)
        locked.refresh_from_db()
        return plan, locked.config_version


def _apply(plan: Plan, *, actor: Actor, tenant: Tenant) -> None:
    if plan.tenant_changes:
        tenant_services.update_tenant(actor=actor, tenant=tenant, **plan.tenant_changes)
        tenant.refresh_from_db()
    for values in plan.backend_creates:
        tenant_services.create_backend(actor=actor, tenant=tenant, **values)
    for backend, changes in plan.backend_updates:
        tenant_services.update_backend(actor=actor, backend=backend, **changes)
    if plan.script_source is not None:
        tenant.refresh_from_db()
        # The action layer, as everywhere: validated once (when planned), stored, activated
        # once its stored tests pass against the configuration just applied.
        actions.do_publish_script(
            actor=actor, tenant=tenant, source=plan.script_source,
            message=plan.script_message, tests=plan.script_tests, activate=True,
            result=plan.script_result)
    if plan.deactivate:
        actions.do_deactivate_script(actor=actor, tenant=tenant)
    for backend in plan.backend_deletes:
        tenant_services.delete_backend(actor=actor, backend=backend)
