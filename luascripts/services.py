"""Write services for script versions: publish, activate (and so roll back).

Keyword-only, one transaction each, an audit row inside it, the configuration generation
bumped inside it; the data plane hears about the change after commit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max

from luascripts.engine import Limits, ValidationResult, validate
from luascripts.models import ScriptFault, ScriptVersion
from tenants.audit import Actor, record
from tenants.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from tenants.events import config_changed
from tenants.models import Backend, Tenant

MAX_MESSAGE_LENGTH = 500


def source_sha256(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def backend_names(tenant: Tenant) -> list[str]:
    return list(Backend.objects.filter(tenant=tenant).values_list("name", flat=True))


def check_source(source: Any, *, limits: Limits | None = None) -> str:
    """Refuse what cannot be a script before any Lua sees it."""
    limits = limits or Limits()
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"The script is not valid UTF-8 text (byte {exc.start}).",
                detail={"errors": [{"line": None, "column": None,
                                    "message": "Source is not valid UTF-8."}]},
            ) from None
    if not isinstance(source, str):
        raise InvalidInput("source must be a string of Lua code.")
    size = len(source.encode("utf-8"))
    if size > limits.max_source_bytes:
        raise PayloadTooLarge(
            f"The script is {size} bytes; the limit is {limits.max_source_bytes} bytes."
        )
    return source


def validate_for_tenant(*, tenant: Tenant, source: str) -> ValidationResult:
    return validate(source, backend_names=backend_names(tenant))


def publish_version(
    *,
    actor: Actor,
    tenant: Tenant,
    source: str,
    message: str = "",
    tests: Sequence[dict[str, Any]] = (),
) -> tuple[ScriptVersion, bool]:
    """Store `source` as the tenant's next version; returns (version, created).

    Publishing a source identical to an existing version returns that version unchanged, so a
    CI retry is safe. An invalid source is stored as a draft (`valid=False`) that can never be
    activated: the admin keeps the operator's work; the API refuses drafts before calling this.
    """
    source = check_source(source)
    digest = source_sha256(source)
    result = validate_for_tenant(tenant=tenant, source=source)
    for _attempt in range(3):
        try:
            with transaction.atomic():
                # Lock the tenant row so concurrent publishes number versions one after another.
                Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
                existing = ScriptVersion.objects.filter(tenant=tenant, sha256=digest).first()
                if existing is not None:
                    return existing, False
                last = ScriptVersion.objects.filter(tenant=tenant).aggregate(n=Max("number"))["n"]
                version = ScriptVersion.objects.create(
                    tenant=tenant,
                    number=(last or 0) + 1,
                    source=source,
                    sha256=digest,
                    message=(message or "")[:MAX_MESSAGE_LENGTH],
                    author=actor.name[:200],
                    valid=result.valid,
                    errors=[d.to_dict() for d in result.errors],
                    warnings=[d.to_dict() for d in result.warnings],
                    routes=[r.to_dict() for r in result.routes],
                    tests=list(tests),
                )
                record(actor=actor, action="script.publish", obj=version, tenant=tenant,
                       detail={"version": version.number, "sha256": digest,
                               "valid": result.valid, "message": version.message})
                return version, True
        except IntegrityError:
            continue  # another publish took the number: read again and retry
    raise Conflict("Could not number the new version: too many concurrent publishes; retry.")


def get_version(*, tenant: Tenant, number: int) -> ScriptVersion:
    version = ScriptVersion.objects.filter(tenant=tenant, number=number).first()
    if version is None:
        raise NotFound(f"Tenant {tenant.slug!r} has no script version {number}.")
    return version


def activate_version(*, actor: Actor, tenant: Tenant, version: ScriptVersion) -> Tenant:
    """Point the tenant at `version`. Rolling back is activating an older version."""
    if version.tenant_id != tenant.pk:
        raise NotFound(f"Tenant {tenant.slug!r} has no script version {version.number}.")
    if ScriptFault.objects.filter(version=version).exists():
        raise Conflict(
            f"Version {version.number} blocked a gateway worker and was disabled; "
            "publish a fixed version instead.",
        )
    if not version.valid:
        raise Conflict(
            f"Version {version.number} is a draft with errors and cannot be activated; "
            "fix the script and publish a new version.",
            detail={"errors": version.errors},
        )
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        previous = locked.active_version
        if locked.active_version_id == version.pk:
            return locked
        locked.active_version = version
        locked.config_version += 1
        locked.save(update_fields=["active_version", "config_version", "updated_at"])
        action = (
            "script.rollback"
            if previous is not None and previous.number > version.number
            else "script.activate"
        )
        record(actor=actor, action=action, obj=version, tenant=locked,
               detail={"version": version.number,
                       "previous": previous.number if previous else None})
        config_changed([locked.slug])
    tenant.active_version = locked.active_version
    tenant.config_version = locked.config_version
    return locked


def deactivate_script(*, actor: Actor, tenant: Tenant) -> Tenant:
    """Remove the active script: the tenant then proxies to its enabled backends."""
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        if locked.active_version_id is None:
            return locked
        previous = locked.active_version
        locked.active_version = None
        locked.config_version += 1
        locked.save(update_fields=["active_version", "config_version", "updated_at"])
        record(actor=actor, action="script.deactivate", obj=locked, tenant=locked,
               detail={"previous": previous.number if previous else None})
        config_changed([locked.slug])
    return locked


def mark_version_faulty(*, actor: Actor, version_id: int, reason: str) -> ScriptFault | None:
    """Record that a version blocked a worker; every gateway process stops running it.

    The tenant then answers 503 with a message naming the version until an operator
    activates another one (activation of a faulty version is refused).
    """
    with transaction.atomic():
        version = ScriptVersion.objects.select_related("tenant").filter(pk=version_id).first()
        if version is None:
            return None
        fault, created = ScriptFault.objects.get_or_create(
            version=version, defaults={"reason": reason[:500]})
        if created:
            record(actor=actor, action="script.fault", obj=version, tenant=version.tenant,
                   detail={"version": version.number, "reason": fault.reason})
            config_changed([version.tenant.slug])
    return fault
