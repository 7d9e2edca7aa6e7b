"""Write services for tenants and backends.

Each function takes keyword arguments only, runs in one transaction, writes its audit row and
bumps the configuration generation inside it; listeners hear about the change after commit.
Admin, REST API and management commands all call these.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from tenants import validators
from tenants.audit import Actor, record
from tenants.errors import Conflict, InvalidInput
from tenants.events import config_changed
from tenants.models import LIMIT_FIELDS, Backend, HostClaim, Tenant

TENANT_FIELDS = ("slug", "name", "domains", "path_prefix", "active", "max_request_body_bytes",
                 "max_response_body_bytes")
BACKEND_FIELDS = (
    "name",
    "url",
    "weight",
    "enabled",
    "health_check_path",
    "connect_timeout_ms",
    "read_timeout_ms",
)


def _invalid(errors: dict[str, list[str]]) -> InvalidInput:
    first = next(iter(errors.items()))
    return InvalidInput(f"{first[0]}: {first[1][0]}", detail=errors)


def _clean_tenant_fields(values: dict[str, Any]) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, Any] = {}
    cleaners = {
        "slug": validators.validate_slug,
        "domains": validators.normalise_domains,
        "path_prefix": validators.normalise_path_prefix,
    }
    for field, value in values.items():
        try:
            if field in cleaners:
                cleaned[field] = cleaners[field](value)
            elif field == "name":
                if not isinstance(value, str) or not value.strip():
                    raise ValidationError("A tenant needs a name.")
                cleaned[field] = value.strip()[:200]
            elif field == "active":
                if not isinstance(value, bool):
                    raise ValidationError("active must be true or false.")
                cleaned[field] = value
            elif field in LIMIT_FIELDS:
                cleaned[field] = validators.body_limit(value)
            else:
                raise ValidationError(f"Unknown tenant field {field!r}.")
        except ValidationError as exc:
            errors.setdefault(field, []).extend(exc.messages)
    if errors:
        raise _invalid(errors)
    return cleaned


def claim_label(host: str, path_prefix: str) -> str:
    """"host 'api.example.com' with prefix '/'", as the messages about claims say it."""
    where = f"host {host!r}" if host else "any host"
    return f"{where} with prefix {path_prefix or '/'!r}"


def find_claim_clashes(*, domains: list[str], path_prefix: str,
                       tenant: Tenant | None = None) -> list[HostClaim]:
    """The claims of other tenants that (domains, path_prefix) would collide with."""
    hosts = domains or [""]
    clashes = HostClaim.objects.filter(host__in=hosts, path_prefix=path_prefix)
    if tenant is not None and tenant.pk is not None:
        clashes = clashes.exclude(tenant=tenant)
    return list(clashes.select_related("tenant").order_by("host"))


def _sync_claims(tenant: Tenant) -> None:
    """Rewrite the tenant's host claims; the unique constraint catches a collision."""
    if not tenant.domains and not tenant.path_prefix:
        raise InvalidInput(
            "A tenant needs at least one domain or a path prefix, or it could never be reached.",
            detail={"domains": ["Give a domain or a path prefix."]},
        )
    HostClaim.objects.filter(tenant=tenant).delete()
    hosts = tenant.domains or [""]
    for host in hosts:
        clash = (
            HostClaim.objects.filter(host=host, path_prefix=tenant.path_prefix)
            .select_related("tenant")
            .first()
        )
        if clash is not None:
            # The other tenant is not named: the caller may be an operator who cannot see it.
            raise Conflict(
                f"Another tenant already answers for {claim_label(host, tenant.path_prefix)}.",
                detail={"domains" if host else "path_prefix": ["Already claimed."]},
            )
        HostClaim.objects.create(tenant=tenant, host=host, path_prefix=tenant.path_prefix)


def create_tenant(
    *,
    actor: Actor,
    slug: str,
    name: str,
    domains: list[str] | tuple[str, ...] = (),
    path_prefix: str = "",
    active: bool = True,
    max_request_body_bytes: int | None = None,
    max_response_body_bytes: int | None = None,
) -> Tenant:
    fields = _clean_tenant_fields(
        {"slug": slug, "name": name, "domains": list(domains), "path_prefix": path_prefix,
         "active": active, "max_request_body_bytes": max_request_body_bytes,
         "max_response_body_bytes": max_response_body_bytes}
    )
    try:
        with transaction.atomic():
            if Tenant.objects.filter(slug=fields["slug"]).exists():
                raise Conflict(f"A tenant with slug {fields['slug']!r} already exists.",
                               detail={"slug": ["Already taken."]})
            tenant = Tenant.objects.create(**fields)
            _sync_claims(tenant)
            record(actor=actor, action="tenant.create", obj=tenant, tenant=tenant,
                   detail={k: fields[k] for k in TENANT_FIELDS})
            config_changed([tenant.slug])
    except IntegrityError as exc:
        raise Conflict(f"Tenant {slug!r} conflicts with an existing tenant: {exc}") from exc
    return tenant


def update_tenant(*, actor: Actor, tenant: Tenant, **changes: Any) -> Tenant:
    fields = _clean_tenant_fields(changes)
    try:
        with transaction.atomic():
            locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
            old_slug = locked.slug
            before = {k: getattr(locked, k) for k in fields}
            diff = {k: [before[k], v] for k, v in fields.items() if before[k] != v}
            if not diff:
                return locked
            if "slug" in diff and Tenant.objects.filter(slug=fields["slug"]).exclude(
                pk=locked.pk
            ).exists():
                raise Conflict(f"A tenant with slug {fields['slug']!r} already exists.",
                               detail={"slug": ["Already taken."]})
            for key, value in fields.items():
                setattr(locked, key, value)
            locked.config_version += 1
            locked.save()
            if "domains" in diff or "path_prefix" in diff:
                _sync_claims(locked)
            record(actor=actor, action="tenant.update", obj=locked, tenant=locked,
                   detail={"changes": diff})
            config_changed({old_slug, locked.slug})
    except IntegrityError as exc:
        raise Conflict(f"Tenant change conflicts with an existing tenant: {exc}") from exc
    return locked


def delete_tenant(*, actor: Actor, tenant: Tenant) -> None:
    with transaction.atomic():
        slug = tenant.slug
        record(actor=actor, action="tenant.delete", obj=tenant, tenant=tenant,
               detail={"slug": slug, "name": tenant.name})
        # Versions point at the tenant and the tenant at its active version (PROTECT).
        Tenant.objects.filter(pk=tenant.pk).update(active_version=None)
        tenant.delete()
        config_changed([slug])


def _clean_backend_fields(values: dict[str, Any]) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, Any] = {}
    for field, value in values.items():
        try:
            if field == "name":
                cleaned[field] = validators.validate_backend_name(value)
            elif field == "url":
                cleaned[field] = validators.normalise_backend_url(value)
            elif field == "health_check_path":
                cleaned[field] = validators.validate_health_path(value)
            elif field == "enabled":
                if not isinstance(value, bool):
                    raise ValidationError("enabled must be true or false.")
                cleaned[field] = value
            elif field in ("weight", "connect_timeout_ms", "read_timeout_ms"):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValidationError(f"{field} must be a whole number.")
                low = 0 if field == "weight" else 1
                high = 1000 if field == "weight" else 600_000
                if not low <= value <= high:
                    raise ValidationError(f"{field} must be between {low} and {high}.")
                cleaned[field] = value
            else:
                raise ValidationError(f"Unknown backend field {field!r}.")
        except ValidationError as exc:
            errors.setdefault(field, []).extend(exc.messages)
    if errors:
        raise _invalid(errors)
    return cleaned


def _touch_tenant(tenant: Tenant) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(config_version=tenant.config_version + 1)
    tenant.config_version += 1


def create_backend(*, actor: Actor, tenant: Tenant, name: str, url: str, **options: Any) -> Backend:
    fields = _clean_backend_fields({"name": name, "url": url, **options})
    try:
        with transaction.atomic():
            if Backend.objects.filter(tenant=tenant, name=fields["name"]).exists():
                raise Conflict(f"Tenant {tenant.slug!r} already has a backend named "
                               f"{fields['name']!r}.", detail={"name": ["Already taken."]})
            backend = Backend.objects.create(tenant=tenant, **fields)
            _touch_tenant(tenant)
            record(actor=actor, action="backend.create", obj=backend, tenant=tenant,
                   detail={k: getattr(backend, k) for k in BACKEND_FIELDS})
            config_changed([tenant.slug])
    except IntegrityError as exc:
        raise Conflict(f"Backend {name!r} conflicts with an existing backend: {exc}") from exc
    return backend


def update_backend(*, actor: Actor, backend: Backend, **changes: Any) -> Backend:
    fields = _clean_backend_fields(changes)
    try:
        with transaction.atomic():
            locked = Backend.objects.select_for_update().select_related("tenant").get(pk=backend.pk)
            diff = {k: [getattr(locked, k), v] for k, v in fields.items()
                    if getattr(locked, k) != v}
            if not diff:
                return locked
            if "name" in diff and Backend.objects.filter(
                tenant_id=locked.tenant_id, name=fields["name"]
            ).exists():
                raise Conflict(f"Tenant {locked.tenant.slug!r} already has a backend named "
                               f"{fields['name']!r}.", detail={"name": ["Already taken."]})
            for key, value in fields.items():
                setattr(locked, key, value)
            locked.save()
            _touch_tenant(locked.tenant)
            record(actor=actor, action="backend.update", obj=locked, tenant=locked.tenant,
                   detail={"changes": diff})
            config_changed([locked.tenant.slug])
    except IntegrityError as exc:
        raise Conflict(f"Backend change conflicts with an existing backend: {exc}") from exc
    return locked


def delete_backend(*, actor: Actor, backend: Backend) -> None:
    with transaction.atomic():
        tenant = backend.tenant
        record(actor=actor, action="backend.delete", obj=backend, tenant=tenant,
               detail={"name": backend.name, "url": backend.url})
        backend.delete()
        _touch_tenant(tenant)
        config_changed([tenant.slug])
