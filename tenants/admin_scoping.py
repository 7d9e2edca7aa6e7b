"""Multi-tenant scoping for the admin, in one place.

A superuser sees every tenant. Any other staff account sees the tenants its OperatorAccess
lists, and nothing without one. Everything the admin shows goes through `visible_tenants()`:
changelist and change-page querysets (so raw-id popups and autocomplete answers too, which
Django builds from the target admin's queryset), foreign-key and many-to-many choices, and
list filters. An object outside the scope answers 404, exactly like one that does not exist.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import Http404

from tenants.models import Tenant


def sees_all_tenants(user) -> bool:
    return bool(user.is_active and user.is_superuser)


def visible_tenants(user) -> QuerySet[Tenant]:
    """The tenants `user` may see in the admin (and so change, given model permissions)."""
    if sees_all_tenants(user):
        return Tenant.objects.all()
    if not (user.is_active and user.is_staff):
        return Tenant.objects.none()
    return Tenant.objects.filter(operators__user=user)


def get_visible_tenant_or_404(user, **lookup) -> Tenant:
    tenant = visible_tenants(user).filter(**lookup).first()
    if tenant is None:
        raise Http404("No such tenant.")
    return tenant


def scope_queryset(queryset: QuerySet, user, tenant_path: str) -> QuerySet:
    """Filter `queryset` to rows whose tenant (reached by `tenant_path`) `user` may see."""
    if sees_all_tenants(user):
        return queryset
    if tenant_path:
        return queryset.filter(**{f"{tenant_path}__in": visible_tenants(user)})
    return queryset.filter(pk__in=visible_tenants(user))


class ScopedRelatedFieldListFilter(admin.RelatedFieldListFilter):
    """A related-object list filter offering only the tenants the user may see."""

    def field_choices(self, field, request, model_admin):
        ordering = self.field_admin_ordering(field, request, model_admin)
        if field.related_model is Tenant and not sees_all_tenants(request.user):
            return field.get_choices(
                include_blank=False,
                ordering=ordering,
                limit_choices_to={"pk__in": visible_tenants(request.user)},
            )
        return super().field_choices(field, request, model_admin)


class TenantScopedAdminMixin:
    """Scope a ModelAdmin (or inline) to the tenants the requesting user may see.

    `tenant_path` is the lookup from the model to its Tenant ("tenant"), or "" for Tenant
    itself. Choices of any foreign key or many-to-many to Tenant are scoped too.
    """

    tenant_path = "tenant"

    def get_queryset(self, request):
        return scope_queryset(super().get_queryset(request), request.user, self.tenant_path)

    def get_object(self, request, object_id, from_field=None):
        # Out of scope and missing look the same: a 404, not the admin's redirect with a hint.
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404("No such object.")
        return obj

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.related_model is Tenant:
            kwargs["queryset"] = visible_tenants(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.related_model is Tenant:
            kwargs["queryset"] = visible_tenants(request.user)
        return super().formfield_for_manytomany(db_field, request, **kwargs)
