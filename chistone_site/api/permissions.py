"""Scopes and tenant scoping, in one place.

Each view names the scopes a request needs (`required_scopes`: method -> scopes, or a
`get_required_scopes(request)` hook for bodies that decide, such as publish with
`activate: true`). Tenant scoping is a queryset: a key for tenant A never finds tenant B,
so B answers 404 exactly as a tenant that does not exist.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import QuerySet
from rest_framework import exceptions, permissions

from chistone_site.api.authentication import Principal, principal_of
from chistone_site.api.models import SCOPE_READ, SCOPE_WRITE
from tenants.models import Tenant

DEFAULT_SCOPES = {
    "GET": {SCOPE_READ}, "HEAD": {SCOPE_READ}, "OPTIONS": {SCOPE_READ},
    "POST": {SCOPE_WRITE}, "PUT": {SCOPE_WRITE}, "PATCH": {SCOPE_WRITE},
    "DELETE": {SCOPE_WRITE},
}


def require_scopes(principal: Principal | None, scopes: Iterable[str]) -> None:
    if principal is None:
        raise exceptions.NotAuthenticated()
    missing = sorted(set(scopes) - principal.scopes)
    if missing:
        raise exceptions.PermissionDenied(
            f"This key lacks the {', '.join(missing)} scope{'s' if len(missing) > 1 else ''}.")


def scoped_tenants(principal: Principal | None) -> QuerySet[Tenant]:
    if principal is None:
        return Tenant.objects.none()
    if principal.all_tenants:
        return Tenant.objects.all()
    return Tenant.objects.filter(pk__in=principal.tenant_ids)


class HasScopes(permissions.BasePermission):
    """The principal holds every scope the view asks for this request."""

    def has_permission(self, request, view) -> bool:
        principal = principal_of(request)
        if principal is None:
            # Not authenticated (or a non-staff session): DRF answers 401 with WWW-Authenticate.
            raise exceptions.NotAuthenticated()
        hook = getattr(view, "get_required_scopes", None)
        if hook is not None:
            scopes = hook(request)
        else:
            scopes = getattr(view, "required_scopes", DEFAULT_SCOPES).get(request.method, set())
        require_scopes(principal, scopes)
        return True


class CanCreateTenants(permissions.BasePermission):
    """Only an all-tenants key (or staff) may create a tenant: a scoped key could not see it."""

    message = "Only a key for all tenants may create tenants."

    def has_permission(self, request, view) -> bool:
        if request.method != "POST":
            return True
        principal = principal_of(request)
        return principal is not None and principal.all_tenants
