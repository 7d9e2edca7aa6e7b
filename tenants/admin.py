"""Admin registration for tenants, backends, host claims and the audit log.

Every write is delegated to tenants.services so the admin, the API and commands behave alike.
"""

from __future__ import annotations

from django.contrib import admin, messages

from tenants import services
from tenants.audit import Actor
from tenants.errors import ServiceError
from tenants.models import AuditEvent, Backend, ConfigState, HostClaim, Tenant

BACKEND_FIELDS = list(services.BACKEND_FIELDS)


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "path_prefix", "active", "active_version", "updated_at")
    list_filter = ("active",)
    search_fields = ("slug", "name", "path_prefix")
    fields = ("slug", "name", "domains", "path_prefix", "active", "active_version")
    readonly_fields = ("active_version",)

    def save_model(self, request, obj, form, change):
        actor = Actor.for_user(request.user)
        values = {f: form.cleaned_data[f] for f in ("slug", "name", "domains", "path_prefix",
                                                     "active")}
        try:
            if change:
                saved = services.update_tenant(actor=actor, tenant=Tenant.objects.get(pk=obj.pk),
                                               **values)
            else:
                saved = services.create_tenant(actor=actor, **values)
        except ServiceError as exc:
            self.message_user(request, exc.message, level=messages.ERROR)
            raise
        obj.pk = saved.pk
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        services.delete_tenant(actor=Actor.for_user(request.user), tenant=obj)


@admin.register(Backend)
class BackendAdmin(admin.ModelAdmin):
    list_display = ("tenant", "name", "url", "weight", "enabled")
    list_filter = ("enabled", "tenant")
    search_fields = ("name", "url", "tenant__slug")
    fields = ["tenant", *BACKEND_FIELDS]

    def save_model(self, request, obj, form, change):
        actor = Actor.for_user(request.user)
        values = {f: form.cleaned_data[f] for f in BACKEND_FIELDS}
        if change:
            saved = services.update_backend(actor=actor, backend=Backend.objects.get(pk=obj.pk),
                                            **values)
        else:
            saved = services.create_backend(actor=actor, tenant=form.cleaned_data["tenant"],
                                            **values)
        obj.pk = saved.pk
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        services.delete_backend(actor=Actor.for_user(request.user), backend=obj)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(HostClaim)
class HostClaimAdmin(ReadOnlyAdmin):
    list_display = ("host", "path_prefix", "tenant")
    search_fields = ("host", "path_prefix", "tenant__slug")


@admin.register(ConfigState)
class ConfigStateAdmin(ReadOnlyAdmin):
    list_display = ("generation", "updated_at")


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor", "action", "object_repr", "tenant_slug")
    list_filter = ("action", "tenant_slug")
    search_fields = ("actor", "object_repr", "tenant_slug")
