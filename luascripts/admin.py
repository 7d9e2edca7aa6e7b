"""Admin for route scripts: the script pages (luascripts.admin_views) and a read-only list.

A stored version never changes, so the model admin itself adds, changes and deletes nothing:
saving in the editor publishes a new version through luascripts.services.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import F
from django.http import HttpResponseRedirect
from django.utils.html import format_html

from luascripts.admin_views import ScriptPagesMixin
from luascripts.models import ScriptVersion
from tenants.admin_scoping import ScopedRelatedFieldListFilter, TenantScopedAdminMixin


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "active"), ("valid", "valid, not active"), ("draft", "draft")]

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(tenant__active_version=F("pk"))
        if self.value() == "valid":
            return queryset.filter(valid=True).exclude(tenant__active_version=F("pk"))
        if self.value() == "draft":
            return queryset.filter(valid=False)
        return queryset


@admin.register(ScriptVersion)
class ScriptVersionAdmin(ScriptPagesMixin, TenantScopedAdminMixin, admin.ModelAdmin):
    list_display = ("version_link", "tenant_link", "status_label", "author", "created_at",
                    "message", "short_sha")
    list_filter = (StatusFilter, ("tenant", ScopedRelatedFieldListFilter))
    search_fields = ("tenant__slug", "message", "sha256", "author")
    list_select_related = ("tenant",)
    list_display_links = None
    tenant_path = "tenant"

    def has_add_permission(self, request):
        return False  # publishing happens on a tenant's script page

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        version = self.get_object(request, object_id)  # 404 outside the user's tenants
        return HttpResponseRedirect(self.page_url("version", version.tenant, version.number))

    @admin.display(description="version", ordering="number")
    def version_link(self, obj: ScriptVersion) -> str:
        return format_html('<a href="{}">v{}</a>',
                           self.page_url("version", obj.tenant, obj.number), obj.number)

    @admin.display(description="tenant", ordering="tenant__slug")
    def tenant_link(self, obj: ScriptVersion) -> str:
        return format_html('<a href="{}">{}</a>', self.page_url("script", obj.tenant),
                           obj.tenant.slug)

    @admin.display(description="status")
    def status_label(self, obj: ScriptVersion) -> str:
        return obj.status

    @admin.display(description="sha256")
    def short_sha(self, obj: ScriptVersion) -> str:
        return format_html('<code title="{}">{}</code>', obj.sha256, obj.sha256[:12])
